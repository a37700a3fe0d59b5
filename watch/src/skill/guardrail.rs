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

/// A verdict the kernel's figures contradict: which rule, and the figures on both sides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{rule}: live processes={processes}, threshold={threshold}, operator state={state}, \
     notifications={notifications}"
)]
pub struct Contradiction {
    /// The rule broken (`plumbing_state_mismatch`, `anomaly_notification_missing`, …).
    pub rule: &'static str,
    /// The live process count.
    pub processes: u64,
    /// The threshold it was held against.
    pub threshold: u64,
    /// The operator's state.
    pub state: HealthState,
    /// How many notifications it raised.
    pub notifications: usize,
}

/// Checks the operator's verdict against live telemetry, in the original's order.
pub fn guardrail(
    check: Check,
    processes: u64,
    threshold: u64,
    outcome: &Outcome,
) -> Result<(), Contradiction> {
    let state = outcome.state;
    let notified = outcome.notifications.len();
    let detail = |rule: &'static str| Contradiction {
        rule,
        processes,
        threshold,
        state,
        notifications: notified,
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
