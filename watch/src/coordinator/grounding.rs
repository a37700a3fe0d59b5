//! The guardrail for insights, as `skill::guardrail` is for verdicts: an insight that cites a
//! snapshot, a figure or a notification the run does not hold, or that claims health the
//! kernel contradicts now, is marked ungrounded, and an ungrounded claim of health is never
//! raised as healthy (its state becomes `unknown`).

use std::collections::{HashMap, HashSet};

use operator::insight::{same_value, value_at};
use operator::{Figure, HealthState, Insight, Observation};
use serde_json::Value;

/// What the kernel says of one sandbox now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// Live processes (cgroup and /proc).
    pub processes: u64,
    /// `running`, `restarting`, `crashed`, …
    pub status: String,
}

/// What the run holds, to check citations against: every snapshot by id (the coordinator's
/// own and its members'), the notifications raised, and the kernel's figures now.
#[derive(Debug, Default)]
pub struct Evidence {
    /// Snapshot id to its data.
    pub snapshots: HashMap<String, Value>,
    /// Ids of the notifications the members raised.
    pub notifications: HashSet<String>,
    /// Sandbox id to what the kernel says of it now.
    pub live: HashMap<String, Live>,
    /// Process count above which a sandbox counts as spiking.
    pub threshold: u64,
}

/// Why an insight or a figure is not grounded: the rule, and the figures on both sides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ungrounded {
    /// It rests on nothing.
    #[error("insight_no_observation: the insight cites no observation")]
    NoObservation,
    /// A snapshot the run never took.
    #[error("insight_unknown_snapshot: cites snapshot {0}, which the snapshots do not contain")]
    UnknownSnapshot(String),
    /// A metric the snapshot does not hold.
    #[error("insight_missing_metric: cites {metric}, which snapshot {snapshot} does not contain")]
    MissingMetric {
        /// The snapshot.
        snapshot: String,
        /// The metric cited.
        metric: String,
    },
    /// A value other than the one held.
    #[error("insight_value_mismatch: cites {metric}={cited} but snapshot {snapshot} holds {held}")]
    ValueMismatch {
        /// The snapshot.
        snapshot: String,
        /// The metric.
        metric: String,
        /// The value cited.
        cited: String,
        /// The value held.
        held: String,
    },
    /// A notification no member raised.
    #[error("insight_unknown_notification: cites notification {0}, which no member raised")]
    UnknownNotification(String),
    /// Health the kernel contradicts.
    #[error(
        "insight_state_contradicted: claims healthy but the kernel says {sandbox} is {status} \
         with {processes} processes (threshold {threshold})"
    )]
    StateContradicted {
        /// The sandbox.
        sandbox: String,
        /// Its status now.
        status: String,
        /// Its processes now.
        processes: u64,
        /// The threshold.
        threshold: u64,
    },
}

impl Evidence {
    /// Checks one cited figure.
    pub fn check(&self, o: &Observation) -> Result<(), Ungrounded> {
        let data = self
            .snapshots
            .get(o.snapshot_id.trim())
            .ok_or_else(|| Ungrounded::UnknownSnapshot(o.snapshot_id.clone()))?;
        let held = value_at(data, o.metric.trim()).ok_or_else(|| Ungrounded::MissingMetric {
            snapshot: o.snapshot_id.clone(),
            metric: o.metric.clone(),
        })?;
        if same_value(&o.value, held) {
            Ok(())
        } else {
            Err(Ungrounded::ValueMismatch {
                snapshot: o.snapshot_id.clone(),
                metric: o.metric.clone(),
                cited: o.value.to_string(),
                held: held.to_string(),
            })
        }
    }

    /// The sandbox a cited figure is about: the cited snapshot's `sandbox_id`, or for a path
    /// into the coordinator's snapshot (`members.N.…`) that member's.
    fn source_of(&self, o: &Observation) -> Option<String> {
        let data = self.snapshots.get(o.snapshot_id.trim())?;
        if let Some(id) = data["sandbox_id"].as_str() {
            return Some(id.to_string());
        }
        let mut parts = o.metric.trim().split('.');
        if parts.next() == Some("members") {
            let member = value_at(data, &format!("members.{}", parts.next()?))?;
            return member["sandbox_id"].as_str().map(str::to_string);
        }
        None
    }

    /// Checks `insight` and records the result in it: `grounded`, `ungrounded` (the first
    /// rule broken), `sources`, and its state (`unknown` for an ungrounded claim of health).
    pub fn ground(&self, insight: &mut Insight) {
        let mut sources: Vec<String> = Vec::new();
        for o in &insight.observations {
            if let Some(s) = self.source_of(o)
                && !sources.contains(&s)
            {
                sources.push(s);
            }
        }
        insight.sources = sources;
        let verdict = self.first_failure(insight);
        insight.grounded = verdict.is_ok();
        insight.ungrounded = verdict.err().map(|e| e.to_string());
        if !insight.grounded && insight.state == HealthState::Healthy {
            insight.state = HealthState::Unknown;
        }
    }

