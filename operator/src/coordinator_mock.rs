//! The offline mock's coordinator policy ([`crate::MockProvider::coordinator`]): it reads the
//! coordinator's snapshot (the shape in [`crate::insight`]) from the conversation and acts
//! like a careful coordinator: it groups the members' notifications by type, ties each group
//! to a host event that explains it when one is there (`sandbox.workers_added`), cites the
//! figures it read, and answers a question from the members' figures.

use std::collections::BTreeMap;

use llm::{Message, ToolCall};
use serde_json::{Value, json};

use crate::insight::{ANSWER, CALL_SKILL, RECORD_INSIGHT, SCHEDULE};
use crate::tools::{DONE, SET_STATE, TAKE_SNAPSHOT};

/// A tool call with an empty id (the provider numbers it).
fn tool_call(name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        id: String::new(),
        name: name.to_string(),
        arguments,
        thought_signature: None,
    }
}

/// The event that explains a process spike: workers started on request.
const WORKERS_ADDED: &str = "sandbox.workers_added";

/// The newest successful `take_snapshot` result: its id and data.
fn latest_snapshot(messages: &[Message]) -> Option<(String, Value)> {
    messages.iter().rev().find_map(|m| match m {
        Message::Tool { results } => results.iter().rev().find_map(|r| {
            if r.name != TAKE_SNAPSHOT || r.is_error {
                return None;
            }
            let v: Value = serde_json::from_str(&r.content).ok()?;
            Some((v["id"].as_str()?.to_string(), v.get("data")?.clone()))
        }),
        _ => None,
    })
}

/// The question in the run's context (`{"context": {"question": …}}` in the first message).
fn question(messages: &[Message]) -> Option<String> {
    let Some(Message::User { text }) = messages.first() else {
        return None;
    };
    let head = text.split("\n\nCurrent state").next()?;
    let v: Value = serde_json::from_str(head).ok()?;
    v["context"]["question"].as_str().map(str::to_string)
}

/// Whether the model called `tool` earlier in the conversation.
fn called(messages: &[Message], tool: &str) -> bool {
    messages.iter().any(|m| {
        matches!(m, Message::Assistant { tool_calls, .. }
            if tool_calls.iter().any(|c| c.name == tool))
    })
}

/// The coordinator's reply to `messages`.
pub(crate) fn reply(messages: &[Message]) -> Vec<ToolCall> {
    if called(messages, DONE) {
        return vec![tool_call(DONE, json!({}))];
    }
    let Some((snapshot_id, data)) = latest_snapshot(messages) else {
        return vec![tool_call(TAKE_SNAPSHOT, json!({}))];
    };
    let members: Vec<Value> = data["members"].as_array().cloned().unwrap_or_default();
    let asked = skill_results(messages);
    let mut calls = match question(messages) {
        Some(_) if !called(messages, CALL_SKILL) && !info_calls(&members).is_empty() => {
            return info_calls(&members);
        }
        Some(q) => vec![answer(&q, &snapshot_id, &members, &asked)],
        None => insights(&snapshot_id, &members),
    };
    let restarting: Vec<&str> = members
        .iter()
        .filter(|m| m["data"]["status"] == "restarting")
        .filter_map(|m| m["sandbox_id"].as_str())
        .collect();
    if !restarting.is_empty() && !called(messages, SCHEDULE) {
        calls.push(tool_call(
            SCHEDULE,
            json!({"ms": 2000, "reason": format!("{} restarting: figures not settled", restarting.join(", "))}),
        ));
    }
    let notified = members
        .iter()
        .any(|m| m["notifications"].as_array().is_some_and(|n| !n.is_empty()));
    let (state, reason) = if notified {
        ("warning", "members raised notifications")
    } else {
        ("healthy", "no member raised a notification")
    };
    calls.push(tool_call(
        SET_STATE,
        json!({"state": state, "reason": reason}),
    ));
    calls.push(tool_call(DONE, json!({})));
    calls
}

/// `call_skill(sandbox_info)` for each of the first 4 members that offer it.
fn info_calls(members: &[Value]) -> Vec<ToolCall> {
    members
        .iter()
        .filter(|m| {
            m["tools"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "sandbox_info"))
        })
        .filter_map(|m| m["source"].as_str())
        .take(4)
        .map(|source| {
            tool_call(
                CALL_SKILL,
                json!({"source": source, "tool": "sandbox_info"}),
            )
        })
        .collect()
}

/// The `call_skill` results in the conversation: sandbox id to (snapshot id, data).
fn skill_results(messages: &[Message]) -> BTreeMap<String, (String, Value)> {
    let mut out = BTreeMap::new();
    for m in messages {
        let Message::Tool { results } = m else {
            continue;
        };
        for r in results
            .iter()
            .filter(|r| r.name == CALL_SKILL && !r.is_error)
        {
            let Ok(v) = serde_json::from_str::<Value>(&r.content) else {
                continue;
            };
            if let (Some(id), Some(sb)) =
                (v["snapshot_id"].as_str(), v["data"]["sandbox_id"].as_str())
            {
                out.insert(sb.to_string(), (id.to_string(), v["data"].clone()));
            }
        }
    }
    out
}

