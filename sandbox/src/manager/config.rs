//! How the manager finds its runner binary, builds apps and where it keeps sandbox files.

use std::path::PathBuf;
use std::time::Duration;

use appbuild::Compiler;
use isolation::is_root;

use super::pool_size_from_env;
use crate::events::EventBus;

/// How the manager finds its runner binary and where it keeps sandbox files.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The runner binary: the host binary itself (`/proc/self/exe`) or one named explicitly.
    pub runner_exe: PathBuf,
    /// Parent directory of every sandbox's private directory.
    pub state_dir: PathBuf,
    /// How apps are built.
    pub compiler: Compiler,
    /// Default timeout of a call.
    pub call_timeout: Duration,
    /// How long a reload's load and state hand-over may take.
    pub reload_timeout: Duration,
    /// How long a runner may take to report ready.
    pub start_timeout: Duration,
    /// Where the manager reports what happens to its sandboxes.
    pub events: EventBus,
    /// Prepared runners to keep (0: none; see [`pool_size_from_env`]).
    pub pool_size: usize,
    /// The largest library a sandbox may load, in bytes (`--max-lib-size`).
    pub max_lib_size: u64,
    /// Where sandbox uids are leased, machine-wide ([`crate::uids::DEFAULT_DIR`] on a root
    /// host); `None` on a non-root host, whose sandboxes all run as itself.
    pub uid_leases: Option<PathBuf>,
}

impl ManagerConfig {
    /// Defaults for a runner binary: state under `$XDG_RUNTIME_DIR/sandbox-host/sandboxes`
    /// (or the temp directory), apps built into the shared target directory.
    pub fn new(runner_exe: impl Into<PathBuf>) -> ManagerConfig {
        let runner_exe = runner_exe.into();
        ManagerConfig {
            compiler: Compiler {
                shim_exe: Some(runner_exe.clone()),
                ..Compiler::default()
            },
            runner_exe,
            state_dir: default_state_dir(),
            call_timeout: Duration::from_secs(5),
            reload_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(10),
            events: EventBus::default(),
            pool_size: pool_size_from_env(),
            max_lib_size: crate::library::DEFAULT_MAX_SIZE,
            uid_leases: is_root().then(|| PathBuf::from(crate::uids::DEFAULT_DIR)),
        }
    }
}

/// Where sandboxes live by default: `$XDG_RUNTIME_DIR/sandbox-host/sandboxes`, else
/// `/run/sandbox-host/sandboxes` for root, else `/var/tmp/sandbox-host-UID/sandboxes`. Never
/// under `/tmp`: a sandbox's private `/tmp` would hide its own directory.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("sandbox-host").join("sandboxes");
    }
    if is_root() {
        return PathBuf::from("/run/sandbox-host/sandboxes");
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/var/tmp/sandbox-host-{uid}/sandboxes"))
}
