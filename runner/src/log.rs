//! The sandbox's log: the pipe every process of the sandbox but init writes its stderr to,
//! and the budget init copies it to the log file with (see `init`'s step 3): a rate, and a
//! file that never grows past [`LOG_FILE_BYTES`] whatever earlier runners left in it.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::info::LOG_FILE_BYTES;

/// Bytes of app and worker stderr copied to the log per second; the rest is counted and
/// reported in one "suppressed" line.
pub const LOG_BYTES_PER_SEC: usize = 64 * 1024;

/// The pipe every process of the sandbox but init writes its stderr to.
pub(crate) struct LogPipe {
    read: OwnedFd,
    log: OwnedFd,
    /// What this runner may write to the log: [`LOG_FILE_BYTES`] less what the file held
    /// when it started (earlier runners of the sandbox append to the same file).
    room: usize,
}

impl LogPipe {
    /// Keeps the log (fd 2) on a fd of its own and puts the pipe's write end on fd 2, so the
    /// app process and every worker inherit it.
    pub(crate) fn install() -> std::io::Result<LogPipe> {
        let mut fds = [0; 2];
        // SAFETY: fcntl/pipe2/dup2/close/fstat on fds this process owns and a stat buffer of
        // our own; results checked.
        unsafe {
            let log = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 10);
            if log < 0 || libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut st: libc::stat = std::mem::zeroed();
            let used =
                if libc::fstat(log, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG {
                    st.st_size.max(0) as u64
                } else {
                    0
                };
            if libc::dup2(fds[1], 2) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fds[1]);
            Ok(LogPipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                log: OwnedFd::from_raw_fd(log),
                room: LOG_FILE_BYTES.saturating_sub(used) as usize,
            })
        }
    }

    /// Copies the pipe to the log on a thread of its own, within the budget, until
    /// [`LogDrain::finish`] is called.
    pub(crate) fn forward(self) -> LogDrain {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // SAFETY: eventfd(2) with integer arguments; the result is checked.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        let wake = (wake >= 0).then(|| {
            // SAFETY: a fresh descriptor that nothing else owns.
            Arc::new(unsafe { OwnedFd::from_raw_fd(wake) })
        });
        let for_thread = wake.clone();
        let _ = std::thread::Builder::new()
            .name("log".into())
            .spawn(move || {
                let mut copier = LogCopier {
                    pipe: std::fs::File::from(self.read),
                    log: std::fs::File::from(self.log),
                    budget: LogBudget::new(Instant::now(), self.room),
                    buf: vec![0u8; 16 * 1024],
                };
                copier.run(for_thread.as_deref());
                let _ = done_tx.send(());
            });
        LogDrain {
            wake,
            done: Mutex::new(done_rx),
        }
    }
}

