//! Sandboxes: the spec, the spawn sequence, the runner (child side), the wire protocol, the
//! lifecycle manager and usage measurement. Knows nothing of skills, operators or LLMs.

pub mod connection;
pub mod kernel_view;
pub mod library;
pub mod manager;
pub mod procfs;
pub mod protocol;
pub mod ratelimit;
pub mod restrict;
pub mod runner;
pub mod spawn;
pub mod spec;
pub mod sweep;

pub use crate::error::SandboxError;
pub use manager::{
    Gauges, Manager, ManagerConfig, ReloadReport, SandboxInfo, SandboxSummary, StartupTimings,
    Status, Usage,
};
pub use spec::{AppSource, Level, Limits, ReloadSource, SandboxSpec};