/// One `record_insight` per notification type across the members.
fn insights(coordinator_snapshot: &str, members: &[Value]) -> Vec<ToolCall> {
    // type -> (member index, notification) in member order.
    let mut groups: BTreeMap<String, Vec<(usize, &Value)>> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        for n in m["notifications"].as_array().into_iter().flatten() {
            let kind = n["type"].as_str().unwrap_or("notification").to_string();
            groups.entry(kind).or_default().push((i, n));
        }
    }
    let mut calls = Vec::new();
    for (kind, notes) in groups {
        let mut idx: Vec<usize> = notes.iter().map(|(i, _)| *i).collect();
        idx.dedup();
        let mut observations = Vec::new();
        let mut names = Vec::new();
        let mut causes = Vec::new();
        for &i in &idx {
            let m = &members[i];
            let name = m["sandbox_id"]
                .as_str()
                .or(m["source"].as_str())
                .unwrap_or("?")
                .to_string();
            if let (Some(id), Some(p)) = (m["snapshot_id"].as_str(), m["data"].get("processes")) {
                observations.push(json!({"snapshot_id": id, "metric": "processes", "value": p}));
            }
            let events = m["events"].as_array().cloned().unwrap_or_default();
            if let Some((j, e)) = events
                .iter()
                .enumerate()
                .rev()
                .find(|(_, e)| e["event"] == WORKERS_ADDED)
            {
                observations.push(json!({
                    "snapshot_id": coordinator_snapshot,
                    "metric": format!("members.{i}.events.{j}.count"),
                    "value": e["count"],
                }));
                causes.push(format!("{} workers added to {name}", e["count"]));
            }
            names.push(name);
        }
        let severity = notes
            .iter()
            .filter_map(|(_, n)| n["severity"].as_str())
            .max_by_key(|s| match *s {
                "critical" => 2,
                "warning" => 1,
                _ => 0,
            })
            .unwrap_or("warning");
        let state = if severity == "info" {
            "observing"
        } else {
            severity
        };
        let which = names.join(", ");
        let (correlation, hypothesis, confidence) = match (idx.len(), causes.is_empty()) {
            (1, false) => (
                "causal",
                format!("{kind} in {which} was caused by {}", causes.join("; ")),
                0.9,
            ),
            (n, false) if causes.len() == n => (
                "symptomatic",
                format!(
                    "{kind} in {which}: symptoms of one cause, workers added on request ({})",
                    causes.join("; ")
                ),
                0.8,
            ),
            (n, _) if n > 1 => (
                "symptomatic",
                format!("{kind} in {which} at once: likely one cause shared by the sandboxes"),
                0.6,
            ),
            _ => (
                "temporal",
                format!("{kind} in {which}; no host event explains it"),
                0.5,
            ),
        };
        let ids: Vec<&Value> = notes.iter().map(|(_, n)| &n["id"]).collect();
        calls.push(tool_call(
            RECORD_INSIGHT,
            json!({
                "notification_ids": ids,
                "correlation": correlation,
                "hypothesis": hypothesis,
                "observations": observations,
                "state": state,
                "confidence": confidence,
            }),
        ));
    }
    calls
}

