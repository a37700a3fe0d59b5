//! `ThrottlingSkill`: CPU throttling of one sandbox's cgroup (`cpu.stat` `nr_periods`,
//! `nr_throttled`, `throttled_usec`; v1 `throttled_time`), against its `--cpu` limit, over
//! its life and since the skill's previous look.

use std::sync::Mutex;

use async_trait::async_trait;
use operator::{AlertRule, CallbackSpec, Severity, Skill, ToolError};
use serde_json::{Value, json};

use super::common::{Target, failed, prompt};
use sandbox::Manager;
use sandbox::manager::CpuThrottling;

/// Share of enforcement periods throttled (percent) above which the sandbox is CPU-starved.
pub const THROTTLED_THRESHOLD: f64 = 20.0;

/// Watches one sandbox's CPU throttling.
#[derive(Debug)]
pub struct ThrottlingSkill {
    target: Target,
    rule: AlertRule,
    /// The counters at the previous look, for the recent share.
    previous: Mutex<Option<CpuThrottling>>,
}

impl ThrottlingSkill {
    /// A skill watching `id`; more than 20 % of periods throttled is a warning.
    pub fn new(manager: Manager, id: impl Into<String>) -> ThrottlingSkill {
        ThrottlingSkill {
            target: Target::new(manager, id),
            rule: AlertRule {
                metric: "throttled_percent".into(),
                above: THROTTLED_THRESHOLD,
                notification_type: "cpu_throttled".into(),
                summary: "the sandbox is throttled at its CPU limit".into(),
                severity: Severity::Warning,
            },
            previous: Mutex::new(None),
        }
    }

    /// The snapshot: lifetime and recent throttling, with the limit.
    async fn read(&self) -> Value {
        let t = &self.target;
        let info = match t.manager.info(&t.id).await {
            Ok(info) => info,
            Err(e) => return t.failed_snapshot(e),
        };
        let stats = match t.manager.cgroup_stats(&t.id).await {
            Ok(stats) => stats,
            Err(e) => return t.failed_snapshot(e),
        };
        let cpu_limit = info.limits.cpu;
        let Some(now) = stats.as_ref().and_then(|s| s.throttling.clone()) else {
            return json!({
                "sandbox_id": t.id,
                "cpu_limit_cores": cpu_limit,
                "throttling": {"not_available": match stats {
                    None => "the sandbox has no cgroup",
                    Some(_) => "its cgroup has no cpu controller (no cpu.stat throttling counters)",
                }},
            });
        };
        let before = self.previous.lock().unwrap().replace(now.clone());
        let share = |throttled: u64, periods: u64| {
            if periods == 0 {
                0.0
            } else {
                (throttled as f64 / periods as f64 * 1000.0).round() / 10.0
            }
        };
        let recent = before.map(|b| {
            let periods = now.nr_periods.saturating_sub(b.nr_periods);
            let throttled = now.nr_throttled.saturating_sub(b.nr_throttled);
            json!({
                "nr_periods": periods,
                "nr_throttled": throttled,
                "throttled_usec": now.throttled_usec.saturating_sub(b.throttled_usec),
                "throttled_percent": share(throttled, periods),
            })
        });
        json!({
            "sandbox_id": t.id,
            "cpu_limit_cores": cpu_limit,
            "nr_periods": now.nr_periods,
            "nr_throttled": now.nr_throttled,
            "throttled_usec": now.throttled_usec,
            "throttled_percent": share(now.nr_throttled, now.nr_periods),
            "since_previous_look": recent,
            "source": now.source,
        })
    }
}

#[async_trait]
impl Skill for ThrottlingSkill {
    fn title(&self) -> &str {
        "Sandbox CPU Throttling"
    }

    fn description(&self) -> &str {
        "Sandbox: CPU throttling at its --cpu limit, from its cgroup's cpu.stat"
    }

    fn system_prompt(&self) -> String {
        prompt("the CPU throttling", &self.target.id, &self.rule)
    }

    async fn snapshot(&self) -> Value {
        self.read().await
    }

    fn callbacks(&self) -> Vec<CallbackSpec> {
        vec![CallbackSpec::no_args(
            "sandbox_cpu_throttling",
            "cpu.stat now: periods, throttled periods and time, the share throttled over the sandbox's life and since the previous look, and its --cpu limit.",
        )]
    }

    async fn call(&self, name: &str, _args: Value) -> Result<Value, ToolError> {
        match name {
            "sandbox_cpu_throttling" => {
                let v = self.read().await;
                match v.get("error") {
                    Some(e) => Err(failed(e)),
                    None => Ok(v),
                }
            }
            other => Err(ToolError::UnknownCallback(other.to_string())),
        }
    }

    fn alert_rule(&self) -> Option<AlertRule> {
        Some(self.rule.clone())
    }
}
