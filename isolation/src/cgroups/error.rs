//! The cgroup module's error type. A leaf: it names paths and OS errors only, so the crate
//! error ([`crate::error`]) can wrap it without importing the cgroup logic.

use std::io;
use std::path::PathBuf;

/// A cgroup operation failed; every variant names the path and the cause.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Writing a control file failed.
    #[error("write {value} to {path}: {source}")]
    Write {
        /// What was written.
        value: String,
        /// The control file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Reading a control file failed.
    #[error("read {path}: {source}")]
    Read {
        /// The control file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Opening a control file failed.
    #[error("open {path}: {source}")]
    Open {
        /// The control file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Creating a cgroup directory failed.
    #[error("create cgroup {path}: {source}")]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A sandbox cgroup directory is left from an earlier host and cannot be removed (it still
    /// holds processes or child cgroups).
    #[error("create cgroup {path}: exists and cannot be removed: {source}")]
    Leftover {
        /// The directory.
        path: PathBuf,
        /// Why `rmdir` failed.
        source: io::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("remove cgroup {path}: {source}")]
    Rmdir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A control file had unexpected content.
    #[error("parse {path}: unexpected content {content:?}")]
    Parse {
        /// The control file.
        path: PathBuf,
        /// What it contained.
        content: String,
    },
    /// Processes were still alive after repeated SIGKILL rounds.
    #[error("{path} still holds processes {pids:?} after {rounds} kill rounds")]
    NotEmpty {
        /// The cgroup.
        path: PathBuf,
        /// Survivors.
        pids: Vec<i32>,
        /// How many rounds were tried.
        rounds: u32,
    },
    /// The v2 subtree is not writable by this user.
    #[error(
        "cgroup v2 subtree {path} is not delegated to uid {uid}: {source} (run the host in a \
         delegated unit, e.g. `systemd-run --user --scope -p Delegate=yes`, or pass a writable \
         --cgroup-parent)"
    )]
    NotDelegated {
        /// The subtree.
        path: PathBuf,
        /// Effective uid of the host.
        uid: u32,
        /// The operation that was refused.
        source: Box<CgroupError>,
    },
    /// cgroup v1 directories are not writable by this user.
    #[error(
        "no permission to create a cgroup at {path} as uid {uid}: {source} (cgroup v1 needs \
         root or a hierarchy chowned to this user)"
    )]
    NotPermitted {
        /// The directory.
        path: PathBuf,
        /// Effective uid of the host.
        uid: u32,
        /// The OS error.
        source: io::Error,
    },
    /// No usable cgroup hierarchy on this machine.
    #[error("cgroups unavailable: {0}")]
    Unavailable(#[from] Unavailable),
    /// The sandbox id cannot be used in a cgroup name.
    #[error("invalid sandbox id {0:?} (1 to 64 of [A-Za-z0-9_.-], not starting with '.')")]
    InvalidId(String),
}

/// Why no cgroup hierarchy can be used.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// Nothing is mounted at the cgroup root.
    #[error("{root} is not mounted")]
    NotMounted {
        /// The cgroup root, [`super::CGROUP_ROOT`].
        root: PathBuf,
    },
    /// The cgroup root is neither cgroup2 nor holds a v1 hierarchy this crate uses.
    #[error("{root} is not cgroup2 and no v1 memory/pids/cpu hierarchy is mounted")]
    NoHierarchy {
        /// The cgroup root, [`super::CGROUP_ROOT`].
        root: PathBuf,
    },
    /// Every v1 hierarchy failed (or none is mounted).
    #[error("no usable v1 hierarchy: {}", list_or_none(unusable))]
    NoUsableV1 {
        /// Each hierarchy and why it cannot be used.
        unusable: Vec<UnusableHierarchy>,
    },
    /// `/proc/self/cgroup` has no v2 line.
    #[error("no `0::` line in /proc/self/cgroup")]
    NoUnifiedLine,
    /// The v2 subtree sandboxes go under cannot be read.
    #[error("cgroup v2 subtree {path}: {source}")]
    Subtree {
        /// The subtree.
        path: PathBuf,
        /// Reading its `cgroup.controllers` failed.
        source: Box<CgroupError>,
    },
}

/// A v1 hierarchy that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", controllers.join(","))]
pub struct UnusableHierarchy {
    /// The hierarchy's controllers (`cpu,cpuacct`).
    pub controllers: Vec<String>,
    /// Creating the parent of sandbox cgroups in it failed.
    pub source: CgroupError,
}

fn list_or_none(unusable: &[UnusableHierarchy]) -> String {
    if unusable.is_empty() {
        return "none mounted".into();
    }
    let each: Vec<String> = unusable.iter().map(ToString::to_string).collect();
    each.join("; ")
}

/// Result alias for cgroup operations.
pub type Result<T, E = CgroupError> = std::result::Result<T, E>;
