//! The sandbox host: runs untrusted native apps in sandboxes, hot-reloads them, measures
//! them, and lets an AI operator watch them.
//!
//! Arrows point one way: `cli -> {daemon, demo}`, `demo -> {operator, sandbox, compile}`,
//! `skill -> sandbox`, `sandbox -> compile`, and `{sandbox, compile} -> {error, fds}`;
//! `events` is below everything that emits (`sandbox`, `operate`, the detector `watch`);
//! `watch -> {sandbox, events, operate, skill}` and `daemon -> watch`.
//! `sandbox` knows nothing of skills, operators or LLMs; `compile` nothing of sandboxes.

pub mod cli;
pub mod client;
pub mod client_events;
pub mod compile;
pub mod daemon;
pub mod demo;
pub mod error;
pub mod events;
mod fds;
pub mod limit_args;
pub mod listen;
pub mod metrics;
pub mod operate;
pub mod output;
pub mod provider;
pub mod render;
pub mod sandbox;
pub mod skill;
pub mod ui;
pub mod watch;

/// Runs the hidden runner, worker or build-shim mode if argv asks for it; returns otherwise.
///
/// Call this first thing in `main`, before any runtime or thread is started.
pub fn maybe_run_sandbox_child() {
    let mut args = std::env::args();
    match args.nth(1).as_deref() {
        Some(sandbox::runner::RUNNER_ARG) => sandbox::runner::main(),
        Some(sandbox::runner::WORKER_ARG) => {
            let rest: Vec<String> = args.collect();
            sandbox::runner::worker_main(&rest)
        }
        Some(compile::sandbox::SHIM_ARG) => {
            let rest: Vec<String> = args.collect();
            compile::sandbox::shim_main(&rest)
        }
        _ => {}
    }
}
