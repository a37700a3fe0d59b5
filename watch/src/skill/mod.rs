//! Skills that let an operator watch sandboxes. Each reads the host's own measurements
//! (`Manager::usage`, `Manager::info`), never the app's word. Which sandbox(es) a skill
//! watches is given when it is built, so several operators can watch different sandboxes.

mod guardrail;
mod multi;
mod sandbox;

pub use guardrail::{Check, Contradiction, guardrail};
pub use multi::MultiSandboxSkill;
pub use sandbox::{Focus, SandboxSkill, snapshot_from, system_prompt_for};

use operator::AlertRule;

/// Process count above which a sandbox counts as spiking (the original demo's threshold).
pub const PROCESS_THRESHOLD: u64 = 10;

/// The rule shared by the sandbox skills: more than `threshold` processes is a spike.
pub fn process_rule(threshold: u64) -> AlertRule {
    AlertRule::process_spike(threshold as f64)
}
