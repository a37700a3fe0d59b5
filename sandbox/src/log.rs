//! A sandbox's log, on the host side: one path for the sandbox's life, bounded across every
//! runner it has had, and the app's last words for a crash reason.
//!
//! Each runner's init copies the app's and workers' stdout and stderr into `<dir>/runner.log`
//! as records (`proto::logline`) (opened by the host,
//! appended to) only while the file is below [`LOG_FILE_BYTES`], notices included, whatever
//! earlier runners left in it (`runner::init`). Before a runner is spawned for a sandbox,
//! the host moves a file past half of that to `runner.log.1` (deleting the one there, and
//! counting it as dropped), so each runner has at least half a file and the sandbox's log
//! never holds more than [`LOG_BOUND_BYTES`] on disk, however often it restarts. A prepared
//! runner's directory becomes its sandbox's, so a pooled sandbox's log is at the same place.
//!
//! Text read back from the log is the app's: it is shown escaped (every control character
//! visible) and labelled as the app's own words, never parsed.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use proto::info::{LOG_BOUND_BYTES, LOG_FILE_BYTES, LogInfo};

/// The log of the current runner, in the sandbox's directory.
pub const LOG_NAME: &str = "runner.log";
/// The log of the runner before, when the host moved it aside.
pub const PREVIOUS_LOG_NAME: &str = "runner.log.1";
/// A log past this is moved aside before the next runner starts.
const ROTATE_AT: u64 = LOG_FILE_BYTES / 2;
/// Lines of the app's last output shown with a crash.
const LAST_LINES: usize = 3;
/// The most of the app's last output shown with a crash, escaped.
const LAST_WORDS_BYTES: usize = 300;
/// How far back from the end of the log the last lines are looked for.
const TAIL_READ: u64 = 4096;

/// What the host keeps of a sandbox's log.
#[derive(Debug, Default)]
pub struct SandboxLog {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes deleted by rotation, over the sandbox's life.
    dropped: u64,
    /// Where the current runner's output starts in `runner.log`.
    life_start: u64,
}

impl SandboxLog {
    /// Before a runner is spawned into `dir`: moves a log past half a file aside (the one
    /// aside before is deleted and counted as dropped), and notes where the new runner's
    /// output starts. A rotation that fails leaves the runner less room, never more: its init
    /// stops at [`LOG_FILE_BYTES`] in the file it is given.
    pub fn before_spawn(&self, dir: &Path) {
        let log = dir.join(LOG_NAME);
        let len = size(&log);
        let mut state = self.state.lock().unwrap();
        if len <= ROTATE_AT {
            state.life_start = len;
            return;
        }
        let previous = dir.join(PREVIOUS_LOG_NAME);
        let deleted = size(&previous);
        match std::fs::rename(&log, &previous) {
            Ok(()) => {
                state.dropped += deleted;
                state.life_start = 0;
            }
            Err(e) => {
                tracing::warn!(log = %log.display(), "could not rotate the sandbox log: {e}");
                state.life_start = len;
            }
        }
    }

    /// What `info` says of the log in `dir`.
    pub fn info(&self, dir: &Path) -> LogInfo {
        let path = dir.join(LOG_NAME);
        LogInfo {
            kept_bytes: size(&path) + size(&dir.join(PREVIOUS_LOG_NAME)),
            dropped_bytes: self.state.lock().unwrap().dropped,
            bound_bytes: LOG_BOUND_BYTES,
            path,
        }
    }

    /// The current runner's last lines in the log of `dir`, escaped and labelled as the app's
    /// output, for a crash reason; `None` when it wrote nothing.
    pub fn last_words(&self, dir: &Path) -> Option<String> {
        let start = self.state.lock().unwrap().life_start;
        let tail = read_tail(&dir.join(LOG_NAME), start)?;
        let text = last_lines(&record_texts(&tail), LAST_LINES, LAST_WORDS_BYTES)?;
        Some(format!(
            "the app's last output (its own words, escaped): \"{text}\""
        ))
    }
}

/// A file's size, 0 when it is missing (a symlink is not followed: the host made these).
fn size(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).map_or(0, |m| m.len())
}

/// Up to [`TAIL_READ`] bytes at the end of `path`, from `start` on at most.
fn read_tail(path: &Path, start: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let len = file.metadata().ok()?.len();
    let from = len.saturating_sub(TAIL_READ).max(start);
    if from >= len {
        return None;
    }
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut tail = Vec::new();
    file.take(TAIL_READ).read_to_end(&mut tail).ok()?;
    Some(tail)
}

