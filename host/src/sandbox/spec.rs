//! What a sandbox is made of: the app to load and the limits to enforce.

use std::path::PathBuf;

pub use isolation::{Level, Limits};
use serde::{Deserialize, Serialize};

/// Where the app comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppSource {
    /// A cargo crate directory, built into the shared target directory at create time.
    Crate(PathBuf),
    /// A prebuilt `.so`.
    Library(PathBuf),
}

/// A new version to reload into a running sandbox.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadSource {
    /// A prebuilt `.so`.
    Library(PathBuf),
    /// A crate directory to build.
    Crate(PathBuf),
    /// Replacement text for `src/lib.rs` of the sandbox's crate (or the given crate),
    /// built in a temporary copy.
    Source {
        /// New contents of `src/lib.rs`.
        lib_rs: String,
        /// The crate to copy; defaults to the crate the sandbox was created from.
        crate_dir: Option<PathBuf>,
    },
}

/// Everything needed to create a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The app.
    pub app: AppSource,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// How much isolation to apply (`standard` by default).
    #[serde(default)]
    pub isolation: Level,
    /// Keep the host's network (no empty network namespace).
    #[serde(default)]
    pub network: bool,
    /// Create the sandbox's cgroup under this directory instead of the host's own cgroup.
    #[serde(default)]
    pub cgroup_parent: Option<PathBuf>,
    /// The uid the app runs as when the host is root (default: one of the manager's own).
    #[serde(default)]
    pub uid: Option<u32>,
    /// The gid the app runs as when the host is root (default: the uid's number).
    #[serde(default)]
    pub gid: Option<u32>,
}

impl SandboxSpec {
    /// A spec for `app` with default limits and `standard` isolation.
    pub fn new(app: AppSource) -> SandboxSpec {
        SandboxSpec {
            app,
            limits: Limits::default(),
            isolation: Level::default(),
            network: false,
            cgroup_parent: None,
            uid: None,
            gid: None,
        }
    }

    /// The same spec with another isolation level.
    pub fn with_isolation(mut self, level: Level) -> SandboxSpec {
        self.isolation = level;
        self
    }
}

/// Checks an id against `[A-Za-z0-9_-]{1,64}`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("demo-1"));
        assert!(valid_id(&"a".repeat(64)));
        assert!(!valid_id(""));
        assert!(!valid_id(&"a".repeat(65)));
        assert!(!valid_id("../etc"));
        assert!(!valid_id("a b"));
    }
}
