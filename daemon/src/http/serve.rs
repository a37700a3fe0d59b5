//! The one serve loop of the daemon's HTTP listeners: what a client can hold is bounded (see
//! the parent module's docs): connections per listener, a reserve of descriptors, the time a
//! request's head may take, and a reader that stops reading.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections one listener serves at once, at most (see [`ConnLimits::for_fd_limit`]).
pub const MAX_CONNECTIONS: usize = 64;
/// How long a request's head may take to arrive, from the connection's opening or from the
/// previous answer on it: an idle connection and a slow-header one are closed past it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may wait for a reader that stopped reading before the connection is
/// closed.
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// The largest request head (and read buffer) a connection may hold.
const MAX_BUF: usize = 64 * 1024;
/// How long the accept loop pauses when the process is out of descriptors.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(100);

/// What one HTTP listener lets a client hold; see the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections served at once; more are closed at once, unread.
    pub max_connections: usize,
    /// See [`HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`WRITE_STALL`].
    pub write_stall: Duration,
    /// The process's descriptor limit (soft `RLIMIT_NOFILE`), if known.
    pub fd_limit: Option<u64>,
    /// Descriptors kept free for the control socket and the sandboxes: while fewer are
    /// free, a new connection is closed at once.
    pub fd_reserve: u64,
}

impl ConnLimits {
    /// The limits for a process whose soft `RLIMIT_NOFILE` is `fd_limit`: at most
    /// [`MAX_CONNECTIONS`] per listener and an eighth of the limit (at least 4), and a
    /// reserve of a quarter of the limit (at least 64).
    pub fn for_fd_limit(fd_limit: Option<u64>) -> ConnLimits {
        let (max_connections, fd_reserve) = match fd_limit {
            Some(limit) => (
                usize::try_from(limit / 8)
                    .unwrap_or(usize::MAX)
                    .clamp(4, MAX_CONNECTIONS),
                (limit / 4).max(64),
            ),
            None => (MAX_CONNECTIONS, 64),
        };
        ConnLimits {
            max_connections,
            header_timeout: HEADER_TIMEOUT,
            write_stall: WRITE_STALL,
            fd_limit,
            fd_reserve,
        }
    }

    /// The limits for this process, from its soft `RLIMIT_NOFILE`.
    pub fn of_process() -> ConnLimits {
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft)
            .filter(|soft| *soft != nix::sys::resource::RLIM_INFINITY);
        ConnLimits::for_fd_limit(limit)
    }

    /// Whether a new connection would eat into the reserve: the process's open descriptors
    /// (`/proc/self/fd`, the new connection's included) leave fewer than the reserve free.
    fn in_reserve(&self) -> bool {
        let Some(limit) = self.fd_limit else {
            return false;
        };
        match open_fds() {
            Some(open) => open.saturating_add(self.fd_reserve) > limit,
            None => false,
        }
    }
}

/// The descriptors this process has open, by `/proc/self/fd` (less the one that lists it).
fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some((entries.count() as u64).saturating_sub(1))
}

/// Serves `app` on `listener` until `stop` turns true or its sender is gone, within the
/// process's [`ConnLimits`]; see the module. `what` names the server in the log.
pub async fn serve(
    what: &'static str,
    listener: TcpListener,
    app: axum::Router,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    serve_with(what, listener, app, stop, ConnLimits::of_process()).await;
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    what: &'static str,
    listener: TcpListener,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    limits: ConnLimits,
) {
    tracing::debug!("{what} server: {limits:?}");
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut refused = 0u64;
    loop {
        if *stop.borrow() {
            break;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    tracing::warn!("{what} server: accept: {e}");
                    tokio::time::sleep(OUT_OF_FDS_PAUSE).await;
                }
                continue;
            }
        };
        let why = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) if !limits.in_reserve() => {
                tokio::spawn(connection(
                    stream,
                    peer,
                    app.clone(),
                    permit,
                    stop.clone(),
                    limits,
                ));
                continue;
            }
            Ok(_) => "too few descriptors free",
            Err(_) => "at its connection cap",
        };
        refuse(stream);
        refused += 1;
        if refused.is_power_of_two() {
            tracing::warn!(
                "{what} server: {why} ({} at once, {} descriptors kept free); closed a                  connection from {peer} unread ({refused} so far)",
                limits.max_connections,
                limits.fd_reserve
            );
        }
    }
}

/// Closes a connection the server will not serve, unread, with a 503 if the socket takes it
/// at once (a fresh socket's buffer does; the server never waits for it).
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    );
}

