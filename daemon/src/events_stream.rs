//! The daemon's side of `host events`: one header line, the ring's backlog, then (with
//! `follow`) every new event as one JSON line, until the client hangs up, the daemon stops or
//! the connection is evicted.
//!
//! Memory: the daemon holds nothing per follower beyond its broadcast receiver (the channel's
//! slots are shared and bounded, `events::DEFAULT_CHANNEL`) and the one line being written.
//! A follower that stops reading blocks only its own task on a full socket; meanwhile the
//! channel moves on, and when the follower reads again it gets `{"lagged": N}` and continues
//! with the newest events. The emitter never waits for it.
//!
//! Slots: while following, the connection counts as idle (see `slots`), so a new client can
//! evict the longest-idle follower when `--max-connections` are taken: a follower is told so
//! with one `busy` line and closed, like any idle connection.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::UnixStream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::conn::write_all;
use super::shared::Shared;
use super::slots::Slot;
use proto::control::{self as wire, Request, Response, WireError};
use sandbox::events::Event;

/// What an `events` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsRequest {
    /// Only events about this sandbox.
    pub id: Option<String>,
    /// Keep streaming after the backlog.
    pub follow: bool,
    /// At most this many backlog events.
    pub last: Option<usize>,
}

/// What the connection does after the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Read the next request (the backlog was all that was asked for).
    Continue,
    /// Close the connection.
    Close,
}

/// The `events` request in `line`, if that is what it is.
pub fn parse(line: &[u8]) -> Option<EventsRequest> {
    // Most lines are other requests, some of them long (a reload's source): parse only lines
    // that can be this one.
    if !line.windows(8).any(|w| w == b"\"events\"") {
        return None;
    }
    match serde_json::from_slice::<Request>(line) {
        Ok(Request::Events { id, follow, last }) => Some(EventsRequest { id, follow, last }),
        _ => None,
    }
}

/// Why a write ended early.
enum Stop {
    /// The daemon is stopping.
    Daemon,
    /// A new connection took this one's slot.
    Evicted,
    /// The client went away or the write failed.
    Gone,
}

/// Streams events on `stream` as `req` asks.
pub async fn serve(
    stream: &UnixStream,
    sh: &Arc<Shared>,
    slot: &Slot,
    req: EventsRequest,
) -> After {
    let id = req.id.clone();
    let keep = move |e: &Event| match &id {
        Some(id) => e.sandbox.as_deref() == Some(id.as_str()),
        None => true,
    };
    let mut sub = sh
        .manager
        .events()
        .subscribe(req.last.unwrap_or(usize::MAX), &keep);
    let mut stop = sh.stop.clone();
    let header = Response::Ok(json!({"stream": "events", "backlog": sub.backlog.len()}));
    // The backlog is written like an answer: within the request deadline.
    let timeout = sh.limits.request_timeout;
    let backlog = std::mem::take(&mut sub.backlog);
    let written = tokio::time::timeout(timeout, async {
        send(stream, &encode(&header), slot, &mut stop).await?;
        for event in &backlog {
            send(stream, &encode(&**event), slot, &mut stop).await?;
        }
        Ok::<(), Stop>(())
    })
    .await;
    drop(backlog);
    match written {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return ended(stream, sh, why).await,
        Err(_) => return After::Close,
    }
    if !req.follow {
        return After::Continue;
    }
    // Following is waiting, not serving: evictable like an idle connection.
    slot.idle();
    loop {
        let line = tokio::select! {
            got = sub.live.recv() => match got {
                Ok(event) if keep(&event) => encode(&*event),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => encode(&json!({"lagged": n})),
                Err(RecvError::Closed) => return After::Close,
            },
            () = slot.evicted.notified() => return ended(stream, sh, Stop::Evicted).await,
            _ = stop.changed() => return After::Close,
            () = hung_up(stream) => return After::Close,
        };
        if let Err(why) = send(stream, &line, slot, &mut stop).await {
            return ended(stream, sh, why).await;
        }
    }
}

/// Tells an evicted follower why (best effort, briefly) and closes.
async fn ended(stream: &UnixStream, sh: &Shared, why: Stop) -> After {
    if let Stop::Evicted = why {
        let max = sh.limits.max_connections;
        let line = encode(&Response::Error(WireError::new(
            wire::BUSY,
            format!(
                "closed: the daemon serves at most {max} connections and this events follower \
                 was the longest idle"
            ),
        )));
        let _ = tokio::time::timeout(Duration::from_millis(200), write_all(stream, &line)).await;
    }
    After::Close
}

/// Writes one line, giving up when the daemon stops or the slot is taken.
async fn send(
    stream: &UnixStream,
    line: &[u8],
    slot: &Slot,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Stop> {
    if *stop.borrow() {
        return Err(Stop::Daemon);
    }
    tokio::select! {
        done = write_all(stream, line) => done.map_err(|_| Stop::Gone),
        () = slot.evicted.notified() => Err(Stop::Evicted),
        _ = stop.changed() => Err(Stop::Daemon),
    }
}

/// Returns when the client closes its end (what it sends meanwhile is read and dropped: a
/// follower has nothing more to ask).
pub(crate) async fn hung_up(stream: &UnixStream) {
    let mut buf = [0u8; 1024];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Events and markers are plain data: encoding cannot fail short of a bug.
    wire::encode(value).unwrap_or_else(|_| b"{}\n".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_requests_are_streams() {
        assert_eq!(
            parse(br#"{"op":"events","id":"a","follow":true}"#),
            Some(EventsRequest {
                id: Some("a".into()),
                follow: true,
                last: None
            })
        );
        assert_eq!(
            parse(br#"{"op":"events"}"#),
            Some(EventsRequest {
                id: None,
                follow: false,
                last: None
            })
        );
        assert_eq!(parse(br#"{"op":"list"}"#), None);
        assert_eq!(parse(b"garbage"), None);
    }
}
