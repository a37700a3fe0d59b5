//! One line of a sandbox's log, as the runner's init writes it to `runner.log` and the host
//! reads it back for `host logs` and crash reasons.
//!
//! On disk a record is `<unix ms> <stream> <source> <text>\n`: init stamps the first three
//! (they are its own words), `text` is one line the app wrote, raw bytes without its newline,
//! at most [`MAX_LINE_BYTES`] (a longer line is cut into several records). The app cannot
//! forge a record: it writes only into pipes init reads, and init splits on every newline.
//! A line that does not parse (the cut front of a notice's tail) is read back as a notice.

use serde::{Deserialize, Serialize};

/// The longest text of one record; a longer line is cut into records of this size.
pub const MAX_LINE_BYTES: usize = 4096;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output (`println!`).
    Stdout,
    /// Standard error (`eprintln!`, a panic message, the allocator's abort message).
    Stderr,
    /// A notice of the sandbox itself (output dropped over the budget, the log full).
    Notice,
}

impl LogStream {
    /// The short name used on disk.
    pub fn tag(self) -> &'static str {
        match self {
            LogStream::Stdout => "out",
            LogStream::Stderr => "err",
            LogStream::Notice => "note",
        }
    }

    fn from_tag(tag: &[u8]) -> Option<LogStream> {
        match tag {
            b"out" => Some(LogStream::Stdout),
            b"err" => Some(LogStream::Stderr),
            b"note" => Some(LogStream::Notice),
            _ => None,
        }
    }
}

/// Which process wrote a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// The app process (the one that serves calls), or init itself.
    App,
    /// One of the app's supervised worker processes.
    Worker,
    /// The sandbox's init, about the log itself.
    Sandbox,
}

impl LogSource {
    /// The short name used on disk.
    pub fn tag(self) -> &'static str {
        match self {
            LogSource::App => "app",
            LogSource::Worker => "worker",
            LogSource::Sandbox => "sandbox",
        }
    }

    fn from_tag(tag: &[u8]) -> Option<LogSource> {
        match tag {
            b"app" => Some(LogSource::App),
            b"worker" => Some(LogSource::Worker),
            b"sandbox" => Some(LogSource::Sandbox),
            _ => None,
        }
    }
}

/// One line of a sandbox's log, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When init read it, in milliseconds since the Unix epoch (0: unknown).
    pub time_ms: u64,
    /// Which output.
    pub stream: LogStream,
    /// Which process.
    pub source: LogSource,
    /// The app's bytes, raw (never parsed, escaped before a terminal).
    pub text: Vec<u8>,
}

/// One log line as it crosses the control socket (and as `host logs --json` prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLogLine {
    /// When init read it, RFC 3339 in UTC with milliseconds (empty: unknown).
    pub time: String,
    /// Which output.
    pub stream: LogStream,
    /// Which process.
    pub source: LogSource,
    /// The app's text, as written (invalid UTF-8 replaced by U+FFFD; JSON escapes control
    /// characters, a terminal view must escape them: `host::output::untrusted`).
    pub text: String,
}

impl WireLogLine {
    /// The source's short name (`app`, `worker`, `sandbox`).
    pub fn source_name(&self) -> &'static str {
        self.source.tag()
    }
}

impl From<&LogLine> for WireLogLine {
    fn from(line: &LogLine) -> WireLogLine {
        let time = if line.time_ms == 0 {
            String::new()
        } else {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(line.time_ms);
            humantime::format_rfc3339_millis(at).to_string()
        };
        WireLogLine {
            time,
            stream: line.stream,
            source: line.source,
            text: String::from_utf8_lossy(&line.text).into_owned(),
        }
    }
}

/// The record prefix init writes before a line's text.
pub fn header(time_ms: u64, stream: LogStream, source: LogSource) -> String {
    format!("{time_ms} {} {} ", stream.tag(), source.tag())
}

/// Parses one record (without its newline); a line that is not a record is a notice with
/// the whole line as its text and `time_ms` 0.
pub fn parse(line: &[u8]) -> LogLine {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let fields = (parts.next(), parts.next(), parts.next(), parts.next());
    if let (Some(time), Some(stream), Some(source), text) = fields
        && let Some(time_ms) = std::str::from_utf8(time)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
        && let (Some(stream), Some(source)) =
            (LogStream::from_tag(stream), LogSource::from_tag(source))
    {
        return LogLine {
            time_ms,
            stream,
            source,
            text: text.unwrap_or_default().to_vec(),
        };
    }
    LogLine {
        time_ms: 0,
        stream: LogStream::Notice,
        source: LogSource::Sandbox,
        text: line.to_vec(),
    }
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_anything_else_is_a_notice() {
        let mut record = header(17, LogStream::Stdout, LogSource::Worker).into_bytes();
        record.extend_from_slice(b"hello \x1b[2J world");
        let line = parse(&record);
        assert_eq!(line.time_ms, 17);
        assert_eq!(line.stream, LogStream::Stdout);
        assert_eq!(line.source, LogSource::Worker);
        assert_eq!(line.text, b"hello \x1b[2J world");
        let empty = parse(b"5 err app ");
        assert_eq!((empty.stream, empty.text), (LogStream::Stderr, Vec::new()));
        let wire = WireLogLine::from(&parse(b"1765120000123 err app caf\xc3\xa9 \xff\x07"));
        assert_eq!(wire.time, "2025-12-07T15:06:40.123Z");
        assert_eq!(wire.text, "café \u{fffd}\u{7}");
        let json = serde_json::to_string(&wire).unwrap();
        assert_eq!(
            json,
            r#"{"time":"2025-12-07T15:06:40.123Z","stream":"stderr","source":"app","text":"café �\u0007"}"#
        );
        for junk in [&b"garbage"[..], b"12 out", b"12 bad app x", b"x out app y"] {
            let line = parse(junk);
            assert_eq!((line.time_ms, line.stream), (0, LogStream::Notice));
            assert_eq!(line.text, junk);
        }
    }
}