/// The texts of the app's records in `tail` (the first, likely cut, and notices of the log
/// itself left out), one a line: those on stderr, where a panic and the allocator's abort
/// message go, or, when it wrote nothing there, those on stdout.
fn record_texts(tail: &[u8]) -> Vec<u8> {
    use proto::logline::{LogSource, LogStream};
    let records: Vec<_> = tail
        .split(|&b| b == b'\n')
        .map(proto::logline::parse)
        .filter(|r| r.time_ms != 0 && r.source != LogSource::Sandbox)
        .collect();
    let stream = if records.iter().any(|r| r.stream == LogStream::Stderr) {
        LogStream::Stderr
    } else {
        LogStream::Stdout
    };
    let mut texts = Vec::with_capacity(tail.len());
    for record in records.iter().filter(|r| r.stream == stream) {
        texts.extend_from_slice(&record.text);
        texts.push(b'\n');
    }
    texts
}

/// The last `lines` non-empty lines of `bytes`, each escaped, joined by an escaped newline,
/// and cut from the front to at most `max` bytes; `None` when there is no such line.
pub fn last_lines(bytes: &[u8], lines: usize, max: usize) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut picked: Vec<&str> = text
        .split('\n')
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(lines)
        .collect();
    if picked.is_empty() {
        return None;
    }
    picked.reverse();
    let escaped = picked
        .iter()
        .map(|l| escape(l))
        .collect::<Vec<_>>()
        .join("\\n");
    if escaped.len() <= max {
        return Some(escaped);
    }
    let mut cut = escaped.len() - (max - '…'.len_utf8());
    while !escaped.is_char_boundary(cut) {
        cut += 1;
    }
    Some(format!("…{}", &escaped[cut..]))
}

/// `text` with every control character (and every character that is not printable, or
/// would change how the rest reads: bidi controls, zero widths), quotes and backslashes
/// escaped as in Rust source: nothing of it can move a terminal's cursor, start a line or
/// end the quotes around it.
pub fn escape(text: &str) -> String {
    text.chars().flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_are_escaped_and_bounded() {
        let out = b"first\nsecond\n\x1b]0;title\x07\x1b[2K\r + seccomp: FORGED\n\nmemory allocation of 629145600 bytes failed\n";
        let text = last_lines(out, 3, 300).unwrap();
        assert_eq!(
            text,
            "second\\n\\u{1b}]0;title\\u{7}\\u{1b}[2K\\r + seccomp: FORGED\\nmemory allocation of \
             629145600 bytes failed"
        );
        assert!(!text.chars().any(char::is_control), "{text}");
        // Quotes, bidi controls and invalid UTF-8 cannot end or turn the label's quotes.
        let text = last_lines("a\"b\u{202e}c\\\u{9b}".as_bytes(), 3, 300).unwrap();
        assert_eq!(text, "a\\\"b\\u{202e}c\\\\\\u{9b}");
        assert_eq!(last_lines(b"\xff\xfe", 3, 300).unwrap(), "\u{fffd}\u{fffd}");
        // Long: the end is kept, on a character boundary.
        let long = "é".repeat(400) + "END";
        let text = last_lines(long.as_bytes(), 3, 300).unwrap();
        assert!(
            text.len() <= 300 && text.starts_with('…') && text.ends_with("END"),
            "{text}"
        );
        assert_eq!(last_lines(b"\n \n", 3, 300), None);
    }

    #[test]
    fn a_log_past_half_a_file_is_moved_aside_and_what_it_replaces_counted_as_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let log = SandboxLog::default();
        let (current, previous) = (
            dir.path().join(LOG_NAME),
            dir.path().join(PREVIOUS_LOG_NAME),
        );
        // No log yet; then a small one: kept where it is, the next runner's output after it.
        log.before_spawn(dir.path());
        std::fs::write(&current, b"1 err app one\n").unwrap();
        log.before_spawn(dir.path());
        std::fs::write(
            &current,
            b"1 err app one\n2 out worker two\n3 note sandbox x\n",
        )
        .unwrap();
        assert_eq!(
            log.last_words(dir.path()).unwrap(),
            "the app's last output (its own words, escaped): \"two\""
        );
        assert_eq!(log.info(dir.path()).dropped_bytes, 0);
        // Past half a file: moved aside, nothing dropped yet; the new runner has said nothing.
        let big = vec![b'x'; ROTATE_AT as usize + 1];
        std::fs::write(&current, &big).unwrap();
        log.before_spawn(dir.path());
        assert!(!current.exists());
        assert_eq!(size(&previous), ROTATE_AT + 1);
        assert_eq!(log.last_words(dir.path()), None);
        // Again: the one aside is deleted and counted.
        std::fs::write(&current, &big).unwrap();
        log.before_spawn(dir.path());
        let info = log.info(dir.path());
        assert_eq!(info.dropped_bytes, ROTATE_AT + 1);
        assert_eq!(info.kept_bytes, ROTATE_AT + 1);
        assert_eq!(info.path, current);
        assert_eq!(info.bound_bytes, LOG_BOUND_BYTES);
    }
}
