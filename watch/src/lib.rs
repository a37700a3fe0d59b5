//! Watching sandboxes: the detector (`host serve --watch`), the operator's skills over
//! sandboxes and one operator run on a sandbox, and the Prometheus metrics. Reads the
//! sandboxes through `sandbox::Manager` and the event stream; `sandbox` knows nothing of it.

pub mod baseline;
pub mod coordinator;
pub mod detector;
pub mod llm_metrics;
pub mod metrics;
pub mod operate;
pub mod provider;
pub mod sinks;
pub mod skill;
pub mod telemetry;
pub mod watching;

pub use watching::{WatchConfig, WatchSet, default_rule, parse_duration, spawn};
