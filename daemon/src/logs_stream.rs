//! The daemon's side of `host logs`: one header line, the log's newest records (at most
//! [`BACKLOG_BYTES`] of the files, at most `last` lines, from `since_ms` on), then (with
//! `follow`) every new record as one JSON line ([`WireLogLine`]), until the client hangs
//! up, the sandbox is destroyed, the daemon stops or the connection is evicted.
//!
//! The daemon never reads the app's output as it is written: the sandbox's init writes the
//! bounded log file, and a follower polls that file every [`POLL_EVERY`], reading at most
//! `log_read::POLL_BYTES` a poll, so an app flooding its output costs the daemon nothing
//! while nobody follows, and a follower a bounded amount. A follower that stops reading
//! blocks only its own task.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::UnixStream;

use super::conn::write_all;
use super::events_stream::{After, hung_up};
use super::shared::Shared;
use super::slots::Slot;
use proto::control::{self as wire, Request, Response, WireError};
use proto::logline::{LogLine, WireLogLine};
use sandbox::log_read;

/// The most bytes of the log files the backlog is read from.
pub const BACKLOG_BYTES: u64 = 1 << 20;
/// How often a follower looks for new records.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// What a `logs` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsRequest {
    /// The sandbox.
    pub id: String,
    /// Keep streaming after the backlog.
    pub follow: bool,
    /// Only lines from this time on.
    pub since_ms: Option<u64>,
    /// At most this many backlog lines.
    pub last: Option<usize>,
}

/// The `logs` request in `line`, if that is what it is.
pub fn parse(line: &[u8]) -> Option<LogsRequest> {
    if !line.windows(6).any(|w| w == b"\"logs\"") {
        return None;
    }
    match serde_json::from_slice::<Request>(line) {
        Ok(Request::Logs {
            id,
            follow,
            since_ms,
            last,
        }) => Some(LogsRequest {
            id,
            follow,
            since_ms,
            last,
        }),
        _ => None,
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    wire::encode(value).unwrap_or_else(|_| b"{}\n".to_vec())
}

fn encode_line(line: &LogLine) -> Vec<u8> {
    encode(&WireLogLine::from(line))
}

/// Streams the log of `req.id` on `stream`.
pub async fn serve(stream: &UnixStream, sh: &Arc<Shared>, slot: &Slot, req: LogsRequest) -> After {
    let timeout = sh.limits.request_timeout;
    let place = match sh.manager.log_place(&req.id) {
        Ok(place) => place,
        Err(e) => {
            let line = encode(&Response::Error(WireError::from(&e)));
            return match tokio::time::timeout(timeout, write_all(stream, &line)).await {
                Ok(Ok(())) => After::Continue,
                _ => After::Close,
            };
        }
    };
    let dir = place.dir.clone();
    let since = req.since_ms.unwrap_or(0);
    let read =
        tokio::task::spawn_blocking(move || log_read::read(&dir, since, BACKLOG_BYTES)).await;
    let Ok((mut backlog, mut follower)) = read else {
        return After::Close;
    };
    if let Some(last) = req.last {
        let over = backlog.len().saturating_sub(last);
        backlog.drain(..over);
    }
    let header = Response::Ok(json!({
        "stream": "logs",
        "id": req.id,
        "backlog": backlog.len(),
        "live": place.live,
    }));
    let mut stop = sh.stop.clone();
    let written = tokio::time::timeout(timeout, async {
        write_all(stream, &encode(&header)).await?;
        for line in &backlog {
            write_all(stream, &encode_line(line)).await?;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    drop(backlog);
    if !matches!(written, Ok(Ok(()))) {
        return After::Close;
    }
    if !req.follow || !place.live {
        return After::Continue;
    }
    slot.idle();
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL_EVERY) => {}
            () = slot.evicted.notified() => return After::Close,
            _ = stop.changed() => return After::Close,
            () = hung_up(stream) => return After::Close,
        }
        // Destroyed meanwhile: read what its log got last (now kept elsewhere), then end.
        let ended = match sh.manager.log_place(&req.id) {
            Ok(now) if now.live && now.dir == place.dir => None,
            Ok(now) => Some(Some(now.dir)),
            Err(_) => Some(None),
        };
        if let Some(Some(kept)) = &ended {
            follower.moved_to(kept);
        }
        let polled = tokio::task::spawn_blocking(move || {
            let lines = follower.poll();
            (lines, follower)
        })
        .await;
        let Ok((lines, back)) = polled else {
            return After::Close;
        };
        follower = back;
        for line in &lines {
            let bytes = encode_line(line);
            let sent = tokio::select! {
                done = write_all(stream, &bytes) => done.is_ok(),
                () = slot.evicted.notified() => false,
                _ = stop.changed() => false,
            };
            if !sent {
                return After::Close;
            }
        }
        if ended.is_some() {
            let line = encode(&json!({"ended": "the sandbox was destroyed"}));
            let _ = tokio::time::timeout(timeout, write_all(stream, &line)).await;
            return After::Close;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_logs_requests_are_log_streams() {
        assert_eq!(
            parse(br#"{"op":"logs","id":"a","follow":true,"since_ms":5}"#),
            Some(LogsRequest {
                id: "a".into(),
                follow: true,
                since_ms: Some(5),
                last: None
            })
        );
        assert_eq!(parse(br#"{"op":"events"}"#), None);
        assert_eq!(parse(br#"{"op":"call","id":"logs","function":"f"}"#), None);
    }
}
