//! The guardrail: the operator's verdict checked against live telemetry. Shared by the demo
//! and the detector, so both refuse the same claims.

use operator::{HealthState, Outcome};

/// What the verdict is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The sandbox is calm: the verdict must be healthy, without notifications.
    Plumbing,
    /// Spikes: above the threshold warning with a notification, else healthy without one.
    Anomaly,
}

/// Checks the operator's verdict against live telemetry, in the original's order.
pub fn guardrail(
    check: Check,
    processes: u64,
    threshold: u64,
    outcome: &Outcome,
) -> Result<(), String> {
    let state = outcome.state;
    let notified = outcome.notifications.len();
    let detail = |name: &str| {
        format!(
            "{name}: live processes={processes}, threshold={threshold}, operator state={state}, notifications={notified}"
        )
    };
    match check {
        Check::Plumbing => {
            if state != HealthState::Healthy {
                return Err(detail("plumbing_state_mismatch"));
            }
            if notified > 0 {
                return Err(detail("plumbing_unexpected_notification"));
            }
        }
        Check::Anomaly => {
            let spiking = processes > threshold;
            if spiking && state != HealthState::Warning {
                return Err(detail("anomaly_state_mismatch"));
            }
            if spiking && notified == 0 {
                return Err(detail("anomaly_notification_missing"));
            }
            if !spiking && state != HealthState::Healthy {
                return Err(detail("anomaly_state_mismatch"));
            }
            if !spiking && notified > 0 {
                return Err(detail("anomaly_unexpected_notification"));
            }
        }
    }
    Ok(())
}