/// Tells the log thread to copy what the pipe holds and stop (the app process has exited).
pub(crate) struct LogDrain {
    wake: Option<Arc<OwnedFd>>,
    done: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl LogDrain {
    /// Returns once the log thread has copied what the pipe held (its last words included),
    /// or after `within`.
    pub(crate) fn finish(&self, within: Duration) {
        let Some(wake) = &self.wake else { return };
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to our own eventfd.
        unsafe { libc::write(wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let _ = done.recv_timeout(within);
    }
}

/// The log thread's state.
struct LogCopier {
    pipe: std::fs::File,
    log: std::fs::File,
    budget: LogBudget,
    buf: Vec<u8>,
}

impl LogCopier {
    /// Copies until the pipe's writers are all gone, or until `wake` fires: then copies what
    /// the pipe holds at that moment (no more, whatever writers remain) and writes the last
    /// notice.
    fn run(&mut self, wake: Option<&OwnedFd>) {
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.pipe.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: wake.map_or(-1, |w| w.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: poll(2) on two pollfds of our own (a negative fd is ignored).
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if ready < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if fds[1].revents != 0 {
                self.drain();
                return;
            }
            if fds[0].revents != 0 && !self.copy_once() {
                return;
            }
        }
    }

    /// One read of the pipe, copied within the budget; false at the end of the pipe.
    fn copy_once(&mut self) -> bool {
        match self.pipe.read(&mut self.buf) {
            Ok(0) => false,
            Ok(n) => {
                let (keep, notice) = self.budget.take(Instant::now(), &self.buf[..n]);
                if let Some(notice) = notice {
                    let _ = self.log.write_all(notice.as_bytes());
                }
                let _ = self.log.write_all(&self.buf[..keep]);
                true
            }
            Err(e) => e.kind() == std::io::ErrorKind::Interrupted,
        }
    }

    /// Copies the bytes the pipe holds now, then the last notice.
    fn drain(&mut self) {
        let mut pending: libc::c_int = 0;
        // SAFETY: FIONREAD into an int of our own, on our pipe.
        if unsafe { libc::ioctl(self.pipe.as_raw_fd(), libc::FIONREAD, &mut pending) } == 0 {
            let mut left = pending.max(0) as usize;
            while left > 0 {
                let want = left.min(self.buf.len());
                match self.pipe.read(&mut self.buf[..want]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        left = left.saturating_sub(n);
                        let (keep, notice) = self.budget.take(Instant::now(), &self.buf[..n]);
                        if let Some(notice) = notice {
                            let _ = self.log.write_all(notice.as_bytes());
                        }
                        let _ = self.log.write_all(&self.buf[..keep]);
                    }
                }
            }
        }
        if let Some(last) = self.budget.last_words() {
            let _ = self.log.write_all(&last);
        }
    }
}

/// How much app output the log takes: [`LOG_BYTES_PER_SEC`] per second, and in all the
/// runner's room in the log file, notices included; what is dropped is counted and said.
/// [`NOTICE_RESERVE`] bytes of the room are kept for the last two notices (the log is full,
/// and the app's last output when it was dropped), so the file never exceeds
/// [`LOG_FILE_BYTES`].
#[derive(Debug)]
struct LogBudget {
    window: Instant,
    in_window: usize,
    /// Everything written so far (app output and notices).
    written: usize,
    /// What may be written in all.
    room: usize,
    /// App bytes dropped since the last notice that said so.
    dropped: usize,
    full_said: bool,
    /// The newest dropped bytes since the last byte kept (at most [`LAST_WORDS_BYTES`]).
    tail: Vec<u8>,
}

/// Bytes of a runner's room kept for its last notices.
const NOTICE_RESERVE: usize = 1024;
/// The most of the app's last, dropped output written when it exits.
const LAST_WORDS_BYTES: usize = 512;

impl LogBudget {
    fn new(now: Instant, room: usize) -> LogBudget {
        LogBudget {
            window: now,
            in_window: 0,
            written: 0,
            room,
            dropped: 0,
            full_said: false,
            tail: Vec::new(),
        }
    }

    /// What app output may still take, notices of the rate included.
    fn app_room(&self) -> usize {
        self.room
            .saturating_sub(NOTICE_RESERVE)
            .saturating_sub(self.written)
    }

    /// Of `bytes` read at `now`: how many to write, and a notice to write first.
    fn take(&mut self, now: Instant, bytes: &[u8]) -> (usize, Option<String>) {
        let n = bytes.len();
        let mut notice = None;
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            if self.dropped > 0 && !self.full_said {
                let text = format!(
                    "\n[sandbox] suppressed {} bytes of app output (over {} per second)\n",
                    self.dropped, LOG_BYTES_PER_SEC
                );
                if text.len() <= self.app_room() {
                    self.written += text.len();
                    self.dropped = 0;
                    notice = Some(text);
                }
            }
            self.window = now;
            self.in_window = 0;
        }
        let keep = n
            .min(LOG_BYTES_PER_SEC.saturating_sub(self.in_window))
            .min(self.app_room());
        self.in_window += keep;
        self.written += keep;
        self.dropped += n - keep;
        if keep < n {
            if keep > 0 {
                self.tail.clear();
            }
            self.tail.extend_from_slice(&bytes[keep..]);
            let over = self.tail.len().saturating_sub(LAST_WORDS_BYTES);
            self.tail.drain(..over);
        } else {
            self.tail.clear();
        }
        if keep < n && self.app_room() == 0 && !self.full_said {
            self.full_said = true;
            let text = format!(
                "\n[sandbox] log full ({LOG_FILE_BYTES} bytes a file): further app output is dropped\n"
            );
            if self.written + text.len() <= self.room {
                self.written += text.len();
                notice = Some(notice.unwrap_or_default() + &text);
            }
        }
        (keep, notice)
    }

    /// The last notice, when the app's last output was dropped: how much was, and its
    /// newest bytes, so the log ends with what the app said last.
    fn last_words(&mut self) -> Option<Vec<u8>> {
        if self.tail.is_empty() {
            return None;
        }
        let header = format!(
            "\n[sandbox] {} bytes of app output dropped since the last notice (over {} per \
             second or the log's size); the last {} were:\n",
            self.dropped,
            LOG_BYTES_PER_SEC,
            self.tail.len()
        );
        let mut out = header.into_bytes();
        out.append(&mut self.tail);
        out.push(b'\n');
        let room = self.room.saturating_sub(self.written);
        if out.len() > room {
            return None;
        }
        self.written += out.len();
        self.dropped = 0;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: usize = LOG_FILE_BYTES as usize;

    /// Feeds `chunk`-byte reads, `per_second` of them a second, for `seconds`; returns the
    /// bytes written and the notices.
    fn feed(
        b: &mut LogBudget,
        t0: Instant,
        seconds: u64,
        per_second: usize,
        chunk: usize,
    ) -> (usize, Vec<String>) {
        let bytes = vec![b'x'; chunk];
        let (mut written, mut notices) = (0, Vec::new());
        for s in 0..seconds {
            for _ in 0..per_second {
                let (keep, notice) = b.take(t0 + Duration::from_secs(s), &bytes);
                if let Some(n) = notice {
                    written += n.len();
                    notices.push(n);
                }
                written += keep;
            }
        }
        (written, notices)
    }

    #[test]
    fn the_log_takes_a_bounded_rate_and_says_what_it_dropped() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(t0, ROOM);
        assert_eq!(b.take(t0, &[b'x'; 1000]), (1000, None));
        let (keep, notice) = b.take(t0, &vec![b'x'; LOG_BYTES_PER_SEC]);
        assert_eq!((keep, notice), (LOG_BYTES_PER_SEC - 1000, None));
        assert_eq!(b.take(t0, &[b'x'; 500]), (0, None));
        let (keep, notice) = b.take(t0 + Duration::from_secs(1), &[b'x'; 10]);
        assert_eq!(keep, 10);
        assert!(notice.unwrap().contains("suppressed 1500 bytes"));
    }

    #[test]
    fn a_runner_never_writes_past_its_room_in_the_file_notices_included() {
        let t0 = Instant::now();
        // A fresh file, one that earlier runners half filled, one nearly full, and a full one.
        for room in [ROOM, ROOM / 2 + 17, NOTICE_RESERVE + 100, 300, 0] {
            let mut b = LogBudget::new(t0, room);
            // Over the rate every second until full, then the last words.
            let (mut written, notices) = feed(&mut b, t0, 200, 5, 16 * 1024);
            written += b.last_words().map_or(0, |w| w.len());
            assert!(written <= room, "room {room}: wrote {written}");
            assert_eq!(b.written, written);
            let full = notices.iter().filter(|n| n.contains("log full")).count();
            assert!(full <= 1, "room {room}: {notices:?}");
            if room >= NOTICE_RESERVE {
                assert_eq!(full, 1, "room {room}: {notices:?}");
                assert!(
                    written > room - NOTICE_RESERVE,
                    "room {room}: wrote {written}"
                );
            }
        }
    }

    #[test]
    fn the_apps_last_dropped_output_is_said_at_the_end() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(t0, ROOM);
        // Kept in full: nothing to add.
        assert_eq!(b.take(t0, b"hello\n"), (6, None));
        assert_eq!(b.last_words(), None);
        // A flood over the rate, then the last words, dropped with it.
        feed(&mut b, t0, 1, 8, 16 * 1024);
        let (keep, _) = b.take(t0, b"memory allocation of 629145600 bytes failed\n");
        assert_eq!(keep, 0);
        let last = String::from_utf8(b.last_words().unwrap()).unwrap();
        assert!(
            last.ends_with("xxxxmemory allocation of 629145600 bytes failed\n\n"),
            "{last}"
        );
        assert!(last.len() <= NOTICE_RESERVE, "{}", last.len());
        assert!(last.contains("the last 512 were"), "{last}");
        // Said once.
        assert_eq!(b.last_words(), None);
    }
}
