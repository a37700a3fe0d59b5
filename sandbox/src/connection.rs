//! The host's end of one of a sandbox's sockets (init's control plane or the app process's
//! data plane): async requests with ids, matched replies, and events, over the framing in
//! `protocol`.
//!
//! Frames are written whole: a caller writes its frame itself (one non-blocking `write`, no
//! task switch on a call's path) when nothing is queued and the socket takes all of it;
//! otherwise the frame, or its unwritten rest, is queued for the connection's writer task,
//! and later frames queue behind it. A request whose caller gives up (a deadline, a cancelled
//! `select!`) can therefore never leave half a frame on the socket, and a peer that stops
//! reading makes requests time out instead of blocking every later one. A pending entry is
//! removed however its request ends.

use std::collections::HashMap;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use std::collections::VecDeque;

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Notify, oneshot};

use proto::runner::{
    self as protocol, Body, ErrorKind, Event, Request, RequestFrame, Response, RunnerError,
};

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnError {
    /// The peer closed the socket (it died).
    Closed,
    /// No answer within the timeout.
    Timeout,
}

/// A reply: the peer's answer, or its typed error.
pub type Reply = Result<serde_json::Value, RunnerError>;

type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Reply>>>>>;

/// Frames queued for the writer task before a request waits for room.
const WRITE_QUEUE: usize = 256;

/// A connection to one peer.
#[derive(Debug)]
pub struct Connection {
    writer: Arc<Writer>,
    pending: Pending,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The writer task sends what is queued, then ends.
        self.writer
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.writer.wake.notify_one();
    }
}

/// The write side: the socket, the frames waiting for it, and the writer task's wake-ups.
#[derive(Debug)]
struct Writer {
    half: OwnedWriteHalf,
    queue: Mutex<WriteQueue>,
    /// Wakes the writer task: a frame was queued, or the connection dropped.
    wake: Notify,
    /// Wakes senders waiting for room in a full queue.
    room: Notify,
}

#[derive(Debug, Default)]
struct WriteQueue {
    frames: VecDeque<Vec<u8>>,
    /// Bytes of the first frame already written.
    offset: usize,
    /// The connection was dropped: no new frames.
    closed: bool,
    /// The socket failed: nothing more can be written.
    broken: bool,
}