/// The answer to `question` from the members' figures: status, restarts, processes, the
/// crash reason and the newest restart and crash events the host recorded.
fn answer(
    question: &str,
    coordinator_snapshot: &str,
    members: &[Value],
    asked: &BTreeMap<String, (String, Value)>,
) -> ToolCall {
    let _ = question;
    let mut lines = Vec::new();
    let mut figures = Vec::new();
    for (i, m) in members.iter().enumerate().take(8) {
        let name = m["sandbox_id"]
            .as_str()
            .or(m["source"].as_str())
            .unwrap_or("?");
        let data = &m["data"];
        let id = m["snapshot_id"].as_str().unwrap_or_default();
        let mut parts = Vec::new();
        for metric in ["status", "restart_count", "processes", "crash_reason"] {
            if let Some(v) = data.get(metric).filter(|v| !v.is_null()) {
                let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                parts.push(format!("{metric} {shown}"));
                figures.push(json!({"snapshot_id": id, "metric": metric, "value": v}));
            }
        }
        if let Some((sid, info)) = asked.get(name)
            && let Some(at) = info["created_at"].as_str()
        {
            parts.push(format!("created at {at}"));
            figures.push(json!({"snapshot_id": sid, "metric": "created_at", "value": at}));
        }
        let events = m["events"].as_array().cloned().unwrap_or_default();
        for (name, field, words) in [
            ("sandbox.restarted", "after", "last restart after"),
            ("sandbox.crashed", "how", "last crash"),
        ] {
            if let Some((j, e)) = events
                .iter()
                .enumerate()
                .rev()
                .find(|(_, e)| e["event"] == name)
                && let Some(v) = e.get(field).and_then(Value::as_str)
            {
                parts.push(format!(
                    "{words} {v} at {}",
                    e["time"].as_str().unwrap_or("?")
                ));
                figures.push(json!({
                    "snapshot_id": coordinator_snapshot,
                    "metric": format!("members.{i}.events.{j}.{field}"),
                    "value": v,
                }));
            }
        }
        lines.push(format!("{name}: {}", parts.join(", ")));
    }
    let text = if lines.is_empty() {
        "nothing to answer from: no member was measured".to_string()
    } else {
        lines.join("; ")
    };
    tool_call(ANSWER, json!({"text": text, "figures": figures}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm::ToolResult;

    /// A conversation whose take_snapshot result is `data`, with `context`.
    fn conversation(context: Value, data: Value) -> Vec<Message> {
        vec![
            Message::User {
                text: format!(
                    "{}\n\nCurrent state: unknown",
                    json!({ "context": context })
                ),
            },
            Message::Assistant {
                text: None,
                tool_calls: vec![tool_call(TAKE_SNAPSHOT, json!({}))],
            },
            Message::Tool {
                results: vec![ToolResult {
                    call_id: "c".into(),
                    name: TAKE_SNAPSHOT.into(),
                    content: json!({"id": "cccc", "captured_at": "t", "data": data}).to_string(),
                    is_error: false,
                }],
            },
        ]
    }

    fn member(id: &str, note: &str, added: u32) -> Value {
        json!({"source": format!("sandbox {id}"), "sandbox_id": id, "snapshot_id": format!("s-{id}"),
               "data": {"processes": 15}, "notifications": [{"id": note, "type": "process_spike", "severity": "warning"}],
               "events": [{"event": "sandbox.created"}, {"event": WORKERS_ADDED, "count": added}]})
    }

    #[test]
    fn spikes_with_their_causes_make_one_symptomatic_insight_citing_figures() {
        let data = json!({"members": [member("a", "n1", 12), member("b", "n2", 12)]});
        let calls = reply(&conversation(json!({"reason": "x"}), data));
        let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, [RECORD_INSIGHT, SET_STATE, DONE]);
        let args = &calls[0].arguments;
        assert_eq!(args["correlation"], "symptomatic");
        assert_eq!(args["notification_ids"], json!(["n1", "n2"]));
        assert_eq!(args["state"], "warning");
        let observations = args["observations"].as_array().unwrap();
        assert!(
            observations
                .contains(&json!({"snapshot_id": "s-a", "metric": "processes", "value": 15}))
        );
        assert!(observations.contains(
            &json!({"snapshot_id": "cccc", "metric": "members.1.events.1.count", "value": 12})
        ));
        assert_eq!(calls[1].arguments["state"], "warning");
    }

    #[test]
    fn a_restarting_member_is_looked_at_again_later() {
        let mut m = member("r", "n1", 1);
        m["data"]["status"] = json!("restarting");
        let calls = reply(&conversation(
            json!({"reason": "x"}),
            json!({"members": [m]}),
        ));
        let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, [RECORD_INSIGHT, SCHEDULE, SET_STATE, DONE]);
        assert_eq!(calls[1].arguments["ms"], 2000);
    }

    #[test]
    fn a_question_asks_a_members_tool_first() {
        let data = json!({"members": [{"source": "sandbox q", "sandbox_id": "q", "tools": ["sandbox_info"],
            "snapshot_id": "s-q", "data": {"status": "running"}}]});
        let calls = reply(&conversation(json!({"question": "why?"}), data));
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, CALL_SKILL);
        assert_eq!(
            calls[0].arguments,
            json!({"source": "sandbox q", "tool": "sandbox_info"})
        );
    }

    #[test]
    fn a_question_is_answered_from_the_figures_and_nothing_first_is_a_snapshot() {
        assert_eq!(reply(&[])[0].name, TAKE_SNAPSHOT);
        let data = json!({"members": [{"sandbox_id": "q", "snapshot_id": "s-q",
            "data": {"status": "running", "restart_count": 1},
            "events": [{"event": "sandbox.restarted", "after": "request", "time": "T"}]}]});
        let calls = reply(&conversation(json!({"question": "why?"}), data));
        assert_eq!(calls[0].name, ANSWER);
        let text = calls[0].arguments["text"].as_str().unwrap();
        assert_eq!(
            text,
            "q: status running, restart_count 1, last restart after request at T"
        );
        assert_eq!(calls[1].arguments["state"], "healthy");
    }
}
