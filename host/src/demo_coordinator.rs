//! `host demo --coordinator` and `host anomaly --coordinator`: after the operator's verdict,
//! the coordinator runs the sandbox's operator again as its member, correlates what it
//! noticed with what the host recorded (the workers it started) and prints the insights,
//! checked against the snapshots and the kernel. In the anomaly flow one grounded insight
//! must tie the spike to its cause.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use watch::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorReport, Providers, Trigger, sandbox_members,
};

use sandbox::Manager;

/// What the coordinator step printed and found.
#[derive(Debug)]
pub struct Step {
    /// The `[coordinator]` lines, escaped.
    pub lines: Vec<String>,
    /// The report, for `--json`.
    pub json: Value,
    /// `Err(why)` when the anomaly flow got no grounded insight.
    pub result: Result<(), String>,
}

/// Runs the coordinator over sandbox `id` with `model` (the mock without one); `anomaly`: the
/// flow that must end with a grounded insight.
pub async fn run(
    anomaly: bool,
    manager: &Manager,
    id: &str,
    model: Option<&std::sync::Arc<dyn llm::Provider>>,
    timeout: Duration,
) -> Step {
    let providers = match model {
        Some(p) => Providers::Model(std::sync::Arc::clone(p)),
        None => Providers::Mock,
    };
    let members = sandbox_members(manager, &[id.to_string()], false);
    let config = CoordinatorConfig {
        deadline: timeout,
        ..CoordinatorConfig::default()
    };
    let report: CoordinatorReport = Coordinator::new(manager.clone(), members, providers)
        .with_config(config)
        .run(
            Trigger::Incident("the demo asks: correlate what the operators notice".into()),
            CancellationToken::new(),
        )
        .await;
    watch::coordinator::report_insights(manager.events(), &report);
    let mut lines = Vec::new();
    for i in &report.insights {
        lines.extend(crate::insight_render::insight_lines("[coordinator]", i));
    }
    let grounded = report.insights.iter().filter(|i| i.grounded).count();
    lines.push(format!(
        "[coordinator] insights={} grounded={grounded}",
        report.insights.len()
    ));
    let result = match anomaly {
        true if grounded == 0 => Err(format!(
            "coordinator_no_grounded_insight: {} insight(s), none grounded ({})",
            report.insights.len(),
            report.stop_reason
        )),
        _ => Ok(()),
    };
    Step {
        lines,
        json: json!(report),
        result,
    }
}
