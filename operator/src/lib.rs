//! The AI operator: an agent loop that watches a [`Skill`] through an LLM [`llm::Provider`].
//!
//! The loop sends the skill's prompt and the tools (`take_snapshot`, `get_snapshot`,
//! `get_snapshots`, the skill's callbacks, `send_notification`, `get_notifications`,
//! `set_state`, `think`, `wait`, `done`) to the provider, runs the tool calls it returns
//! in order, feeds the results back and stops at `done`, the iteration cap, the deadline,
//! a cancellation or a provider error. The result is an [`Outcome`].
//!
//! ```no_run
//! # async fn demo(skill: std::sync::Arc<dyn operator::Skill>) {
//! use std::sync::Arc;
//! use operator::{MockProvider, Operator};
//!
//! let provider = Arc::new(MockProvider::careful(skill.alert_rule()));
//! let outcome = Operator::new(skill, provider)
//!     .run(serde_json::json!({"reason": "sandbox health check"}))
//!     .await;
//! println!("state={} summary={:?}", outcome.state, outcome.summary);
//! # }
//! ```
//!
//! This crate knows nothing of sandboxes; the sandbox skills implement [`Skill`] elsewhere.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod coordinator_mock;
pub mod error;
pub mod ids;
pub mod insight;
pub mod mock;
mod mock_calls;
mod mock_explore;
pub mod operator;
pub mod outcome;
pub mod skill;
pub mod tool_names;
pub mod tools;
pub mod workflow;

pub use error::ToolError;
pub use insight::{Answer, Correlation, Figure, Insight, Observation, Scheduled};
pub use mock::MockProvider;
pub use operator::{Operator, OperatorConfig};
pub use outcome::{
    HealthState, Notification, Outcome, ParseNameError, RunError, Severity, Snapshot, Stop,
    summarize,
};
pub use skill::{AlertRule, CallbackSpec, Skill};
pub use tokio_util::sync::CancellationToken;