impl Writer {
    /// Writes `frame` now when nothing is queued and the socket takes it whole; else queues
    /// it (or its unwritten rest) for the writer task, waiting while the queue is full.
    async fn send(&self, frame: Vec<u8>) -> Result<(), ConnError> {
        loop {
            let room = self.room.notified();
            {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.broken {
                    return Err(ConnError::Closed);
                }
                if q.frames.is_empty() {
                    let written = match self.half.try_write(&frame) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                        Err(_) => {
                            q.broken = true;
                            return Err(ConnError::Closed);
                        }
                    };
                    if written < frame.len() {
                        q.frames.push_back(frame);
                        q.offset = written;
                        self.wake.notify_one();
                    }
                    return Ok(());
                }
                if q.frames.len() < WRITE_QUEUE {
                    q.frames.push_back(frame);
                    self.wake.notify_one();
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// The writer task: writes queued frames in order as the socket takes them.
    async fn run(self: Arc<Self>) {
        loop {
            let (empty, closed) = loop {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let q = &mut *q;
                let Some(front) = q.frames.front() else {
                    break (true, q.closed);
                };
                match self.half.try_write(&front[q.offset..]) {
                    Ok(n) => {
                        q.offset += n;
                        if q.offset == front.len() {
                            q.frames.pop_front();
                            q.offset = 0;
                            self.room.notify_waiters();
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break (false, false),
                    Err(_) => {
                        q.broken = true;
                        q.frames.clear();
                        self.room.notify_waiters();
                        return;
                    }
                }
            };
            if empty && closed {
                return;
            }
            if empty {
                self.wake.notified().await;
            } else if self.half.writable().await.is_err() {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                q.broken = true;
                q.frames.clear();
                self.room.notify_waiters();
                return;
            }
        }
    }
}

/// A request on its way: await it for the reply (dropping it forgets the request).
#[derive(Debug)]
pub struct InFlight {
    reply: oneshot::Receiver<Reply>,
    _entry: PendingEntry,
}

impl std::future::Future for InFlight {
    type Output = Result<Reply, ConnError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.reply)
            .poll(cx)
            .map(|r| r.map_err(|_| ConnError::Closed))
    }
}

/// Removes its id from the pending map when dropped, whether the reply came or not.
#[derive(Debug)]
struct PendingEntry {
    pending: Pending,
    id: u64,
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        if let Some(map) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            map.remove(&self.id);
        }
    }
}

impl Connection {
    /// Wraps the host's end of a socketpair. Events are handed to `on_event` in the reader
    /// task, in socket order, so an event the peer sent before a reply has been handled when
    /// that reply arrives. A frame that does not parse is skipped; a frame over the size
    /// limit ends the connection (it cannot be skipped reliably). When the peer closes the
    /// socket, `closed` fires after every pending request has failed.
    pub fn new(
        sock: StdUnixStream,
        on_event: impl Fn(Event) + Send + 'static,
        closed: oneshot::Sender<()>,
    ) -> std::io::Result<Connection> {
        sock.set_nonblocking(true)?;
        let (reader, half) = UnixStream::from_std(sock)?.into_split();
        let writer = Arc::new(Writer {
            half,
            queue: Mutex::new(WriteQueue::default()),
            wake: Notify::new(),
            room: Notify::new(),
        });
        tokio::spawn(Arc::clone(&writer).run());
        // Buffered: a frame's length and body, and often the next frames, in one read.
        let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, reader);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let pending_reader = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut len = [0u8; 4];
            let mut skipped = 0u64;
            loop {
                if reader.read_exact(&mut len).await.is_err() {
                    break;
                }
                let Ok(n) = protocol::check_len(u32::from_le_bytes(len)) else {
                    tracing::warn!("peer sent a frame over the size limit; closing");
                    break;
                };
                let mut buf = vec![0u8; n];
                if reader.read_exact(&mut buf).await.is_err() {
                    break;
                }
                let Ok(response) = serde_json::from_slice::<Response>(&buf) else {
                    skipped += 1;
                    if skipped.is_power_of_two() {
                        tracing::warn!(skipped, "peer sent unparseable frames; skipped");
                    }
                    continue;
                };
                let result = match response.body {
                    Body::Event(event) => {
                        on_event(event);
                        continue;
                    }
                    Body::Ok(value) => Ok(value),
                    Body::Err(err) => Err(err),
                };
                let waiter = pending_reader
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                    .and_then(|map| map.remove(&response.id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(result);
                }
            }
            // Dropping the senders fails every waiter with Closed; later requests fail fast.
            pending_reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let _ = closed.send(());
        });
        Ok(Connection { writer, pending })
    }

    /// Queues `request` whole for the writer; the returned [`InFlight`] resolves to the reply.
    /// A request too large for a frame is answered at once with a `bad_request` error.
    pub async fn send(&self, request: Request) -> Result<InFlight, ConnError> {
        let (tx, rx) = oneshot::channel();
        // Each request's id is random and unused, never the next of a sequence: a peer can
        // answer only the requests it was sent, not write answers ahead to ids it expects. (The
        // app process runs attacker code at `dlopen`, before it answers `load`; with ids
        // counted from 1, its forged answers queued in the socket were taken for the replies
        // to `load` and to the first calls.)
        let id = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let Some(map) = pending.as_mut() else {
                return Err(ConnError::Closed);
            };
            let id = loop {
                let id = rand::random::<u64>();
                if id != 0 && !map.contains_key(&id) {
                    break id;
                }
            };
            map.insert(id, tx);
            id
        };
        let entry = PendingEntry {
            pending: Arc::clone(&self.pending),
            id,
        };
        let bytes = match protocol::encode(&RequestFrame { id, request }) {
            Ok(bytes) => bytes,
            Err(e) => {
                let refusal = Err(RunnerError {
                    kind: ErrorKind::BadRequest,
                    message: format!("request refused: {e} ({} bytes)", protocol::MAX_FRAME),
                });
                if let Some(tx) = self
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                    .and_then(|map| map.remove(&id))
                {
                    let _ = tx.send(refusal);
                }
                return Ok(InFlight {
                    reply: rx,
                    _entry: entry,
                });
            }
        };
        self.writer.send(bytes).await?;
        Ok(InFlight {
            reply: rx,
            _entry: entry,
        })
    }

    /// Sends `request` and waits for its reply, both within `timeout`.
    pub async fn request(&self, request: Request, timeout: Duration) -> Result<Reply, ConnError> {
        match tokio::time::timeout(timeout, async { self.send(request).await?.await }).await {
            Ok(result) => result,
            Err(_) => Err(ConnError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::runner::{Body, Response};

    fn ignore(_: Event) {}

    #[tokio::test]
    async fn a_peer_that_stops_reading_times_requests_out_and_blocks_no_later_one() {
        let (host, _peer) = StdUnixStream::pair().unwrap();
        let (closed, _) = oneshot::channel();
        let conn = Connection::new(host, ignore, closed).unwrap();
        let big = "x".repeat(1 << 20);
        // The socket buffer fills after a few frames; every request must still end at its
        // deadline (before, the write sat outside the timeout and blocked for ever).
        for _ in 0..8 {
            let request = Request::Call {
                function: "f".into(),
                args: big.clone(),
            };
            let outcome = tokio::time::timeout(
                Duration::from_secs(5),
                conn.request(request, Duration::from_millis(100)),
            )
            .await
            .expect("a request outlived its deadline");
            assert_eq!(outcome.unwrap_err(), ConnError::Timeout);
        }
    }

    #[tokio::test]
    async fn a_cancelled_request_leaves_no_half_frame_and_no_pending_entry() {
        let (host, peer) = StdUnixStream::pair().unwrap();
        // The peer answers every request, in order: a ping with "pong", anything else with
        // "other".
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(peer.try_clone().unwrap());
            let mut writer = peer;
            while let Ok(Some(frame)) = protocol::read_frame::<_, RequestFrame>(&mut reader) {
                let what = match frame.request {
                    Request::Ping => "pong",
                    _ => "other",
                };
                let answer = Response {
                    id: frame.id,
                    body: Body::Ok(serde_json::json!(what)),
                };
                if protocol::write_frame(&mut writer, &answer).is_err() {
                    break;
                }
            }
        });
        let (closed, _) = oneshot::channel();
        let conn = Connection::new(host, ignore, closed).unwrap();
        // Cancelled as soon as it was polled once: a caller's deadline or Ctrl-C.
        let big = Request::Call {
            function: "f".into(),
            args: "y".repeat(8 << 20),
        };
        // (`timeout` polls the request once: it is queued, then dropped while waiting.)
        let cancelled =
            tokio::time::timeout(Duration::ZERO, conn.request(big, Duration::from_secs(5))).await;
        assert!(cancelled.is_err(), "answered at once");
        // The next request is framed and answered correctly.
        let reply = conn
            .request(Request::Ping, Duration::from_secs(5))
            .await
            .expect("the connection still works")
            .expect("an answer");
        assert_eq!(reply, serde_json::json!("pong"), "the ping's own answer");
        assert!(
            conn.pending
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|m| m.is_empty()),
            "a pending entry was left behind"
        );
    }

    #[tokio::test]
    async fn an_oversized_request_is_refused_at_once_as_a_bad_request() {
        let (host, _peer) = StdUnixStream::pair().unwrap();
        let (closed, _) = oneshot::channel();
        let conn = Connection::new(host, ignore, closed).unwrap();
        let huge = Request::Call {
            function: "f".into(),
            args: "z".repeat(protocol::MAX_FRAME + 1),
        };
        // The peer never reads or answers: only a refusal before anything is written can
        // end this request other than by its timeout.
        let err = conn
            .request(huge, Duration::from_secs(60))
            .await
            .expect("answered, not timed out")
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest, "{}", err.message);
    }

    /// An attacker who has read this code writes answers to the ids it expects before the
    /// host asks anything (the forger app does this from its constructor). No request may
    /// take one of them for its reply.
    #[tokio::test]
    async fn answers_written_before_the_request_are_not_its_reply() {
        let (host, peer) = StdUnixStream::pair().unwrap();
        // Forged answers to the first ids, already in the socket before any request.
        let mut forger = peer.try_clone().unwrap();
        for id in 0..=64u64 {
            let forged = Response {
                id,
                body: Body::Ok(serde_json::json!("FORGED")),
            };
            protocol::write_frame(&mut forger, &forged).unwrap();
        }
        // Then an honest peer: each request is answered with "honest".
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(peer.try_clone().unwrap());
            let mut writer = peer;
            while let Ok(Some(frame)) = protocol::read_frame::<_, RequestFrame>(&mut reader) {
                let answer = Response {
                    id: frame.id,
                    body: Body::Ok(serde_json::json!("honest")),
                };
                if protocol::write_frame(&mut writer, &answer).is_err() {
                    break;
                }
            }
        });
        let (closed, _) = oneshot::channel();
        let conn = Connection::new(host, ignore, closed).unwrap();
        for _ in 0..3 {
            let reply = conn
                .request(Request::Ping, Duration::from_secs(5))
                .await
                .expect("answered")
                .expect("an answer");
            assert_eq!(
                reply,
                serde_json::json!("honest"),
                "a forged reply was taken"
            );
        }
    }
}
