//! The routed requests that are more than one request and one answer: a sandbox's log
//! backlog (`host logs --cluster`, collected by the owner node from its daemon's `logs`
//! stream, bounded to fit one NATS message), `host destroy --cluster --purge` (destroy on the
//! owner, then remove the kept log), and `host ask --cluster QUESTION` without an id (every
//! live node answers about its own sandboxes).
//!
//! A destroyed sandbox has no spec any more, so its kept log is looked for on every live node.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use proto::ask::AskRequest;
use proto::control::{BAD_REQUEST, Request, Response, WireError};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use crate::client::{FleetClient, block_on};
use crate::connect::{ConnectArgs, check_name};
use crate::error::FleetError;
use crate::events;
use crate::node::Node;
use crate::wire::NO_ANSWER;

/// Most bytes of log lines one answer carries (the oldest go first past it), well under
/// NATS's default `max_payload` of 1 MiB.
pub const MAX_LOG_ANSWER: usize = 768 * 1024;

/// How long a node may take to read a log's backlog from its daemon.
const LOG_READ: Duration = Duration::from_secs(20);

fn not_found(message: String) -> FleetError {
    FleetError::Remote(WireError::new("not_found", message))
}

impl Node {
    /// Answers `logs`: the backlog of `id`'s log as `{"id","live","lines":[...],
    /// "dropped":N}` (`dropped`: the oldest lines left out to stay under
    /// [`MAX_LOG_ANSWER`]). Following is not routed.
    pub(crate) async fn logs(
        &self,
        id: String,
        follow: bool,
        since_ms: Option<u64>,
        last: Option<usize>,
    ) -> Result<Value, WireError> {
        if follow {
            return Err(WireError::new(
                BAD_REQUEST,
                "logs --follow is not routed in a fleet (the backlog is)",
            ));
        }
        check_name("sandbox", &id).map_err(|e| WireError::new(BAD_REQUEST, e.to_string()))?;
        let request = Request::Logs {
            id: id.clone(),
            follow: false,
            since_ms,
            last,
        };
        let daemon = |e: std::io::Error| {
            WireError::new(
                NO_ANSWER,
                format!("this node's daemon, reading the log of {id}: {e}"),
            )
        };
        let read = async {
            let mut reader = events::connect(self).await.map_err(daemon)?;
            let line = proto::control::encode_request(&request, 0).map_err(daemon)?;
            reader.get_mut().write_all(&line).await.map_err(daemon)?;
            let header = events::read_line(&mut reader)
                .await
                .map_err(daemon)?
                .unwrap_or_default();
            let header = match serde_json::from_slice::<Response>(header.trim_ascii()) {
                Ok(Response::Ok(v)) => v,
                Ok(Response::Error(e)) => return Err(e),
                Err(e) => return Err(daemon(std::io::Error::other(e))),
            };
            let backlog = header["backlog"].as_u64().unwrap_or(0);
            let mut kept = Newest::new(MAX_LOG_ANSWER);
            for _ in 0..backlog {
                let Some(line) = events::read_line(&mut reader).await.map_err(daemon)? else {
                    break;
                };
                let value: Value = serde_json::from_slice(line.trim_ascii())
                    .map_err(|e| daemon(std::io::Error::other(e)))?;
                if let Some(error) = value.get("error") {
                    return Err(serde_json::from_value(error.clone())
                        .unwrap_or_else(|e| WireError::new(NO_ANSWER, e.to_string())));
                }
                kept.push(line.len() + 1, value);
            }
            let (lines, dropped) = kept.finish();
            Ok(json!({"id": id, "live": header["live"], "lines": lines, "dropped": dropped}))
        };
        tokio::time::timeout(LOG_READ, read)
            .await
            .unwrap_or_else(|_| Err(daemon(std::io::Error::other("no answer in time"))))
    }
}

/// The newest items that fit in a byte budget, and how many older ones went.
#[derive(Debug)]
struct Newest {
    budget: usize,
    bytes: usize,
    dropped: u64,
    items: VecDeque<(usize, Value)>,
}

impl Newest {
    fn new(budget: usize) -> Newest {
        Newest {
            budget,
            bytes: 0,
            dropped: 0,
            items: VecDeque::new(),
        }
    }

    /// Adds an item of `len` bytes; the oldest go while the total is over the budget.
    fn push(&mut self, len: usize, value: Value) {
        self.bytes += len;
        self.items.push_back((len, value));
        while self.bytes > self.budget {
            let Some((len, _)) = self.items.pop_front() else {
                break;
            };
            self.bytes -= len;
            self.dropped += 1;
        }
    }

    fn finish(self) -> (Vec<Value>, u64) {
        (
            self.items.into_iter().map(|(_, v)| v).collect(),
            self.dropped,
        )
    }
}

