//! Every node's events on the fleet's stream: the agent follows its daemon's event stream on
//! the control socket (as `host events --follow` does) and publishes each event, with a
//! `node` field added, on `events.<node>` (stream `SANDBOX_EVENTS`); the client reads the
//! newest of them back (`host events --cluster`).

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use proto::control::{Request, take_line};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::error::FleetError;
use crate::lattice::{self, EVENTS, Lattice};
use crate::node::Node;

/// Largest event published (the stream's message bound).
const MAX_EVENT: usize = 64 * 1024 - 1024;

/// Events the daemon's ring replays on each (re)connection, so that none made before the
/// forwarder was connected (the node joins before its daemon listens) or while it was away
/// is lost; those already forwarded are skipped by their sequence number.
const REPLAY: usize = 1000;

/// Forwards the daemon's events for ever, reconnecting a second after the stream ends.
pub(crate) async fn forward(node: Arc<Node>) {
    // The daemon's sequence number of the last event published (the daemon lives in this
    // process, so its numbering never restarts under us).
    let mut published = 0u64;
    loop {
        if let Err(e) = follow(&node, &mut published).await {
            tracing::debug!(error = %e, "fleet: event forwarding paused");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub(crate) async fn read_line(
    reader: &mut BufReader<UnixStream>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(None);
        }
        let (used, done) = take_line(&mut line, chunk)?;
        reader.consume(used);
        if done {
            return Ok(Some(line));
        }
    }
}

/// Connects to `node`'s daemon (refusing a server of another uid than ours or root).
pub(crate) async fn connect(node: &Node) -> Result<BufReader<UnixStream>, std::io::Error> {
    let stream = UnixStream::connect(node.daemon.path()).await?;
    let me = std::fs::metadata("/proc/self")?.uid();
    let uid = stream.peer_cred()?.uid();
    if uid != me && uid != 0 {
        return Err(std::io::Error::other(format!(
            "the socket's server runs as uid {uid}"
        )));
    }
    Ok(BufReader::new(stream))
}

async fn follow(node: &Node, published: &mut u64) -> Result<(), std::io::Error> {
    let mut reader = connect(node).await?;
    let request = Request::Events {
        id: None,
        follow: true,
        last: Some(REPLAY),
    };
    let line = proto::control::encode_request(&request, 0)?;
    reader.get_mut().write_all(&line).await?;
    let subject = lattice::events_subject(&node.name);
    // The header, then one event a line.
    read_line(&mut reader).await?;
    while let Some(line) = read_line(&mut reader).await? {
        let Ok(mut event) = serde_json::from_slice::<Value>(line.trim_ascii()) else {
            continue;
        };
        let Some(map) = event.as_object_mut() else {
            continue;
        };
        if map.contains_key("lagged") {
            continue;
        }
        match map.get("seq").and_then(Value::as_u64) {
            Some(seq) if seq <= *published => continue,
            Some(seq) => *published = seq,
            None => {}
        }
        map.insert("node".into(), node.name.clone().into());
        let bytes = event.to_string();
        if bytes.len() > MAX_EVENT {
            continue;
        }
        if let Err(e) = node.lattice.js.publish(subject.clone(), bytes.into()).await {
            tracing::warn!(error = %e, "fleet: event not published");
        }
    }
    Ok(())
}

/// The newest `last` events of the fleet (about sandbox `id` when given), oldest first; at
/// most 2 000 of the stream's newest messages are looked at.
pub async fn newest(
    lattice: &Lattice,
    id: Option<&str>,
    last: usize,
) -> Result<Vec<Value>, FleetError> {
    let (stream, first, newest) = open(lattice).await?;
    Ok(newest_upto(&stream, id, last, first, newest).await)
}

/// The events stream, its first and its last sequence number.
pub(crate) async fn open(lattice: &Lattice) -> Result<(Stream, u64, u64), FleetError> {
    let mut stream = lattice
        .js
        .get_stream(EVENTS)
        .await
        .map_err(|e| FleetError::js(format!("opening stream {EVENTS}"), e))?;
    let state = stream
        .info()
        .await
        .map_err(|e| FleetError::js(format!("reading stream {EVENTS}"), e))?
        .state
        .clone();
    Ok((stream, state.first_sequence, state.last_sequence))
}

/// [`newest`] among the messages of sequence `first..=upto`.
pub(crate) async fn newest_upto(
    stream: &Stream,
    id: Option<&str>,
    last: usize,
    first: u64,
    upto: u64,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut seq = upto;
    let mut looked = 0;
    while seq >= first.max(1) && out.len() < last && looked < 2_000 {
        looked += 1;
        if let Ok(message) = stream.get_raw_message(seq).await
            && let Ok(event) = serde_json::from_slice::<Value>(&message.payload)
            && id.is_none_or(|id| event["sandbox"] == id)
        {
            out.push(event);
        }
        seq -= 1;
    }
    out.reverse();
    out
}
