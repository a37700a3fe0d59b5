//! What was applied to a sandbox, what was not, and why.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::IsolationError;
use crate::level::Level;

/// One isolation mechanism, as named in reports (`snake_case` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// cgroup v2 or v1 limits and accounting.
    Cgroup,
    /// PID namespace.
    PidNs,
    /// Mount namespace (private `/proc`, `/tmp`, read-only app dir).
    MountNs,
    /// IPC namespace.
    IpcNs,
    /// UTS namespace.
    UtsNs,
    /// User namespace.
    UserNs,
    /// Network namespace (shared empty one, or a private one).
    NetNs,
    /// seccomp-bpf syscall filter.
    Seccomp,
    /// Landlock filesystem (and network/scope) restrictions.
    Landlock,
    /// setrlimit limits.
    Rlimits,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// Dropping all capabilities (bounding, ambient, inheritable, effective, permitted).
    Capabilities,
    /// A root of its own (`pivot_root` into a tmpfs of read-only binds).
    Root,
    /// Unprivileged ids: never the host's uid 0.
    Ids,
    /// The capped writable disk (`/work` and `/tmp`).
    Disk,
}

impl Mechanism {
    /// The wire name, e.g. `"pid_ns"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Cgroup => "cgroup",
            Mechanism::PidNs => "pid_ns",
            Mechanism::MountNs => "mount_ns",
            Mechanism::IpcNs => "ipc_ns",
            Mechanism::UtsNs => "uts_ns",
            Mechanism::UserNs => "user_ns",
            Mechanism::NetNs => "net_ns",
            Mechanism::Seccomp => "seccomp",
            Mechanism::Landlock => "landlock",
            Mechanism::Rlimits => "rlimits",
            Mechanism::NoNewPrivs => "no_new_privs",
            Mechanism::Capabilities => "capabilities",
            Mechanism::Root => "root",
            Mechanism::Ids => "ids",
            Mechanism::Disk => "disk",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