/// The backlog of `id`'s log (see [`Node::logs`]) from its owner, or, for a sandbox no
/// longer in the fleet, from the live node that keeps its log.
pub async fn logs(
    client: &FleetClient,
    id: &str,
    since_ms: Option<u64>,
    last: Option<usize>,
) -> Result<Value, FleetError> {
    check_name("sandbox", id)?;
    let request = Request::Logs {
        id: id.to_string(),
        follow: false,
        since_ms,
        last,
    };
    if let Some((record, _)) = client.lattice().spec(id).await? {
        return client.send(&record.node, &request).await;
    }
    for node in client.lattice().live_nodes().await?.into_keys() {
        match client.send(&node, &request).await {
            Ok(answer) => return Ok(answer),
            Err(e) if e.kind() == "not_found" => {}
            Err(e) => tracing::warn!(node, error = %e, "fleet: a node did not answer logs"),
        }
    }
    Err(not_found(format!(
        "sandbox {id} not found in the fleet, and no live node keeps a log of it"
    )))
}

/// `destroy --purge`: destroys `id` on its owner, then removes its kept log (on the owner,
/// or on every live node for a sandbox destroyed already); says `(destroyed, purged)`.
pub async fn destroy_purge(client: &FleetClient, id: &str) -> Result<(bool, bool), FleetError> {
    check_name("sandbox", id)?;
    let owner = client.lattice().spec(id).await?.map(|(r, _)| r.node);
    let mut destroyed = false;
    if let Some(node) = &owner {
        match client.send(node, &Request::Destroy { id: id.into() }).await {
            Ok(_) => destroyed = true,
            Err(e) if e.kind() == "not_found" => {}
            Err(e) => return Err(e),
        }
    }
    let nodes: Vec<String> = match owner {
        Some(node) => vec![node],
        None => client.lattice().live_nodes().await?.into_keys().collect(),
    };
    let mut purged = false;
    for node in nodes {
        match client
            .send(&node, &Request::PurgeLog { id: id.into() })
            .await
        {
            Ok(answer) => purged |= answer["purged"].as_bool().unwrap_or(false),
            Err(e) => tracing::warn!(node, error = %e, "fleet: a node did not purge"),
        }
    }
    if !destroyed && !purged {
        return Err(not_found(format!(
            "sandbox {id} not found in the fleet, and no live node keeps a log of it"
        )));
    }
    Ok((destroyed, purged))
}

/// `ask` without an id: every live node's answer (or only `only`'s) about its own
/// sandboxes, by node.
pub async fn ask_all(
    client: &FleetClient,
    only: Option<&str>,
    ask: AskRequest,
) -> Result<BTreeMap<String, Result<Value, FleetError>>, FleetError> {
    let request = Request::Ask(AskRequest { id: None, ..ask });
    let mut tasks = JoinSet::new();
    for node in client.lattice().live_nodes().await?.into_keys() {
        if only.is_some_and(|only| only != node) {
            continue;
        }
        let (client, request) = (client.clone(), request.clone());
        tasks.spawn(async move {
            let answer = client.send(&node, &request).await;
            (node, answer)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((node, answer)) = joined {
            out.insert(node, answer);
        }
    }
    Ok(out)
}

/// Connects and reads `id`'s log backlog (for `host logs --cluster`).
pub fn logs_blocking(
    args: &ConnectArgs,
    id: &str,
    since_ms: Option<u64>,
    last: Option<usize>,
) -> Result<Value, FleetError> {
    block_on(async { logs(&FleetClient::connect(args).await?, id, since_ms, last).await })?
}

/// Connects and destroys `id` with its log (for `host destroy --cluster --purge`).
pub fn destroy_purge_blocking(args: &ConnectArgs, id: &str) -> Result<(bool, bool), FleetError> {
    block_on(async { destroy_purge(&FleetClient::connect(args).await?, id).await })?
}

/// Connects and asks every live node, or only `only` (for `host ask --cluster QUESTION`).
pub fn ask_all_blocking(
    args: &ConnectArgs,
    only: Option<&str>,
    ask: AskRequest,
) -> Result<BTreeMap<String, Result<Value, FleetError>>, FleetError> {
    block_on(async { ask_all(&FleetClient::connect(args).await?, only, ask).await })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_answer_keeps_the_newest_lines_that_fit() {
        let mut kept = Newest::new(10);
        for i in 0..5 {
            kept.push(4, json!(i));
        }
        assert_eq!(kept.finish(), (vec![json!(3), json!(4)], 3));
        let mut huge = Newest::new(10);
        huge.push(11, json!("one line over the budget"));
        assert_eq!(huge.finish(), (vec![], 1));
    }
}
