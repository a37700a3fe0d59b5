//! The sandbox's log: the pipes the app process's and the workers' stdout and stderr go to,
//! and the thread of init that copies them, line by line, into the log file as records
//! (`proto::logline`: time, stream, source, text), within the budget of
//! [`crate::log_budget`] (see `init`'s step 3).
//!
//! Four pipes: the app process's stdout and stderr (init's fds 1 and 2, so the app process
//! inherits them at fork) and the workers' stdout and stderr (write ends kept by init,
//! close-on-exec, and given to each worker at spawn). A line is at most
//! [`MAX_LINE_BYTES`]; a longer one is cut. The copier reads whatever the pipes hold at any
//! rate and drops what the budget does not take, so no writer blocks for long and nothing
//! grows past its bound.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use proto::info::LOG_FILE_BYTES;
use proto::logline::{LogSource, LogStream, MAX_LINE_BYTES, header, now_ms};

use crate::log_budget::LogBudget;

/// The workers' stdout and stderr write ends, for the worker spawner. Process-wide because
/// init has exactly one log and the worker spawner is itself process-wide (see
/// `supervisor::worker_spawner`).
static WORKER_OUTPUT: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();

/// Duplicates of the workers' (stdout, stderr) write ends, for one worker; `None` before
/// the log is installed or when out of descriptors (the worker then writes to `/dev/null`).
pub(crate) fn worker_output() -> Option<(OwnedFd, OwnedFd)> {
    let (out, err) = WORKER_OUTPUT.get()?;
    Some((out.try_clone().ok()?, err.try_clone().ok()?))
}

/// One pipe's read end and what it is.
struct Input {
    read: OwnedFd,
    stream: LogStream,
    source: LogSource,
}

/// The sandbox's output pipes and the log file.
pub(crate) struct LogPipe {
    inputs: Vec<Input>,
    log: OwnedFd,
    /// What this runner may write to the log: [`LOG_FILE_BYTES`] less what the file held
    /// when it started (earlier runners of the sandbox append to the same file).
    room: usize,
}

/// A close-on-exec pipe: (read, write).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into an array of our own; the result is checked and the two fresh
    // descriptors are owned from here on.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// Puts `fd` on descriptor `target` (not close-on-exec there).
