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

/// A new version to reload into a running sandbox (on the wire, as a batch's source, the
/// same shape as `control::ReloadWire`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
        #[serde(default)]
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
    /// Environment variables of the app process and its workers (`--env K=V`); nothing of
    /// the host's environment is passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// Config bytes handed to the app through the ABI at load (`--config FILE`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::tenant::b64_opt"
    )]
    pub config: Option<Vec<u8>>,
    /// Read-only data files in the sandbox's root (`--file SRC:DST`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<crate::tenant::DataFile>,
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
            env: Vec::new(),
            config: None,
            files: Vec::new(),
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

/// The smallest `--max-memory` a sandbox can be set up under: below it the runner cannot
/// even finish its isolation setup (it exits 119). A real app needs more (the demo app
/// about 4 MiB); between the two the sandbox is killed by its limit, and says so.
pub const MIN_MEMORY: u64 = 1 << 20;

/// The smallest `--max-processes` a sandbox starts with: the runner, the app process and
/// their threads (fewer and the runner exits 101 during start).
pub const MIN_PROCESSES: u64 = 4;

/// Renders a byte count in binary units: `1 MiB`, `1.5 GiB`, `512 KiB`, `10 bytes`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How to get a limit enforced when no cgroup does.
pub const ENFORCE_FIX: &str =
    "run as root, or pass a delegated cgroup v2 subtree with --cgroup-parent";

/// A limit no sandbox can start under.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    /// `--max-memory` below [`MIN_MEMORY`].
    #[error(
        "--max-memory {} is below the floor of {}: the sandbox cannot start under it",
        format_bytes(*.0),
        format_bytes(MIN_MEMORY)
    )]
    MemoryBelowFloor(u64),
    /// `--max-processes` below [`MIN_PROCESSES`].
    #[error(
        "--max-processes {0} is below the floor of {MIN_PROCESSES}: the runner, the app process \
         and their threads need at least that many"
    )]
    ProcessesBelowFloor(u64),
    /// `--cpu` that is not a positive, finite fraction of a core.
    #[error("--cpu {0} is not a positive fraction of a core (0.5 = half a core)")]
    CpuNotPositive(f64),
    /// An rlimit above what the host may give (its own hard limit): refused rather than
    /// lowered in silence.
    #[error(
        "{flag} {asked} is above the host's hard limit {hard} (RLIMIT_{resource}): ask for \
         at most {hard}, or raise the daemon's hard limit (`ulimit -Hn`, `LimitNOFILE=` and \
         the like in its unit)"
    )]
    AboveHardLimit {
        /// The flag (`--max-open-files`).
        flag: &'static str,
        /// The rlimit (`NOFILE`).
        resource: String,
        /// What was asked.
        asked: u64,
        /// The host's hard limit.
        hard: u64,
    },
}

/// Refuses limits no sandbox can start under, naming the floor: memory below
/// [`MIN_MEMORY`], processes below [`MIN_PROCESSES`], a CPU fraction that is not a positive
/// number.
pub fn check_limits(limits: &Limits) -> Result<(), LimitError> {
    if let Some(bytes) = limits.max_memory
        && bytes < MIN_MEMORY
    {
        return Err(LimitError::MemoryBelowFloor(bytes));
    }
    if let Some(n) = limits.max_processes
        && n < MIN_PROCESSES
    {
        return Err(LimitError::ProcessesBelowFloor(n));
    }
    if let Some(cpu) = limits.cpu
        && !(cpu.is_finite() && cpu > 0.0)
    {
        return Err(LimitError::CpuNotPositive(cpu));
    }
    Ok(())
}

#[cfg(test)]
mod floor_tests {
    use super::*;

    #[test]
    fn limits_below_the_floor_are_refused_with_the_floor_named() {
        let limits = |f: fn(&mut Limits)| {
            let mut l = Limits::default();
            f(&mut l);
            check_limits(&l).map_err(|e| e.to_string())
        };
        assert_eq!(limits(|_| {}), Ok(()));
        let e = limits(|l| l.max_memory = Some(10)).unwrap_err();
        assert!(
            e.contains("--max-memory 10 bytes is below the floor of 1 MiB"),
            "{e}"
        );
        assert_eq!(limits(|l| l.max_memory = Some(1 << 20)), Ok(()));
        let e = limits(|l| l.max_processes = Some(1)).unwrap_err();
        assert!(
            e.contains("--max-processes 1 is below the floor of 4"),
            "{e}"
        );
        assert!(
            limits(|l| l.cpu = Some(0.0))
                .unwrap_err()
                .contains("--cpu 0")
        );
        assert!(limits(|l| l.cpu = Some(f64::NAN)).is_err());
        assert!(limits(|l| l.cpu = Some(-1.0)).is_err());
        assert_eq!(limits(|l| l.cpu = Some(0.5)), Ok(()));
        assert_eq!(format_bytes(1536 << 20), "1.5 GiB");
        assert_eq!(format_bytes(512 << 10), "512 KiB");
    }
}
