//! The runner's self-restrictions, applied after exec and before any app code is loaded.
//!
//! The host decides what to apply and sends it in the `init` frame; this module is the seam
//! between the runner and the isolation crate.

/// Applies the restrictions in `plan` to the runner; returns what was applied.
pub fn apply_in_runner(plan: &serde_json::Value) -> Result<serde_json::Value, String> {
    if plan.is_null() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    Err(format!("unsupported restriction plan: {plan}"))
}