    fn first_failure(&self, insight: &Insight) -> Result<(), Ungrounded> {
        if insight.observations.is_empty() {
            return Err(Ungrounded::NoObservation);
        }
        for id in &insight.notification_ids {
            if !self.notifications.contains(id.trim()) {
                return Err(Ungrounded::UnknownNotification(id.clone()));
            }
        }
        for o in &insight.observations {
            self.check(o)?;
        }
        if insight.state == HealthState::Healthy {
            for s in &insight.sources {
                if let Some(live) = self.live.get(s)
                    && (live.processes > self.threshold || live.status != "running")
                {
                    return Err(Ungrounded::StateContradicted {
                        sandbox: s.clone(),
                        status: live.status.clone(),
                        processes: live.processes,
                        threshold: self.threshold,
                    });
                }
            }
        }
        Ok(())
    }

    /// The figures an answer cites, each checked.
    pub fn figures(&self, cited: Vec<Observation>) -> Vec<Figure> {
        cited
            .into_iter()
            .map(|observation| {
                let checked = self.check(&observation);
                Figure {
                    source: self.source_of(&observation),
                    observation,
                    grounded: checked.is_ok(),
                    ungrounded: checked.err().map(|e| e.to_string()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use operator::Correlation;
    use serde_json::json;

    fn evidence() -> Evidence {
        let mut e = Evidence {
            threshold: 10,
            ..Evidence::default()
        };
        e.snapshots.insert(
            "aaaa".into(),
            json!({"sandbox_id": "w-1", "processes": 28, "status": "running"}),
        );
        e.snapshots.insert(
            "cccc".into(),
            json!({"members": [{"sandbox_id": "w-1", "events": [{"count": 25}]}]}),
        );
        e.notifications.insert("n1".into());
        e.live.insert(
            "w-1".into(),
            Live {
                processes: 28,
                status: "running".into(),
            },
        );
        e
    }

    fn insight(state: HealthState, observations: Vec<Observation>) -> Insight {
        Insight {
            id: "i".into(),
            notification_ids: vec!["n1".into()],
            correlation: Correlation::Causal,
            hypothesis: "h".into(),
            observations,
            state,
            confidence: 0.9,
            grounded: false,
            ungrounded: None,
            sources: vec![],
        }
    }

    fn obs(id: &str, metric: &str, value: Value) -> Observation {
        Observation {
            snapshot_id: id.into(),
            metric: metric.into(),
            value,
        }
    }

    #[test]
    fn cited_figures_must_be_held() {
        let e = evidence();
        let mut good = insight(
            HealthState::Warning,
            vec![
                obs("aaaa", "processes", json!(28)),
                obs("cccc", "members.0.events.0.count", json!(25)),
            ],
        );
        e.ground(&mut good);
        assert!(good.grounded, "{:?}", good.ungrounded);
        assert_eq!(good.sources, ["w-1"]);

        for (o, rule) in [
            (
                obs("zzzz", "processes", json!(28)),
                "insight_unknown_snapshot",
            ),
            (obs("aaaa", "threads", json!(3)), "insight_missing_metric"),
            (obs("aaaa", "processes", json!(3)), "insight_value_mismatch"),
        ] {
            let mut bad = insight(HealthState::Warning, vec![o]);
            e.ground(&mut bad);
            assert!(!bad.grounded);
            assert!(bad.ungrounded.as_deref().unwrap().starts_with(rule));
            assert_eq!(bad.state, HealthState::Warning);
        }
        let mut none = insight(HealthState::Warning, vec![]);
        e.ground(&mut none);
        assert!(!none.grounded);
    }

    #[test]
    fn an_ungrounded_claim_of_health_is_never_healthy() {
        let e = evidence();
        // Cites a figure that is there, but claims health while the kernel sees a spike.
        let mut lie = insight(
            HealthState::Healthy,
            vec![obs("aaaa", "status", json!("running"))],
        );
        e.ground(&mut lie);
        assert!(!lie.grounded);
        assert_eq!(lie.state, HealthState::Unknown);
        assert!(
            lie.ungrounded
                .as_deref()
                .unwrap()
                .starts_with("insight_state_contradicted: claims healthy but the kernel says w-1")
        );
        let mut unknown = insight(
            HealthState::Warning,
            vec![obs("aaaa", "processes", json!(28))],
        );
        unknown.notification_ids = vec!["nope".into()];
        e.ground(&mut unknown);
        assert!(
            unknown
                .ungrounded
                .unwrap()
                .starts_with("insight_unknown_notification")
        );
    }
}
