//! Where the MCP server's tools send their requests: a [`Backend`] takes one
//! `proto::control::Request` and gives the daemon's answer. [`SocketBackend`] is the daemon's
//! control socket, the one implementation: `host mcp` uses it over stdio, and the daemon's
//! `/mcp` endpoint uses it against its own socket, so both transports go through the same
//! session code (peer check, request bounds, in-flight accounting) as every other client.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use proto::control::{self as wire, Request, Response, WireError};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Why a request did not get the daemon's answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The daemon answered with an error (its kind and message).
    #[error("{}: {}", .0.kind, .0.message)]
    Remote(WireError),
    /// No daemon listens on the socket.
    #[error("no daemon at {}: {source}", path.display())]
    NoDaemon {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Something other than a daemon of this user (or root) listens; nothing was sent.
    #[error(
        "refusing to talk to {}: the server runs as uid {uid}, not as this user or root",
        path.display()
    )]
    UntrustedServer {
        /// The socket.
        path: PathBuf,
        /// The server's uid.
        uid: u32,
    },
    /// Talking to the daemon failed.
    #[error("connection to the daemon at {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The daemon answered something this server does not understand.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

impl BackendError {
    /// A machine-readable kind: the daemon's own for its errors.
    pub fn kind(&self) -> &str {
        match self {
            BackendError::Remote(e) => &e.kind,
            BackendError::NoDaemon { .. } => "no_daemon",
            BackendError::UntrustedServer { .. } => "untrusted_server",
            BackendError::Io { .. } => "io",
            BackendError::Protocol(_) => "protocol",
        }
    }
}

/// Sends control requests to a daemon.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Sends `request` (any op but `events`) and returns the daemon's `ok` value.
    async fn request(&self, request: Request) -> Result<Value, BackendError>;

    /// The newest `last` events of the daemon's ring (of sandbox `id` when given), oldest
    /// first.
    async fn events(&self, id: Option<String>, last: usize) -> Result<Vec<Value>, BackendError>;
}

/// The daemon's control socket: one connection per request, the server's uid checked
/// (`SO_PEERCRED`: this user or root) before anything is sent.
#[derive(Debug, Clone)]
pub struct SocketBackend {
    path: PathBuf,
}

impl SocketBackend {
    /// A backend for the daemon listening on `path`.
    pub fn new(path: impl Into<PathBuf>) -> SocketBackend {
        SocketBackend { path: path.into() }
    }

    /// The socket it talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self) -> impl FnOnce(io::Error) -> BackendError + '_ {
        move |source| BackendError::Io {
            path: self.path.clone(),
            source,
        }
    }

    async fn connect(&self) -> Result<BufReader<UnixStream>, BackendError> {
        let stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| BackendError::NoDaemon {
                    path: self.path.clone(),
                    source,
                })?;
        let uid = stream.peer_cred().map_err(self.io())?.uid();
        if uid != nix::unistd::geteuid().as_raw() && uid != 0 {
            return Err(BackendError::UntrustedServer {
                path: self.path.clone(),
                uid,
            });
        }
        Ok(BufReader::new(stream))
    }

    /// Writes `request` and reads one answer line into a value.
    async fn exchange(
        &self,
        stream: &mut BufReader<UnixStream>,
        request: &Request,
    ) -> Result<Value, BackendError> {
        let line = wire::encode_request(request, 0).map_err(self.io())?;
        stream.get_mut().write_all(&line).await.map_err(self.io())?;
        let answer = read_line(stream).await.map_err(self.io())?;
        match serde_json::from_slice::<Response>(answer.trim_ascii()) {
            Ok(Response::Ok(value)) => Ok(value),
            Ok(Response::Error(e)) => Err(BackendError::Remote(e)),
            Err(e) => Err(BackendError::Protocol(e.to_string())),
        }
    }
}

/// Reads one line of at most [`wire::MAX_LINE`] bytes (its newline not kept); the end of
/// the stream before one is an error.
async fn read_line(stream: &mut BufReader<UnixStream>) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let chunk = stream.fill_buf().await?;
        if chunk.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection without an answer",
            ));
        }
        let (used, done) = wire::take_line(&mut line, chunk)?;
        stream.consume(used);
        if done {
            line.pop();
            return Ok(line);
        }
    }
}

#[async_trait]
impl Backend for SocketBackend {
    async fn request(&self, request: Request) -> Result<Value, BackendError> {
        let mut stream = self.connect().await?;
        self.exchange(&mut stream, &request).await
    }

    async fn events(&self, id: Option<String>, last: usize) -> Result<Vec<Value>, BackendError> {
        let mut stream = self.connect().await?;
        let request = Request::Events {
            id,
            follow: false,
            last: Some(last),
        };
        let header = self.exchange(&mut stream, &request).await?;
        let backlog = header["backlog"]
            .as_u64()
            .ok_or_else(|| BackendError::Protocol(format!("not an events header: {header}")))?;
        let mut events = Vec::new();
        for _ in 0..backlog.min(last as u64) {
            let line = read_line(&mut stream).await.map_err(self.io())?;
            let event = serde_json::from_slice::<Value>(&line)
                .map_err(|e| BackendError::Protocol(e.to_string()))?;
            events.push(event);
        }
        Ok(events)
    }
}
