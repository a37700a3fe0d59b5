//! One control connection's input, bounded: request lines of at most `max_request` bytes,
//! each finished within `request_timeout` of its first byte, with the descriptors
//! (`SCM_RIGHTS`) that came with it, at most [`wire::MAX_FDS`] per line.
//!
//! Memory: each connection reads through a [`READ_CHUNK`]-byte buffer and may hold
//! [`FREE_LINE`] bytes of an unfinished line on its own; a longer line borrows the rest, 1 KiB
//! per permit, from a pool shared by all connections (`line_pool`). When the pool is empty a
//! connection stops reading (the client waits) until bytes are returned or its deadline
//! passes, so the bytes all clients can make the daemon hold are bounded by
//! `max_connections * (READ_CHUNK + FREE_LINE) + line_pool`, however many send long lines.

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use proto::control as wire;

/// Bytes read from the socket at a time.
pub const READ_CHUNK: usize = 16 * 1024;
/// Bytes of an unfinished line a connection may hold without borrowing from the pool.
pub const FREE_LINE: usize = 64 * 1024;
/// Bytes per pool permit.
pub const PERMIT_BYTES: usize = 1024;

/// Why a connection's input was refused; the connection is closed after it.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A line longer than the limit.
    #[error("request line longer than {max} bytes (the daemon's --max-request)")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// A line not finished in time.
    #[error("request not finished within {} s of its first byte", .0.as_secs_f64())]
    Timeout(Duration),
    /// More descriptors than one request may carry.
    #[error("more than {max} descriptors sent with one request")]
    TooManyFds {
        /// The limit.
        max: usize,
    },
    /// Reading failed.
    #[error("read: {0}")]
    Io(#[from] io::Error),
}

/// One request line (without its newline) and the descriptors that came with it.
#[derive(Debug)]
pub struct Line {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Descriptors received since the previous line.
    pub fds: Vec<OwnedFd>,
}

/// The limits a [`LineReader`] applies.
#[derive(Debug, Clone)]
pub struct InputLimits {
    /// Longest request line in bytes.
    pub max_request: usize,
    /// Time from a line's first byte to its newline.
    pub request_timeout: Duration,
}

/// Reads request lines and their descriptors from a connection.
#[derive(Debug)]
pub struct LineReader {
    limits: InputLimits,
    pool: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no newline: each chunk is searched once, not
    /// the whole line again for every chunk of a long one.
    scanned: usize,
    fds: VecDeque<OwnedFd>,
    chunk: Vec<u8>,
    eof: bool,
}

impl LineReader {
    /// A reader with `limits`, borrowing long lines' bytes from `pool`.
    pub fn new(limits: InputLimits, pool: Arc<Semaphore>) -> LineReader {
        LineReader {
            limits,
            pool,
            held: None,
            pending: Vec::new(),
            scanned: 0,
            fds: VecDeque::new(),
            chunk: Vec::new(),
            eof: false,
        }
    }

