//! Skills that let an operator watch sandboxes. Each reads the host's own measurements
//! (`Manager::usage`, `Manager::info`), never the app's word. Which sandbox(es) a skill
//! watches is given when it is built, so several operators can watch different sandboxes.

mod catalog;
mod common;
mod crashes;
mod guardrail;
mod headroom;
mod isolation_report;
mod logs;
mod multi;
mod pressure;
mod sandbox;
mod throttling;

pub use catalog::{SkillEntry, build, catalog, skill_named};
pub use crashes::CrashHistorySkill;
pub use guardrail::{Check, Contradiction, guardrail};
pub use headroom::HeadroomSkill;
pub use isolation_report::IsolationSkill;
pub use logs::LogsSkill;
pub use multi::MultiSandboxSkill;
pub use pressure::PressureSkill;
pub use sandbox::{Focus, SandboxSkill, snapshot_from, system_prompt_for};
pub use throttling::ThrottlingSkill;

use operator::AlertRule;

/// Process count above which a sandbox counts as spiking (the original demo's threshold).
pub const PROCESS_THRESHOLD: u64 = 10;

/// The rule shared by the sandbox skills: more than `threshold` processes is a spike.
pub fn process_rule(threshold: u64) -> AlertRule {
    AlertRule::process_spike(threshold as f64)
}
