//! The `host` command: the clap CLI, the control-socket client, the `demo` and `anomaly`
//! flows and the rendering of answers for a terminal. Everything it runs lives in the crates
//! below it (`docs/architecture.md`): `daemon` (`host serve`), `sandbox` (the manager),
//! `watch` (detector, skills, metrics), `appbuild` (builds), `proto` (the messages).

pub mod cli;
pub mod client;
pub mod client_events;
pub mod demo;
pub mod demo_coordinator;
pub mod handover;
pub mod insight_render;
pub mod limit_args;
pub mod output;
pub mod render;

pub use sandbox::maybe_run_sandbox_child;
