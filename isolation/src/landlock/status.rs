//! How much of a Landlock plan the kernel enforces: plain data, shared by the ruleset logic,
//! its report line and its error.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How much of the plan the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Every requested right is enforced.
    Full,
    /// Some rights (newer than the kernel's ABI) are not enforced.
    Partial,
    /// Nothing is enforced (no Landlock in this kernel).
    None,
}

/// Result of [`super::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockStatus {
    /// Full, partial or none.
    pub enforcement: Enforcement,
    /// The kernel's Landlock ABI (0: unsupported or disabled).
    pub kernel_abi: i32,
    /// The plan's target ABI.
    pub target_abi: u8,
    /// Plan paths that did not exist and were skipped (optional [`super::SYSTEM_READ_EXEC`] entries,
    /// like `/lib32` on most machines, are not listed).
    pub skipped: Vec<PathBuf>,
}

impl fmt::Display for LandlockStatus {
    /// E.g. `partially enforced (kernel ABI 4, target ABI 6); skipped missing /srv/app`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.enforcement {
            Enforcement::Full => "fully",
            Enforcement::Partial => "partially",
            Enforcement::None => "not",
        };
        write!(
            f,
            "{how} enforced (kernel ABI {}, target ABI {})",
            self.kernel_abi, self.target_abi
        )?;
        if !self.skipped.is_empty() {
            let s: Vec<String> = self
                .skipped
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            write!(f, "; skipped missing {}", s.join(" "))?;
        }
        Ok(())
    }
}
