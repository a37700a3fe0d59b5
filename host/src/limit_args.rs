//! The limits and isolation flags of a new sandbox (`create`, `demo`, `anomaly`), in a module
//! of their own so that `cli` and `demo` both use them without importing each other.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use sandbox::{AppSource, Level, Limits, SandboxSpec};

/// Limits and isolation of a new sandbox; maps to a [`SandboxSpec`]. Unset limits are
/// unlimited.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Limits and isolation")]
pub struct LimitArgs {
    /// Memory of the whole sandbox (cgroup), bytes; K, M, G, T suffixes (powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Processes and threads of the whole sandbox (cgroup pids.max).
    #[arg(long, value_name = "N")]
    pub max_processes: Option<u64>,
    /// CPU bandwidth as a fraction of one core (0.5 = half a core).
    #[arg(long, value_name = "FRACTION")]
    pub cpu: Option<f64>,
    /// none (process + rlimits), standard (all the kernel offers), strict (fail if anything
    /// is missing).
    #[arg(long, value_name = "LEVEL", default_value = "standard")]
    pub isolation: Level,
    /// Keep the host's network instead of an empty network namespace.
    #[arg(long)]
    pub network: bool,
    /// Address space per process (RLIMIT_AS), bytes; K, M, G, T suffixes (powers of 1024).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub address_space: Option<u64>,
    /// Open files per process (RLIMIT_NOFILE).
    #[arg(long, value_name = "N")]
    pub max_open_files: Option<u64>,
    /// Largest file a process may write (RLIMIT_FSIZE), bytes; K, M, G, T suffixes (powers of 1024).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub max_file_size: Option<u64>,
    /// CPU seconds per process (RLIMIT_CPU).
    #[arg(long, value_name = "SECONDS")]
    pub cpu_seconds: Option<u64>,
    /// Create sandbox cgroups under this directory (a delegated cgroup v2 subtree).
    #[arg(long, value_name = "DIR")]
    pub cgroup_parent: Option<PathBuf>,
    /// Bytes the sandbox may write to /work and /tmp together (default 64M); K, M, G, T
    /// suffixes allowed.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_disk: Option<u64>,
    /// The uid the app runs as when the host is root (default: one of its own per sandbox,
    /// from 1600000000).
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// The gid the app runs as when the host is root (default: the same number as its uid).
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
}

impl From<&LimitArgs> for Limits {
    fn from(args: &LimitArgs) -> Limits {
        Limits {
            max_memory: args.max_memory,
            max_processes: args.max_processes,
            cpu: args.cpu,
            address_space: args.address_space,
            max_open_files: args.max_open_files,
            max_file_size: args.max_file_size,
            cpu_seconds: args.cpu_seconds,
            max_disk: args.max_disk,
        }
    }
}

impl LimitArgs {
    /// The spec of a sandbox running `app` with these limits.
    pub fn spec(&self, app: AppSource) -> SandboxSpec {
        SandboxSpec {
            limits: Limits::from(self),
            isolation: self.isolation,
            network: self.network,
            cgroup_parent: self.cgroup_parent.clone(),
            uid: self.uid,
            gid: self.gid,
            ..SandboxSpec::new(app)
        }
    }
}

/// Parses a byte count with an optional K, M, G or T suffix (powers of 1024).
pub use isolation::parse_size;

/// Limits of the build sandbox that every app build (`create --app`, `reload`, `--watch`,
/// the demo's builds) runs in.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Build limits")]
pub struct BuildArgs {
    /// Memory of a whole build (cgroup), bytes; K, M, G, T suffixes (powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "2G")]
    pub build_memory: u64,
    /// Processes and threads of a whole build (cgroup pids.max).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub build_processes: u64,
    /// CPU seconds per build process (RLIMIT_CPU).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub build_cpu_time: u64,
    /// Wall time of a whole build, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub build_timeout: u64,
    /// Disk a build may fill (its target dir and its copy of the crate), bytes; K, M, G, T
    /// suffixes. Past it the build is killed and its files removed.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "2G")]
    pub build_disk: u64,
}

impl BuildArgs {
    /// The build sandbox's limits.
    pub fn limits(&self) -> appbuild::BuildLimits {
        appbuild::BuildLimits {
            memory: self.build_memory,
            processes: self.build_processes,
            cpu_seconds: self.build_cpu_time,
            wall: Duration::from_secs(self.build_timeout),
            disk: self.build_disk,
            ..Default::default()
        }
    }
}
