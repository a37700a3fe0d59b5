//! Sandboxes as a library: the spawn sequence, the prepared-runner pool, the library store,
//! supervision, usage measurement and teardown, behind one [`Manager`]. Usable without the
//! daemon (the embedded default); knows nothing of skills, operators, LLMs or HTTP.
//!
//! The runner (the process inside a sandbox) is this binary re-executed in a hidden mode: a
//! program that embeds this crate calls [`maybe_run_sandbox_child`] first thing in `main`.

pub mod connection;
pub mod error;
pub mod events;
pub mod kernel_view;
pub mod library;
pub mod log;
pub mod log_read;
pub mod log_retain;
pub mod manager;
pub mod procfs;
pub mod ratelimit;
pub mod spawn;
mod spawn_slots;
pub mod sweep;
mod tenant_files;
pub mod uids;

pub use error::SandboxError;
pub use manager::{
    Gauges, Manager, ManagerConfig, ReloadReport, SandboxInfo, SandboxSummary, StartupTimings,
    Status, Usage,
};
pub use proto::spec::{self, AppSource, Level, Limits, ReloadSource, SandboxSpec};

/// Runs the hidden runner, worker or build-shim mode if argv asks for it; returns otherwise.
///
/// Call this first thing in `main`, before any runtime or thread is started: the sandbox's
/// init, its workers and the build sandbox's shim are this same binary, re-executed.
pub fn maybe_run_sandbox_child() {
    let mut args = std::env::args();
    match args.nth(1).as_deref() {
        Some(proto::runner::RUNNER_ARG) => runner::main(),
        Some(proto::runner::WORKER_ARG) => {
            let rest: Vec<String> = args.collect();
            runner::worker_main(&rest)
        }
        Some(appbuild::sandbox::SHIM_ARG) => {
            let rest: Vec<String> = args.collect();
            appbuild::sandbox::shim_main(&rest)
        }
        _ => {}
    }
}