/// Serves one connection: HTTP/1.1 with the head's deadline, until it ends, a timeout closes
/// it, or `stop` turns true (then the answer in progress finishes first).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    permit: OwnedSemaphorePermit,
    mut stop: tokio::sync::watch::Receiver<bool>,
    limits: ConnLimits,
) {
    let io = hyper_util::rt::TokioIo::new(Stall::new(stream, limits.write_stall));
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection from {peer}: {e}");
                }
                break;
            }
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
    drop(permit);
}

/// A connection's stream that fails a write which has made no progress for `limit`: a
/// reader that stopped reading cannot hold the connection (and its answer) for ever.
struct Stall {
    inner: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stall {
    fn new(inner: TcpStream, limit: Duration) -> Stall {
        Stall {
            inner,
            limit,
            stalled: None,
        }
    }

    /// `written` as it is when ready (progress: the clock stops); when pending, an error
    /// once the write has waited `limit`.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if written.is_ready() {
            self.stalled = None;
            return written;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the reader took nothing for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Stall {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stall {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_caps_follow_the_descriptor_limit() {
        let big = ConnLimits::for_fd_limit(Some(20_000));
        assert_eq!(big.max_connections, MAX_CONNECTIONS);
        assert_eq!(big.fd_reserve, 5_000);
        let small = ConnLimits::for_fd_limit(Some(256));
        assert_eq!(small.max_connections, 32);
        assert_eq!(small.fd_reserve, 64);
        assert_eq!(ConnLimits::for_fd_limit(Some(16)).max_connections, 4);
        assert_eq!(
            ConnLimits::for_fd_limit(None).max_connections,
            MAX_CONNECTIONS
        );
        let here = ConnLimits::of_process();
        assert!(here.max_connections <= MAX_CONNECTIONS && here.fd_limit.is_some());
    }

    /// A server on 127.0.0.1:0 with `limits`: `/` answers `ok`, `/big` 64 MiB.
    async fn server(limits: ConnLimits) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/big",
                axum::routing::get(|| async { vec![b'x'; 64 << 20] }),
            );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(serve_with("test", listener, app, stopped, limits));
        (addr, stop)
    }

    fn test_limits() -> ConnLimits {
        ConnLimits {
            max_connections: 2,
            header_timeout: Duration::from_millis(300),
            write_stall: Duration::from_millis(300),
            fd_limit: None,
            fd_reserve: 0,
        }
    }

    /// Reads until the server closes (`Some(what it sent)`), or `None` after `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let read = tokio::time::timeout(within, async {
            let mut buf = [0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) if got.len() < 4096 => got.extend_from_slice(&buf[..n]),
                    Ok(_) => {}
                }
            }
        })
        .await;
        read.ok().map(|()| got)
    }

    #[tokio::test]
    async fn past_the_cap_a_connection_is_refused_at_once_and_idle_ones_are_closed() {
        use tokio::io::AsyncWriteExt;
        let (addr, _stop) = server(test_limits()).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        // Both slots are taken (once the server has accepted them): the next is refused.
        let refused = async {
            loop {
                let mut third = TcpStream::connect(addr).await.unwrap();
                if let Some(sent) = closed_within(&mut third, Duration::from_millis(100)).await {
                    return sent;
                }
            }
        };
        let sent = tokio::time::timeout(Duration::from_secs(5), refused)
            .await
            .expect("a third connection was served");
        assert!(sent.starts_with(b"HTTP/1.1 503"), "{sent:?}");
        // The idle ones are closed by their header deadline; one sending its head slowly too.
        held[1].write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        for stream in &mut held {
            assert!(
                closed_within(stream, Duration::from_secs(5))
                    .await
                    .is_some(),
                "an idle connection stayed open"
            );
        }
        // Their slots are free again: a well-formed request is served.
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        fresh
            .write_all(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = closed_within(&mut fresh, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_is_closed() {
        use tokio::io::AsyncWriteExt;
        let one = ConnLimits {
            max_connections: 1,
            ..test_limits()
        };
        let (addr, _stop) = server(one).await;
        // Asks for more than the sockets' buffers hold, and reads none of it.
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"GET /big HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        // It holds the only slot until the server gives up on it; then a request is served.
        let served = async {
            loop {
                let mut other = TcpStream::connect(addr).await.unwrap();
                other
                    .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let answer = closed_within(&mut other, Duration::from_secs(1)).await;
                if answer.is_some_and(|a| a.starts_with(b"HTTP/1.1 200")) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("the stalled connection kept its slot");
        drop(stalled);
    }
}
