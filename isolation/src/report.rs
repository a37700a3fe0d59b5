//! What was applied to a sandbox, what was not, and why.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::IsolationError;
use crate::level::Level;

pub use crate::mechanism::Mechanism;

/// One line of a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEntry {
    /// Which mechanism.
    pub mechanism: Mechanism,
    /// Whether it is in force for this sandbox.
    pub applied: bool,
    /// What exactly was applied (e.g. `"v1 memory+pids+cpu at /sys/fs/cgroup/..."`) or why not.
    pub detail: String,
    /// False when the mechanism does not apply here (e.g. `user_ns` when the host is root,
    /// `net_ns` when the sandbox asked for network); such entries never fail `Strict`.
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

impl ReportEntry {
    /// A mechanism that is in force.
    pub fn applied(mechanism: Mechanism, detail: impl Into<String>) -> Self {
        Self {
            mechanism,
            applied: true,
            detail: detail.into(),
            required: true,
        }
    }

    /// A mechanism that should be in force but is not; `detail` says why.
    pub fn missing(mechanism: Mechanism, detail: impl Into<String>) -> Self {
        Self {
            mechanism,
            applied: false,
            detail: detail.into(),
            required: true,
        }
    }

    /// A mechanism that is deliberately not used here; `detail` says why.
    pub fn not_needed(mechanism: Mechanism, detail: impl Into<String>) -> Self {
        Self {
            mechanism,
            applied: false,
            detail: detail.into(),
            required: false,
        }
    }

    /// `Err(IsolationError::Missing)` when `level` is `Strict` and this entry is required but
    /// not applied; `Ok(())` otherwise.
    pub fn check(&self, level: Level) -> Result<(), IsolationError> {
        if level == Level::Strict && self.required && !self.applied {
            return Err(IsolationError::Missing {
                mechanism: self.mechanism,
                detail: self.detail.clone(),
            });
        }
        Ok(())
    }
}

/// Everything that was (or was not) applied to one sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Report {
    /// Entries in the order they were recorded.
    pub entries: Vec<ReportEntry>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `entry`; under `Strict` a required, unapplied entry is an error (it is still
    /// recorded, so the caller can show the full report).
    pub fn record(&mut self, level: Level, entry: ReportEntry) -> Result<(), IsolationError> {
        let res = entry.check(level);
        self.entries.push(entry);
        res
    }

    /// Appends several entries, stopping at the first `Strict` failure.
    pub fn record_all(
        &mut self,
        level: Level,
        entries: impl IntoIterator<Item = ReportEntry>,
    ) -> Result<(), IsolationError> {
        for e in entries {
            self.record(level, e)?;
        }
        Ok(())
    }

    /// The last entry recorded for `mechanism`.
    pub fn get(&self, mechanism: Mechanism) -> Option<&ReportEntry> {
        self.entries.iter().rev().find(|e| e.mechanism == mechanism)
    }

    /// True when the last entry for `mechanism` says applied.
    pub fn is_applied(&self, mechanism: Mechanism) -> bool {
        self.get(mechanism).is_some_and(|e| e.applied)
    }

    /// Re-checks every entry against `level` (first failure wins).
    pub fn check(&self, level: Level) -> Result<(), IsolationError> {
        self.entries.iter().try_for_each(|e| e.check(level))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            let mark = match (e.applied, e.required) {
                (true, _) => "yes",
                (false, true) => "NO ",
                (false, false) => "n/a",
            };
            writeln!(f, "{mark} {:<13} {}", e.mechanism.as_str(), e.detail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_fails_on_required_missing_only() {
        let mut r = Report::new();
        r.record(
            Level::Strict,
            ReportEntry::applied(Mechanism::PidNs, "pid ns"),
        )
        .unwrap();
        r.record(
            Level::Strict,
            ReportEntry::not_needed(Mechanism::UserNs, "root"),
        )
        .unwrap();
        let err = r
            .record(
                Level::Strict,
                ReportEntry::missing(Mechanism::Landlock, "ABI 0"),
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                IsolationError::Missing {
                    mechanism: Mechanism::Landlock,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(r.entries.len(), 3);
        r.check(Level::Standard).unwrap();
        assert!(r.check(Level::Strict).is_err());
        assert!(r.is_applied(Mechanism::PidNs));
        assert!(!r.is_applied(Mechanism::Landlock));
    }

    #[test]
    fn serializes_as_list_of_entries() {
        let mut r = Report::new();
        r.record(
            Level::Standard,
            ReportEntry::applied(Mechanism::NoNewPrivs, "prctl"),
        )
        .unwrap();
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(
            j,
            r#"[{"mechanism":"no_new_privs","applied":true,"detail":"prctl","required":true}]"#
        );
        let back: Report =
            serde_json::from_str(r#"[{"mechanism":"net_ns","applied":false,"detail":"x"}]"#)
                .unwrap();
        assert!(back.entries[0].required);
        assert_eq!(back.entries[0].mechanism, Mechanism::NetNs);
    }
}
