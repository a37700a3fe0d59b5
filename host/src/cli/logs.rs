//! `host logs ID [--follow] [--since WHEN] [--last N] [--json]`: a sandbox's log (what its
//! app process and workers wrote to stdout and stderr, and the sandbox's own notices), and
//! `host destroy ID [--purge]`. Every line's text is the app's: shown escaped
//! ([`untrusted`]), or with `--json` as one JSON object a line (`time`, `stream`, `source`,
//! `text`), where JSON's escapes keep it inert.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::Value;

use crate::client::{self, Client, ClientArgs, ClientError, failure};
use crate::output::untrusted;
use daemon::socket_path;
use proto::control::{self as wire, Request};
use proto::logline::{LogSource, WireLogLine};

/// Options of `host logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Sandbox id (a destroyed sandbox's log is kept for 10 minutes).
    pub id: String,
    /// After the newest lines, print every new line until interrupted or the sandbox is
    /// destroyed.
    #[arg(short, long)]
    pub follow: bool,
    /// Only lines from then on: a duration back from now (`90s`, `10m`, `1h`) or an RFC 3339
    /// time (`2026-12-07T15:25:00Z`).
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<u64>,
    /// At most the N newest lines of the log kept (default: all of its last MiB).
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `host destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Sandbox id.
    pub id: String,
    /// Remove its log too (otherwise kept 10 minutes for `host logs`); also removes the kept
    /// log of a sandbox destroyed already.
    #[arg(long)]
    pub purge: bool,
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `--since`: milliseconds since the Unix epoch.
fn parse_since(text: &str) -> Result<u64, String> {
    let at = match humantime::parse_duration(text) {
        Ok(back) => SystemTime::now()
            .checked_sub(back)
            .ok_or_else(|| format!("{text}: too far back"))?,
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|e| {
            format!("{text:?}: neither a duration (10m, 1h) nor an RFC 3339 time ({e})")
        })?,
    };
    Ok(at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64)
}

/// Runs `host logs`: exit 0 when the log (or, following, the stream) ended normally.
pub fn run_logs(a: &LogsArgs) -> ExitCode {
    if a.client.cluster.is_set() {
        return super::fleet_hook::logs(a);
    }
    match stream(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failure(a.client.json, &e),
    }
}

fn stream(a: &LogsArgs) -> Result<(), ClientError> {
    let socket = socket_path::resolve(a.client.socket.as_deref());
    let request = Request::Logs {
        id: a.id.clone(),
        follow: a.follow,
        since_ms: a.since,
        last: a.last,
    };
    let (header, mut conn) = Client::connect(&socket)?.open_stream(&request, &[])?;
    let backlog = header["backlog"].as_u64().unwrap_or(0);
    let live = header["live"].as_bool().unwrap_or(false);
    let mut buf = Vec::new();
    let follow = a.follow && live;
    let mut seen = 0u64;
    while follow || seen < backlog {
        buf.clear();
        if !client::read_line(&mut conn, &mut buf).map_err(ClientError::Io)? {
            return if follow {
                Ok(())
            } else {
                Err(ClientError::Protocol("the log ended early".into()))
            };
        }
        seen += 1;
        let text = String::from_utf8_lossy(buf.trim_ascii());
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| ClientError::Protocol(format!("{e}: {text}")))?;
        if let Some(error) = value.get("error") {
            let e: wire::WireError = serde_json::from_value(error.clone())
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            return Err(ClientError::Remote(e));
        }
        if let Some(ended) = value.get("ended") {
            if !a.client.json {
                let why = ended.as_str().unwrap_or("ended");
                crate::output::error_line(&format!("host: {}", untrusted(why)));
            }
            return Ok(());
        }
        let line: WireLogLine = serde_json::from_value(value.clone())
            .map_err(|e| ClientError::Protocol(format!("{e}: {text}")))?;
        if a.client.json {
            crate::output::line(&crate::output::json(&value));
        } else {
            crate::output::line(&render_line(&line));
        }
    }
    Ok(())
}

/// One line for humans: `time source stream text`, the text escaped (it is the app's).
pub fn render_line(line: &WireLogLine) -> String {
    let time = if line.time.is_empty() {
        "-"
    } else {
        &line.time
    };
    let stream = match line.source {
        LogSource::Sandbox => "notice",
        _ => match line.stream {
            proto::logline::LogStream::Stdout => "stdout",
            proto::logline::LogStream::Stderr => "stderr",
            proto::logline::LogStream::Notice => "notice",
        },
    };
    format!(
        "{time} {} {stream} {}",
        line.source_name(),
        untrusted(&line.text)
    )
}

/// Runs `host destroy`, and with `--purge` removes the sandbox's kept log.
pub fn run_destroy(a: &DestroyArgs) -> ExitCode {
    if a.client.cluster.is_set() {
        return super::fleet_hook::destroy(a);
    }
    let socket = socket_path::resolve(a.client.socket.as_deref());
    let result = Client::connect(&socket).and_then(|mut c| {
        let destroyed = match c.request(&Request::Destroy { id: a.id.clone() }) {
            Ok(_) => true,
            Err(ClientError::Remote(e)) if a.purge && e.kind == "not_found" => false,
            Err(e) => return Err(e),
        };
        let purged = if a.purge {
            let answer = c.request(&Request::PurgeLog { id: a.id.clone() })?;
            answer["purged"].as_bool().unwrap_or(false)
        } else {
            false
        };
        if !destroyed && !purged {
            return Err(ClientError::Remote(wire::WireError::new(
                "not_found",
                format!("sandbox {} not found, and no log of it is kept", a.id),
            )));
        }
        Ok((destroyed, purged))
    });
    match result {
        Ok((destroyed, purged)) => {
            if a.client.json {
                let value = if a.purge {
                    serde_json::json!({"destroyed": destroyed.then_some(&a.id), "purged": purged})
                } else {
                    serde_json::json!({ "destroyed": a.id })
                };
                crate::output::line(&crate::output::json(&value));
            } else {
                let what = match (destroyed, purged) {
                    (true, true) => format!("destroyed {} and removed its log", a.id),
                    (true, false) => format!("destroyed {}", a.id),
                    _ => format!("removed the kept log of {}", a.id),
                };
                crate::output::line(&what);
            }
            ExitCode::SUCCESS
        }
        Err(e) => failure(a.client.json, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let now = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        // Bracketed by clock reads on both sides (with one read before, a millisecond that
        // ticks in between made it 599 999 ms ago).
        let before = now();
        let ten_minutes_ago = parse_since("10m").unwrap();
        let after = now();
        assert!(
            (before - 600_000..=after - 600_000).contains(&ten_minutes_ago),
            "{before} {ten_minutes_ago} {after}"
        );
        assert_eq!(
            parse_since("2026-12-07T15:25:00Z").unwrap(),
            1_796_657_100_000
        );
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn a_line_is_rendered_with_its_text_escaped() {
        let line = WireLogLine {
            time: "2026-12-07T15:25:00.000Z".into(),
            stream: proto::logline::LogStream::Stderr,
            source: LogSource::Worker,
            text: "boom\u{1b}[2J\r\n + seccomp: FORGED".into(),
        };
        let shown = render_line(&line);
        assert_eq!(
            shown,
            "2026-12-07T15:25:00.000Z worker stderr boom\\u{1b}[2J\\r\\n + seccomp: FORGED"
        );
        assert!(!shown.chars().any(char::is_control));
    }
}
