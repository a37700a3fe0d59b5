//! The routed requests that are more than one request and one answer: a sandbox's log
//! backlog (`host logs --cluster`, collected by the owner node from its daemon's `logs`
//! stream, bounded to fit one NATS message; `--follow` asks again every half second for the
//! lines from the newest time seen on), `host destroy --cluster --purge` (destroy on the
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

/// How often a followed log is asked for its new lines.
pub const LOG_POLL: Duration = Duration::from_millis(500);

/// Milliseconds since the Unix epoch of a log line's `time`, when it has one.
fn line_ms(line: &Value) -> Option<u64> {
    let time = humantime::parse_rfc3339(line["time"].as_str()?).ok()?;
    Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// How far before the newest time seen a followed log is asked from again: the times of a
/// sandbox's lines are not in the log's order (its stdout and stderr are read apart).
const REORDER_MS: u64 = 2_000;

/// Lines of the last answer remembered to find where it ended in the next.
const TAIL: usize = 32;

/// Where a followed log is: the newest time seen and the last lines of the last answer.
#[derive(Debug, Default)]
struct Cursor {
    newest: Option<u64>,
    tail: Vec<Value>,
    polls: u64,
}

impl Cursor {
    /// From when the next answer is asked: [`REORDER_MS`] before the newest time seen, or
    /// `given` before anything was.
    fn since(&self, given: Option<u64>) -> Option<u64> {
        self.newest.map(|n| n.saturating_sub(REORDER_MS)).or(given)
    }

    /// The lines of one answer not shown yet: those after where the last answer's lines end
    /// in it (the log only grows at its end; the longest run of the last answer's final
    /// lines found, the latest place of a whole run). Nothing found: every line.
    fn new_lines<'a>(&mut self, lines: &'a [Value]) -> &'a [Value] {
        let start = if self.polls == 0 {
            0
        } else {
            overlap(&self.tail, lines).map_or(0, |end| end + 1)
        };
        self.polls += 1;
        if !lines.is_empty() {
            self.tail = lines[lines.len().saturating_sub(TAIL)..].to_vec();
        }
        for line in lines {
            if let Some(t) = line_ms(line)
                && self.newest.is_none_or(|n| t > n)
            {
                self.newest = Some(t);
            }
        }
        &lines[start..]
    }
}

/// Where in `lines` the run `tail` ends: the place of the longest run of `tail`'s final
/// lines (the latest of those with the whole of `tail`).
fn overlap(tail: &[Value], lines: &[Value]) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for end in (0..lines.len()).rev() {
        let mut k = 0;
        while k < tail.len() && k <= end && lines[end - k] == tail[tail.len() - 1 - k] {
            k += 1;
        }
        if k > 0 && best.is_none_or(|(longest, _)| k > longest) {
            best = Some((k, end));
        }
        if k == tail.len() {
            break;
        }
    }
    best.map(|(_, end)| end)
}

/// `logs --follow`: [`logs`] (the newest `last`, from `since_ms`), then every
/// [`LOG_POLL`] the lines from a little before the newest time seen on, each given to
/// `each` once (see `Cursor`), until the sandbox is destroyed. When an answer left lines out (`dropped`:
/// more was written between two polls than one answer carries), `gap` is told how many.
pub async fn follow_logs(
    client: &FleetClient,
    id: &str,
    since_ms: Option<u64>,
    last: Option<usize>,
    mut each: impl FnMut(&Value),
    mut gap: impl FnMut(u64),
) -> Result<(), FleetError> {
    let mut cursor = Cursor::default();
    loop {
        let last = if cursor.polls == 0 { last } else { None };
        let answer = logs(client, id, cursor.since(since_ms), last).await?;
        let dropped = answer["dropped"].as_u64().unwrap_or(0);
        if dropped > 0 {
            gap(dropped);
        }
        let lines = answer["lines"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        for line in cursor.new_lines(lines) {
            each(line);
        }
        if answer["live"] == false {
            return Ok(());
        }
        tokio::time::sleep(LOG_POLL).await;
    }
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

/// Connects and follows `id`'s log (for `host logs --follow --cluster`).
pub fn follow_logs_blocking(
    args: &ConnectArgs,
    id: &str,
    since_ms: Option<u64>,
    last: Option<usize>,
    each: impl FnMut(&Value),
    gap: impl FnMut(u64),
) -> Result<(), FleetError> {
    block_on(async {
        let client = FleetClient::connect(args).await?;
        follow_logs(&client, id, since_ms, last, each, gap).await
    })?
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

    #[test]
    fn a_followed_log_shows_each_line_once() {
        let line = |time: &str, text: &str| json!({"time": time, "text": text});
        let texts = |lines: &[Value]| -> Vec<String> {
            lines
                .iter()
                .map(|l| l["text"].as_str().unwrap().to_string())
                .collect()
        };
        let (t1, t2) = ("2026-12-07T10:00:00.001Z", "2026-12-07T10:00:00.002Z");
        let mut cursor = Cursor::default();
        // Cut by --last: its last line only.
        assert_eq!(texts(cursor.new_lines(&[line(t2, "b")])), ["b"]);
        assert_eq!(cursor.since(None), Some(1_796_637_600_002 - REORDER_MS));
        // Asked again from before: the old lines, b, then the new ones (an earlier time
        // after a later one, as stdout and stderr are read apart).
        let next = [line(t1, "a"), line(t2, "b"), line(t2, "c"), line(t1, "d")];
        assert_eq!(texts(cursor.new_lines(&next)), ["c", "d"]);
        assert!(cursor.new_lines(&next).is_empty());
        // Repeated lines: the latest place of the whole run.
        let mut cursor = Cursor::default();
        let same = [line(t1, "x"), line(t1, "x")];
        assert_eq!(cursor.new_lines(&same).len(), 2);
        let more = [line(t1, "x"), line(t1, "x"), line(t1, "y")];
        assert_eq!(texts(cursor.new_lines(&more)), ["y"]);
        // Nothing of the last answer left (a gap): every line.
        let other = [line(t2, "p"), line(t2, "q")];
        assert_eq!(cursor.new_lines(&other).len(), 2);
    }
}