    /// Whether part of a line has arrived and not been returned yet.
    pub fn mid_line(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next line; `None` at a clean end of input. `on_first_byte` is called when a new
    /// line starts arriving (the connection is no longer idle).
    pub async fn next(
        &mut self,
        stream: &UnixStream,
        mut on_first_byte: impl FnMut(),
    ) -> Result<Option<Line>, InputError> {
        let mut deadline =
            (!self.pending.is_empty()).then(|| Instant::now() + self.limits.request_timeout);
        loop {
            let found = self.pending[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| self.scanned + i);
            self.scanned = self.pending.len();
            if let Some(at) = found {
                if at > self.limits.max_request {
                    return Err(InputError::TooLong {
                        max: self.limits.max_request,
                    });
                }
                let rest = self.pending.split_off(at + 1);
                let mut bytes = std::mem::replace(&mut self.pending, rest);
                // What follows the newline has not been searched yet.
                self.scanned = 0;
                bytes.pop();
                self.pending.shrink_to(FREE_LINE);
                self.rebalance();
                return Ok(Some(Line {
                    bytes,
                    fds: self.fds.drain(..).collect(),
                }));
            }
            if self.pending.len() > self.limits.max_request {
                return Err(InputError::TooLong {
                    max: self.limits.max_request,
                });
            }
            if self.eof {
                // A last line without its newline is still a request.
                if self.pending.is_empty() {
                    return Ok(None);
                }
                self.pending.push(b'\n');
                continue;
            }
            // Room for one more chunk: borrow from the pool past the free allowance.
            let want = (self.pending.len() + READ_CHUNK).saturating_sub(FREE_LINE);
            let want_permits = want.div_ceil(PERMIT_BYTES) as u32;
            let have = self.held.as_ref().map_or(0, |p| p.num_permits() as u32);
            if want_permits > have {
                let more = Arc::clone(&self.pool).acquire_many_owned(want_permits - have);
                let permit = match deadline {
                    Some(at) => tokio::time::timeout_at(at, more)
                        .await
                        .map_err(|_| InputError::Timeout(self.limits.request_timeout))?,
                    None => more.await,
                }
                .map_err(|_| io::Error::other("the daemon is stopping"))?;
                match &mut self.held {
                    Some(held) => held.merge(permit),
                    None => self.held = Some(permit),
                }
            }
            let read = recv_chunk(stream, &mut self.chunk);
            let (n, fds, truncated) = match deadline {
                Some(at) => tokio::time::timeout_at(at, read)
                    .await
                    .map_err(|_| InputError::Timeout(self.limits.request_timeout))??,
                None => read.await?,
            };
            if truncated || self.fds.len() + fds.len() > wire::MAX_FDS {
                return Err(InputError::TooManyFds { max: wire::MAX_FDS });
            }
            self.fds.extend(fds);
            if n == 0 {
                self.eof = true;
                continue;
            }
            if self.pending.is_empty() && deadline.is_none() {
                deadline = Some(Instant::now() + self.limits.request_timeout);
                on_first_byte();
            }
            self.pending.extend_from_slice(&self.chunk[..n]);
        }
    }

    /// Returns borrowed bytes the pending input no longer needs.
    fn rebalance(&mut self) {
        let need = self
            .pending
            .len()
            .saturating_sub(FREE_LINE)
            .div_ceil(PERMIT_BYTES);
        if need == 0 {
            self.held = None;
        } else if let Some(held) = &mut self.held {
            let extra = held.num_permits().saturating_sub(need);
            if extra > 0 {
                drop(held.split(extra));
            }
        }
    }
}

/// Reads one chunk and any descriptors with it; (bytes, fds, whether fds were cut off).
async fn recv_chunk(
    stream: &UnixStream,
    chunk: &mut Vec<u8>,
) -> io::Result<(usize, Vec<OwnedFd>, bool)> {
    chunk.resize(READ_CHUNK, 0);
    let fd = stream.as_raw_fd();
    stream
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(&mut chunk[..])];
            // Room for the most one message can carry (the kernel's SCM_MAX_FD), so nothing
            // is ever cut off half-installed; more than MAX_FDS are closed by the caller.
            let mut space = nix::cmsg_space!([RawFd; 253]);
            let msg = recvmsg::<()>(
                fd,
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)?;
            let mut fds = Vec::new();
            let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
            if truncated {
                return Ok((msg.bytes, fds, true));
            }
            for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    for r in raw {
                        // SAFETY: the kernel just installed `r` in this process for us
                        // (SCM_RIGHTS); nothing else owns it.
                        fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                    }
                }
            }
            Ok((msg.bytes, fds, truncated))
        })
        .await
}

