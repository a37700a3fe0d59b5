//! The skills by name, so a coordinator (or `host ask`) can run them from a list: each entry
//! names a skill, says what it reads, and builds it for one sandbox of a manager.

use std::sync::Arc;

use operator::Skill;
use sandbox::Manager;

use super::{
    CrashHistorySkill, HeadroomSkill, IsolationSkill, LogsSkill, PROCESS_THRESHOLD, PressureSkill,
    SandboxSkill, ThrottlingSkill,
};

/// One skill of the catalog.
#[derive(Clone, Copy)]
pub struct SkillEntry {
    /// Its name, e.g. `pressure`.
    pub name: &'static str,
    /// What it reads, in one line.
    pub reads: &'static str,
    /// Builds it for sandbox `id` of `manager`.
    pub build: fn(Manager, &str) -> Arc<dyn Skill>,
}

impl std::fmt::Debug for SkillEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkillEntry")
            .field("name", &self.name)
            .field("reads", &self.reads)
            .finish()
    }
}

/// Every skill over one sandbox, in a stable order.
pub fn catalog() -> &'static [SkillEntry] {
    &[
        SkillEntry {
            name: "sandbox",
            reads: "status and resource usage (cgroup, /proc)",
            build: |m, id| Arc::new(SandboxSkill::new(m, id)),
        },
        SkillEntry {
            name: "anomaly",
            reads: "process spikes (cgroup, /proc)",
            build: |m, id| Arc::new(SandboxSkill::anomaly(m, id, PROCESS_THRESHOLD)),
        },
        SkillEntry {
            name: "logs",
            reads: "captured stdout/stderr (the sandbox's log), rate-limited and escaped",
            build: |m, id| Arc::new(LogsSkill::new(m, id)),
        },
        SkillEntry {
            name: "pressure",
            reads: "PSI memory/cpu/io of its cgroup (cgroup v2; not available on v1)",
            build: |m, id| Arc::new(PressureSkill::new(m, id)),
        },
        SkillEntry {
            name: "throttling",
            reads: "CPU throttling (cpu.stat nr_throttled, throttled time)",
            build: |m, id| Arc::new(ThrottlingSkill::new(m, id)),
        },
        SkillEntry {
            name: "crashes",
            reads: "crash history: signals, OOM kills, restarts with times",
            build: |m, id| Arc::new(CrashHistorySkill::new(m, id)),
        },
        SkillEntry {
            name: "headroom",
            reads: "limits against usage",
            build: |m, id| Arc::new(HeadroomSkill::new(m, id)),
        },
        SkillEntry {
            name: "isolation",
            reads: "the isolation report checked against the kernel",
            build: |m, id| Arc::new(IsolationSkill::new(m, id)),
        },
    ]
}

/// The catalog's entry called `name`.
pub fn skill_named(name: &str) -> Option<&'static SkillEntry> {
    catalog().iter().find(|e| e.name == name)
}

/// Builds skill `name` for sandbox `id`; `None` for a name not in the catalog.
pub fn build(name: &str, manager: Manager, id: &str) -> Option<Arc<dyn Skill>> {
    skill_named(name).map(|e| (e.build)(manager, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lowercase() {
        let names: Vec<&str> = catalog().iter().map(|e| e.name).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[..i].contains(n), "{n} twice");
            assert!(n.chars().all(|c| c.is_ascii_lowercase()), "{n}");
        }
        assert!(skill_named("pressure").is_some());
        assert!(skill_named("nope").is_none());
    }
}
