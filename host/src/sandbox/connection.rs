//! The host's end of a runner's control socket: async requests with ids, matched replies,
//! and events, over the framing in `protocol`.

use std::collections::HashMap;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::oneshot;

use crate::sandbox::protocol::{self, Body, Event, Request, RequestFrame, Response, RunnerError};

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnError {
    /// The runner closed the socket (it died).
    Closed,
    /// No answer within the timeout.
    Timeout,
}

type Pending =
    Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Result<serde_json::Value, RunnerError>>>>>>;

/// A connection to one runner.
#[derive(Debug)]
pub struct Connection {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
}

impl Connection {
    /// Wraps the host's end of the socketpair. Events are handed to `on_event` in the reader
    /// task, in socket order, so an event the runner sent before a reply has been handled
    /// when that reply arrives. When the runner closes the socket, `closed` fires after every
    /// pending request has failed.
    pub fn new(
        sock: StdUnixStream,
        on_event: impl Fn(Event) + Send + 'static,
        closed: oneshot::Sender<()>,
    ) -> std::io::Result<Connection> {
        sock.set_nonblocking(true)?;
        let (reader, writer) = UnixStream::from_std(sock)?.into_split();
        // Buffered: a frame's length and body, and often the next frames, in one read.
        let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, reader);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let pending_reader = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut len = [0u8; 4];
            loop {
                if reader.read_exact(&mut len).await.is_err() {
                    break;
                }
                let Ok(n) = protocol::check_len(u32::from_le_bytes(len)) else {
                    break;
                };
                let mut buf = vec![0u8; n];
                if reader.read_exact(&mut buf).await.is_err() {
                    break;
                }
                let Ok(response) = serde_json::from_slice::<Response>(&buf) else {
                    tracing::warn!("runner sent an unparseable frame; closing");
                    break;
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
        Ok(Connection {
            writer: tokio::sync::Mutex::new(writer),
            pending,
            next_id: AtomicU64::new(1),
        })
    }

    /// Sends `request` and waits for its reply.
    pub async fn request(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Result<serde_json::Value, RunnerError>, ConnError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let Some(map) = pending.as_mut() else {
                return Err(ConnError::Closed);
            };
            map.insert(id, tx);
        }
        let bytes =
            protocol::encode(&RequestFrame { id, request }).map_err(|_| ConnError::Closed)?;
        if self.writer.lock().await.write_all(&bytes).await.is_err() {
            self.forget(id);
            return Err(ConnError::Closed);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(ConnError::Closed),
            Err(_) => {
                self.forget(id);
                Err(ConnError::Timeout)
            }
        }
    }

    fn forget(&self, id: u64) {
        if let Some(map) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            map.remove(&id);
        }
    }
}
