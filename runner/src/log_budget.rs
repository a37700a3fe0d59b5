//! The budget init copies the sandbox's output to its log with: a rate, and a file that never
//! grows past [`LOG_FILE_BYTES`] whatever earlier runners left in it. Its notices are log
//! records of their own (`note sandbox`), counted like the app's.

use std::time::{Duration, Instant};

use proto::info::LOG_FILE_BYTES;
use proto::logline::{LogSource, LogStream, header, now_ms};

/// Bytes of app and worker output (both streams, record headers included) copied to the log
/// per second; the rest is counted and reported in one "suppressed" notice.
pub const LOG_BYTES_PER_SEC: usize = 64 * 1024;

/// One notice of the sandbox as a log record (each line of `text` a record).
fn notice_records(text: &str) -> String {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            format!(
                "{}{l}\n",
                header(now_ms(), LogStream::Notice, LogSource::Sandbox)
            )
        })
        .collect()
}

/// How much app output the log takes: [`LOG_BYTES_PER_SEC`] per second, and in all the
/// runner's room in the log file, notices included; what is dropped is counted and said.
/// [`NOTICE_RESERVE`] bytes of the room are kept for the last two notices (the log is full,
/// and the app's last output when it was dropped), so the file never exceeds
/// [`LOG_FILE_BYTES`].
#[derive(Debug)]
pub(crate) struct LogBudget {
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
    pub(crate) fn new(now: Instant, room: usize) -> LogBudget {
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
    #[cfg(test)]
    pub(crate) fn take(&mut self, now: Instant, bytes: &[u8]) -> (usize, Option<String>) {
        self.take_from(now, bytes, true)
    }

    /// [`LogBudget::take`] for bytes that are (`last_words`) or are not part of the app's last
    /// words: only its stderr is, so an unfinished stdout line ended at exit does not push
    /// what it said on stderr out of the tail.
    pub(crate) fn take_from(
        &mut self,
        now: Instant,
        bytes: &[u8],
        last_words: bool,
    ) -> (usize, Option<String>) {
        let n = bytes.len();
        let mut notice = None;
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            if self.dropped > 0 && !self.full_said {
                let text = notice_records(&format!(
                    "suppressed {} bytes of app output (over {} per second)",
                    self.dropped, LOG_BYTES_PER_SEC
                ));
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
        // Bytes that are not part of the last words leave the tail as it is.
        if last_words && keep < n {
            if keep > 0 {
                self.tail.clear();
            }
            self.tail.extend_from_slice(&bytes[keep..]);
            let over = self.tail.len().saturating_sub(LAST_WORDS_BYTES);
            self.tail.drain(..over);
        } else if last_words {
            self.tail.clear();
        }
        if keep < n && self.app_room() == 0 && !self.full_said {
            self.full_said = true;
            let text = notice_records(&format!(
                "log full ({LOG_FILE_BYTES} bytes a file): further app output is dropped"
            ));
            if self.written + text.len() <= self.room {
                self.written += text.len();
                notice = Some(notice.unwrap_or_default() + &text);
            }
        }
        (keep, notice)
    }

    /// The last notice, when the app's last output was dropped: how much was, and its
    /// newest bytes, so the log ends with what the app said last.
    pub(crate) fn last_words(&mut self) -> Option<Vec<u8>> {
        if self.tail.is_empty() {
            return None;
        }
        let said = notice_records(&format!(
            "{} bytes of app output dropped since the last notice (over {} per second or the \
             log's size); the last {} were:",
            self.dropped,
            LOG_BYTES_PER_SEC,
            self.tail.len()
        ));
        let mut out = said.into_bytes();
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
        // Dropped stdout after it does not push it out.
        feed(&mut b, t0, 1, 8, 16 * 1024);
        b.take(t0, b"boom\n");
        let (keep, _) = b.take_from(t0, &[b'o'; 2048], false);
        assert_eq!(keep, 0);
        let last = String::from_utf8(b.last_words().unwrap()).unwrap();
        assert!(last.ends_with("xxboom\n\n"), "{last}");
    }
}
