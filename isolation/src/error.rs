//! The crate's top-level error type.
//!
//! Each kernel-concept module owns its error type in a leaf module of its own
//! (`cgroups/error.rs`, `seccomp/error.rs`, `landlock/error.rs`, ...), which imports nothing of
//! the crate but other leaves. This module wraps them, so every other module may import it
//! without an import circle.

use crate::cgroups::error::CgroupError;
use crate::landlock::error::LandlockError;
use crate::mechanism::Mechanism;
use crate::namespaces::error::NamespaceError;
use crate::root::error::RootError;
use crate::seccomp::error::SeccompError;

/// Everything that can go wrong in this crate, outside the async-signal-safe child code (which
/// returns a bare [`nix::errno::Errno`] or a [`crate::namespaces::ChildError`]).
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// `Strict` level and a mechanism could not be applied.
    #[error("strict isolation: {mechanism} is not available: {detail}")]
    Missing {
        /// The mechanism that is missing.
        mechanism: Mechanism,
        /// Why it is missing.
        detail: String,
    },
    /// Not `none`, `standard` or `strict`.
    #[error("invalid isolation level {0:?} (expected none, standard or strict)")]
    InvalidLevel(String),
    /// Not a size like `512K`, `256M`, `1G`.
    #[error("invalid size {0:?} (expected bytes or a number with K, M, G or T)")]
    InvalidSize(String),
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Compiling, decoding or installing the seccomp filter failed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Landlock failed.
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    /// Preparing the sandbox's own root failed.
    #[error(transparent)]
    Root(#[from] RootError),
    /// Preparing or finishing a sandbox child's namespaces failed.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
}
