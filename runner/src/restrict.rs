//! The runner's self-restrictions, applied after exec and before any app code is loaded.
//!
//! The host decides what to apply (`isolation::RunnerRestrictions`) and sends it in the
//! `init` frame; this module is the seam between the runner and the isolation crate.

use isolation::RunnerRestrictions;

use crate::error::RestrictError;

/// Applies the restrictions in `plan` to the runner (no_new_privs, Landlock, seccomp, in that
/// order); returns the report entries of what was applied, as JSON.
pub fn apply_in_runner(plan: &serde_json::Value) -> Result<serde_json::Value, RestrictError> {
    if plan.is_null() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    let restrictions: RunnerRestrictions =
        serde_json::from_value(plan.clone()).map_err(RestrictError::BadPlan)?;
    let entries = restrictions.apply_in_runner()?;
    serde_json::to_value(entries).map_err(RestrictError::Encode)
}
