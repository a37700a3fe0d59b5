//! The Landlock module's error type. A leaf (with [`super::status`]), so the crate error
//! ([`crate::error`]) can wrap it without importing the ruleset logic.

use ::landlock::RulesetError;

use super::status::LandlockStatus;

/// Landlock failed.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// Building or enforcing the ruleset failed.
    #[error("landlock: {0}")]
    Ruleset(#[from] RulesetError),
    /// `target_abi` is not one this crate knows.
    #[error("landlock: unknown target ABI {0}")]
    UnknownAbi(u8),
    /// `Strict` and the ruleset is not fully enforced.
    #[error("landlock: {0}")]
    NotFullyEnforced(LandlockStatus),
}
