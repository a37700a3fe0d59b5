//! Which members the coordinator runs for a set of sandboxes: one per sandbox and skill, the
//! skills taken from [`member_skills`]. A new skill over sandboxes plugs in by adding its
//! factory there; nothing else of the coordinator changes.

use std::sync::Arc;

use operator::Skill;

use super::Member;
use crate::skill::{PROCESS_THRESHOLD, SandboxSkill};
use sandbox::Manager;

/// Builds a skill that watches sandbox `id` of `manager`.
pub type SkillFactory = fn(&Manager, &str) -> Arc<dyn Skill>;

fn anomaly(manager: &Manager, id: &str) -> Arc<dyn Skill> {
    Arc::new(SandboxSkill::anomaly(
        manager.clone(),
        id,
        PROCESS_THRESHOLD,
    ))
}

fn status(manager: &Manager, id: &str) -> Arc<dyn Skill> {
    Arc::new(SandboxSkill::new(manager.clone(), id))
}

/// The skills run per sandbox, by name: for an incident those that judge (their operators
/// raise the notifications the coordinator correlates), for a question those that measure.
pub fn member_skills(question: bool) -> Vec<(&'static str, SkillFactory)> {
    if question {
        vec![("sandbox", status as SkillFactory)]
    } else {
        vec![("anomaly", anomaly as SkillFactory)]
    }
}

/// Members for `ids` with the given skills: one per sandbox and skill, named `sandbox ID`
/// (or `ID/skill` when a sandbox has several).
pub fn members_for(
    manager: &Manager,
    ids: &[String],
    skills: &[(&'static str, SkillFactory)],
) -> Vec<Member> {
    let mut members = Vec::with_capacity(ids.len() * skills.len());
    for id in ids {
        for (name, make) in skills {
            let source = if skills.len() == 1 {
                format!("sandbox {id}")
            } else {
                format!("{id}/{name}")
            };
            members.push(Member {
                source,
                sandbox_id: Some(id.clone()),
                skill: make(manager, id),
            });
        }
    }
    members
}

/// [`members_for`] with [`member_skills`].
pub fn sandbox_members(manager: &Manager, ids: &[String], question: bool) -> Vec<Member> {
    members_for(manager, ids, &member_skills(question))
}