/// Writes all of `buf` through a shared reference to the stream.
pub async fn write_all(stream: &UnixStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Resolves once the client has closed its end of `stream` entirely (`POLLHUP`). A client
/// that only shut its write side down (it still reads the answer), or that sent more before
/// closing, is not seen: then this never resolves.
pub async fn hung_up(stream: &UnixStream) {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::{AsFd, AsRawFd};
    loop {
        if stream.ready(tokio::io::Interest::READABLE).await.is_err() {
            return;
        }
        // Readable may be stale (the line reader stops at a newline, not at `EAGAIN`): a
        // peek tells end-of-stream from data, and clears a stale readiness.
        let mut byte = [0u8; 1];
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            recv(
                stream.as_raw_fd(),
                &mut byte,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)
        });
        match peeked {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
            // More requests wait: the client is still there.
            Ok(n) if n > 0 => break,
            Ok(_) => {
                // End of stream: gone, or only its write side shut down.
                let mut fds = [nix::poll::PollFd::new(
                    stream.as_fd(),
                    nix::poll::PollFlags::empty(),
                )];
                let hup = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok()
                    && fds[0]
                        .revents()
                        .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP));
                if hup {
                    return;
                }
                break;
            }
        }
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSlice;
    use std::os::fd::AsFd;

    use nix::sys::socket::{ControlMessage, sendmsg};
    use tokio::io::AsyncWriteExt;

    fn limits() -> InputLimits {
        InputLimits {
            max_request: 1024 * 1024,
            request_timeout: Duration::from_millis(300),
        }
    }

    #[tokio::test]
    async fn a_client_gone_is_seen_and_one_that_only_stopped_writing_is_not() {
        // Gone, after a request line the reader left unread past its newline.
        let (server, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"{}\n").await.unwrap();
        let mut reader = LineReader::new(limits(), Arc::new(Semaphore::new(64)));
        reader.next(&server, || {}).await.unwrap().unwrap();
        drop(client);
        hung_up(&server).await;
        // Only its write side shut down: it still reads the answer.
        let (server, client) = UnixStream::pair().unwrap();
        let client = client.into_std().unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        server.ready(tokio::io::Interest::READABLE).await.unwrap();
        let mut waiting = std::pin::pin!(hung_up(&server));
        for _ in 0..3 {
            assert!(futures_util::poll!(waiting.as_mut()).is_pending());
            tokio::task::yield_now().await;
        }
        // More requests pipelined: still there.
        let (server, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"{}\n{}\n").await.unwrap();
        server.ready(tokio::io::Interest::READABLE).await.unwrap();
        let mut waiting = std::pin::pin!(hung_up(&server));
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
    }

    #[tokio::test]
    async fn lines_come_with_their_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let pool = Arc::new(Semaphore::new(1024));
        let mut r = LineReader::new(limits(), pool);
        let file = std::fs::File::open("/dev/null").unwrap();
        let raw = [file.as_fd().as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let fd = a.as_raw_fd();
        a.writable().await.unwrap();
        sendmsg::<()>(
            fd,
            &[IoSlice::new(b"{\"x\":1}\n")],
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let line = r.next(&b, || {}).await.unwrap().unwrap();
        assert_eq!(line.bytes, b"{\"x\":1}");
        assert_eq!(line.fds.len(), 1);
        let mut a = a;
        a.write_all(b"two\nthree").await.unwrap();
        drop(a);
        assert_eq!(r.next(&b, || {}).await.unwrap().unwrap().bytes, b"two");
        let last = r.next(&b, || {}).await.unwrap().unwrap();
        assert_eq!((last.bytes.as_slice(), last.fds.len()), (&b"three"[..], 0));
        assert!(r.next(&b, || {}).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn long_lines_unfinished_lines_and_fd_floods_are_refused() {
        let pool = Arc::new(Semaphore::new(4096));
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = LineReader::new(
            InputLimits {
                max_request: 100_000,
                ..limits()
            },
            Arc::clone(&pool),
        );
        let writer = tokio::spawn(async move {
            let _ = a.write_all(&vec![b'x'; 300_000]).await;
            a
        });
        assert!(matches!(
            r.next(&b, || {}).await,
            Err(InputError::TooLong { max: 100_000 })
        ));
        drop(r);
        assert_eq!(pool.available_permits(), 4096, "borrowed bytes returned");
        drop(b);
        let _ = writer.await;

        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = LineReader::new(limits(), Arc::clone(&pool));
        a.write_all(b"{\"op\":").await.unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            r.next(&b, || {}).await,
            Err(InputError::Timeout(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(2));

        let (a, b) = UnixStream::pair().unwrap();
        let mut r = LineReader::new(limits(), pool);
        let files: Vec<_> = (0..wire::MAX_FDS + 1)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        a.writable().await.unwrap();
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"x\n")],
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let got = r.next(&b, || {}).await;
        assert!(matches!(got, Err(InputError::TooManyFds { .. })), "{got:?}");
    }

    #[tokio::test]
    async fn an_empty_pool_stalls_a_long_line_until_its_deadline() {
        let pool = Arc::new(Semaphore::new(0));
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = LineReader::new(limits(), pool);
        let writer = tokio::spawn(async move {
            let _ = a.write_all(&vec![b'x'; 200_000]).await;
            a
        });
        assert!(matches!(
            r.next(&b, || {}).await,
            Err(InputError::Timeout(_))
        ));
        assert!(
            r.pending.len() <= FREE_LINE + READ_CHUNK,
            "{}",
            r.pending.len()
        );
        drop(b);
        let _ = writer.await;
    }
}
