//! Reading a sandbox's log back for `host logs`: the records of `runner.log.1` then
//! `runner.log` (see [`crate::log`]), from a time on, and new records as they are written.
//!
//! What is read is bounded by the files (each at most `LOG_FILE_BYTES`); one poll of a
//! follower reads at most [`POLL_BYTES`]. The text of each line is the app's, returned raw:
//! the client escapes it before a terminal.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use proto::logline::{LogLine, MAX_LINE_BYTES, parse};

use crate::log::{LOG_NAME, PREVIOUS_LOG_NAME};

/// The most bytes one poll of a follower reads.
pub const POLL_BYTES: usize = 256 * 1024;

/// Opens a log file of the host's without following a symlink.
fn open(path: &Path) -> Option<std::fs::File> {
    std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()
}

/// The complete records of `bytes` (a last line without its newline is left, unless it is
/// longer than any record can be), and how many bytes they took.
fn records(bytes: &[u8], since_ms: u64, out: &mut Vec<LogLine>) -> usize {
    let mut used = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let finished = line.ends_with(b"\n");
        if !finished && line.len() <= MAX_LINE_BYTES + 64 {
            break;
        }
        used += line.len();
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if text.is_empty() {
            continue;
        }
        let record = parse(text);
        if record.time_ms == 0 || record.time_ms >= since_ms {
            out.push(record);
        }
    }
    used
}

/// The last `max` bytes of `path`, from the start of a record: (its inode, where the bytes
/// start, the bytes).
fn read_last(path: &Path, max: u64) -> Option<(u64, u64, Vec<u8>)> {
    let mut file = open(path)?;
    let meta = file.metadata().ok()?;
    let start = meta.len().saturating_sub(max);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    (&mut file).take(max).read_to_end(&mut bytes).ok()?;
    let mut skip = 0;
    if start > 0 {
        // Cut inside a record: start after its end.
        skip = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |at| at + 1);
        bytes.drain(..skip);
    }
    Some((meta.ino(), start + skip as u64, bytes))
}

/// The records of the last `max_bytes` of the log in `dir` (of `runner.log`, and of
/// `runner.log.1` for what is left) from `since_ms` on, oldest first, and a follower placed
/// after the last one.
pub fn read(dir: &Path, since_ms: u64, max_bytes: u64) -> (Vec<LogLine>, Follower) {
    let path = dir.join(LOG_NAME);
    let mut lines = Vec::new();
    let current = read_last(&path, max_bytes);
    let left = max_bytes.saturating_sub(current.as_ref().map_or(0, |c| c.2.len() as u64));
    if left > 0
        && let Some((_, _, bytes)) = read_last(&dir.join(PREVIOUS_LOG_NAME), left)
    {
        records(&bytes, since_ms, &mut lines);
    }
    let (mut ino, mut offset) = (0, 0);
    if let Some((i, start, bytes)) = current {
        let used = records(&bytes, since_ms, &mut lines);
        (ino, offset) = (i, start + used as u64);
    }
    (lines, Follower { path, ino, offset })
}

/// Where a follower of one log has read to.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    ino: u64,
    offset: u64,
}

impl Follower {
    /// Follows the log into `dir` (a destroyed sandbox's, kept elsewhere): the same file,
    /// read on from where it was.
    pub fn moved_to(&mut self, dir: &Path) {
        self.path = dir.join(LOG_NAME);
    }

    /// The records written since the last call (at most [`POLL_BYTES`] of them). A log the
    /// host moved aside for a new runner is followed into the new file.
    pub fn poll(&mut self) -> Vec<LogLine> {
        let mut lines = Vec::new();
        let Ok(meta) = std::fs::symlink_metadata(&self.path) else {
            return lines;
        };
        if meta.ino() != self.ino || meta.len() < self.offset {
            // Rotated: what the old file got after our last read is in runner.log.1.
            let previous = self.path.with_file_name(PREVIOUS_LOG_NAME);
            if self.ino != 0
                && let Ok(old) = std::fs::symlink_metadata(&previous)
                && old.ino() == self.ino
            {
                self.read_from(&previous, &mut lines);
            }
            self.ino = meta.ino();
            self.offset = 0;
        }
        if meta.len() > self.offset {
            let path = self.path.clone();
            self.offset += self.read_from(&path, &mut lines);
        }
        lines
    }

    /// Reads records of `path` from the offset on; returns the bytes they took.
    fn read_from(&self, path: &Path, lines: &mut Vec<LogLine>) -> u64 {
        let Some(mut file) = open(path) else { return 0 };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return 0;
        }
        let mut bytes = Vec::new();
        let _ = (&mut file).take(POLL_BYTES as u64).read_to_end(&mut bytes);
        records(&bytes, 0, lines) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::logline::LogStream;
    use std::io::Write;

    fn append(path: &Path, bytes: &[u8]) {
        let mut f = std::fs::File::options()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn records_are_read_from_both_files_since_a_time_and_followed_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (current, previous) = (
            dir.path().join(LOG_NAME),
            dir.path().join(PREVIOUS_LOG_NAME),
        );
        append(&previous, b"10 out app old\n");
        append(
            &current,
            b"20 err worker mid\n30 out app new\n40 out app half",
        );
        let (lines, mut follower) = read(dir.path(), 0, 1 << 20);
        let texts: Vec<_> = lines.iter().map(|l| l.text.clone()).collect();
        assert_eq!(texts, [&b"old"[..], b"mid", b"new"]);
        assert_eq!(lines[1].stream, LogStream::Stderr);
        let (since, _) = read(dir.path(), 25, 1 << 20);
        assert_eq!(since.len(), 1);
        // A byte bound: the newest whole records within it.
        let (newest, _) = read(dir.path(), 0, 32);
        let texts: Vec<_> = newest.iter().map(|l| l.text.clone()).collect();
        assert_eq!(texts, [&b"new"[..]]);
        // The half line was not read; it is once finished.
        append(&current, b" done\n50 out app after\n");
        let texts: Vec<_> = follower.poll().into_iter().map(|l| l.text).collect();
        assert_eq!(texts, [&b"half done"[..], b"after"]);
        assert!(follower.poll().is_empty());
        // Rotation: the rest of the old file, then the new one.
        append(&current, b"60 out app last of old\n");
        std::fs::rename(&current, &previous).unwrap();
        append(&current, b"70 out app first of new\n");
        let texts: Vec<_> = follower.poll().into_iter().map(|l| l.text).collect();
        assert_eq!(texts, [&b"last of old"[..], b"first of new"]);
    }
}