fn dup_onto(fd: &OwnedFd, target: i32) -> std::io::Result<()> {
    // SAFETY: dup2 of a descriptor we own onto a standard descriptor number.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl LogPipe {
    /// Keeps the log (fd 2) on a fd of its own, puts the app pipes' write ends on fds 1 and
    /// 2 (the app process inherits them) and keeps the workers' for the worker spawner.
    pub(crate) fn install() -> std::io::Result<LogPipe> {
        // SAFETY: fcntl/fstat on fd 2, which the spawn sequence made the log file, and a
        // stat buffer of our own; results checked.
        let (log, used) = unsafe {
            let log = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 10);
            if log < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut st: libc::stat = std::mem::zeroed();
            let used =
                if libc::fstat(log, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG {
                    st.st_size.max(0) as u64
                } else {
                    0
                };
            (OwnedFd::from_raw_fd(log), used)
        };
        let (app_out, app_out_w) = pipe()?;
        let (app_err, app_err_w) = pipe()?;
        let (worker_out, worker_out_w) = pipe()?;
        let (worker_err, worker_err_w) = pipe()?;
        dup_onto(&app_out_w, 1)?;
        dup_onto(&app_err_w, 2)?;
        let _ = WORKER_OUTPUT.set((worker_out_w, worker_err_w));
        let input = |read, stream, source| Input {
            read,
            stream,
            source,
        };
        Ok(LogPipe {
            inputs: vec![
                input(app_out, LogStream::Stdout, LogSource::App),
                input(app_err, LogStream::Stderr, LogSource::App),
                input(worker_out, LogStream::Stdout, LogSource::Worker),
                input(worker_err, LogStream::Stderr, LogSource::Worker),
            ],
            log,
            room: LOG_FILE_BYTES.saturating_sub(used) as usize,
        })
    }

    /// Copies the pipes to the log on a thread of its own, within the budget, until
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
                    pipes: self
                        .inputs
                        .into_iter()
                        .map(|i| Pipe {
                            file: std::fs::File::from(i.read),
                            stream: i.stream,
                            source: i.source,
                            line: Vec::with_capacity(256),
                        })
                        .collect(),
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

/// Tells the log thread to copy what the pipes hold and stop (the app process has exited).
pub(crate) struct LogDrain {
    wake: Option<Arc<OwnedFd>>,
    done: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl LogDrain {
    /// Returns once the log thread has copied what the pipes held (the app's last words
    /// included), or after `within`.
    pub(crate) fn finish(&self, within: Duration) {
        let Some(wake) = &self.wake else { return };
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to our own eventfd.
        unsafe { libc::write(wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let _ = done.recv_timeout(within);
    }
}

/// One pipe being read, with its unfinished line (at most [`MAX_LINE_BYTES`]).
struct Pipe {
    file: std::fs::File,
    stream: LogStream,
    source: LogSource,
    line: Vec<u8>,
}

/// The log thread's state.
struct LogCopier {
    pipes: Vec<Pipe>,
    log: std::fs::File,
    budget: LogBudget,
    buf: Vec<u8>,
}

impl LogCopier {
    /// Copies until `wake` fires: then copies what the pipes hold at that moment (no more,
    /// whatever writers remain), ends the unfinished lines and writes the last notice.
    fn run(&mut self, wake: Option<&OwnedFd>) {
        let mut open = vec![true; self.pipes.len()];
        loop {
            let mut fds: Vec<libc::pollfd> = self
                .pipes
                .iter()
                .zip(&open)
                .map(|(p, &open)| libc::pollfd {
                    fd: if open { p.file.as_raw_fd() } else { -1 },
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            fds.push(libc::pollfd {
                fd: wake.map_or(-1, |w| w.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            });
            // SAFETY: poll(2) on pollfds of our own (a negative fd is ignored).
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if ready < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if fds[self.pipes.len()].revents != 0 {
                self.drain();
                return;
            }
            for i in 0..self.pipes.len() {
                if fds[i].revents != 0 && !self.copy_once(i) {
                    open[i] = false;
                    self.end_line(i, false);
                }
            }
            if !open.iter().any(|&o| o) && wake.is_none() {
                return;
            }
        }
    }

    /// One read of pipe `i`, copied line by line; false at the end of the pipe.
    fn copy_once(&mut self, i: usize) -> bool {
        match self.pipes[i].file.read(&mut self.buf) {
            Ok(0) => false,
            Ok(n) => {
                let bytes = std::mem::take(&mut self.buf);
                self.lines(i, &bytes[..n]);
                self.buf = bytes;
                true
            }
            Err(e) => e.kind() == std::io::ErrorKind::Interrupted,
        }
    }

    /// Adds `bytes` to pipe `i`'s line, writing every finished (or full) line.
    fn lines(&mut self, i: usize, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_LINE_BYTES - self.pipes[i].line.len();
            let (part, finished) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) if at <= room => (&bytes[..at], true),
                _ if bytes.len() >= room => (&bytes[..room], true),
                _ => (bytes, false),
            };
            self.pipes[i].line.extend_from_slice(part);
            let used = part.len() + usize::from(finished && bytes.get(part.len()) == Some(&b'\n'));
            bytes = &bytes[used..];
            if finished {
                self.end_line(i, true);
            }
        }
    }

    /// Writes pipe `i`'s line as a record, within the budget: an empty one only when the
    /// app wrote it (`newline`), not when nothing is pending.
    fn end_line(&mut self, i: usize, newline: bool) {
        let pipe = &mut self.pipes[i];
        if pipe.line.is_empty() && !newline {
            return;
        }
        let mut record = header(now_ms(), pipe.stream, pipe.source).into_bytes();
        let head = record.len();
        record.append(&mut pipe.line);
        record.push(b'\n');
        let last_words = pipe.stream == LogStream::Stderr;
        let (keep, notice) = self.budget.take_from(Instant::now(), &record, last_words);
        if let Some(notice) = notice {
            let _ = self.log.write_all(notice.as_bytes());
        }
        if keep == record.len() {
            let _ = self.log.write_all(&record);
        } else if keep > head + 1 {
            // The budget took part of the line: write that part as a whole record.
            record.truncate(keep - 1);
            record.push(b'\n');
            let _ = self.log.write_all(&record);
        }
    }

    /// Copies the bytes the pipes hold now, ends their lines, then the last notice. The app
    /// process's stderr comes last: what it said before it died (a panic, the allocator's
    /// abort message) is then the end of the log and of the notice's dropped tail, not an
    /// unfinished stdout line.
    fn drain(&mut self) {
        let mut order: Vec<usize> = (0..self.pipes.len()).collect();
        order.sort_by_key(|&i| {
            let p = &self.pipes[i];
            (p.stream == LogStream::Stderr, p.source == LogSource::App)
        });
        for i in order {
            let mut pending: libc::c_int = 0;
            // SAFETY: FIONREAD into an int of our own, on our pipe.
            let asked = unsafe {
                libc::ioctl(self.pipes[i].file.as_raw_fd(), libc::FIONREAD, &mut pending)
            };
            let mut left = if asked == 0 {
                pending.max(0) as usize
            } else {
                0
            };
            while left > 0 {
                let want = left.min(self.buf.len());
                let mut bytes = std::mem::take(&mut self.buf);
                let got = self.pipes[i].file.read(&mut bytes[..want]);
                match got {
                    Ok(0) | Err(_) => {
                        self.buf = bytes;
                        break;
                    }
                    Ok(n) => {
                        left = left.saturating_sub(n);
                        self.lines(i, &bytes[..n]);
                        self.buf = bytes;
                    }
                }
            }
            self.end_line(i, false);
        }
        if let Some(last) = self.budget.last_words() {
            let _ = self.log.write_all(&last);
        }
    }
}
