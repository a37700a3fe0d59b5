//! `host events [ID] [--follow] [--json] [--last N]`: the daemon's event stream on stdout,
//! one line per event (JSON with `--json`, else `time event sandbox key=value…`). Events
//! carry words that are not the host's (an app's refusal of a reload, a model's summary):
//! every value is shown through [`crate::output::untrusted`], quoted unless it is a plain
//! word, and a value that quotes the app says so.

use std::process::ExitCode;

use serde_json::Value;

use crate::client::{self, Client, ClientError};
use daemon::socket_path;
use proto::control::{self as wire, Request};

/// Options of `host events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only events about this sandbox.
    pub id: Option<String>,
    /// After the backlog, print every new event until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// At most N backlog events [default: all the daemon keeps, see `serve --event-ring`].
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Client options.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// Runs `host events`: exit 0 when the backlog (or, following, the stream) ended normally.
pub fn run(a: &EventsArgs) -> ExitCode {
    match stream(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::client::failure(a.client.json, &e),
    }
}

fn stream(a: &EventsArgs) -> Result<(), ClientError> {
    let socket = socket_path::resolve(a.client.socket.as_deref());
    let request = Request::Events {
        id: a.id.clone(),
        follow: a.follow,
        last: a.last,
    };
    let (header, mut conn) = Client::connect(&socket)?.open_stream(&request, &[])?;
    let backlog = header["backlog"].as_u64().unwrap_or(0);
    let mut buf = Vec::new();
    let mut seen = 0u64;
    while a.follow || seen < backlog {
        buf.clear();
        if !client::read_line(&mut conn, &mut buf).map_err(ClientError::Io)? {
            // The daemon stopped (or evicted this follower after saying so).
            return if a.follow {
                Ok(())
            } else {
                Err(ClientError::Protocol("the backlog ended early".into()))
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
        if a.client.json {
            crate::output::line(&crate::output::json(&value));
        } else {
            crate::output::line(&render_event(&value));
        }
    }
    Ok(())
}

/// Fields that quote the app, by event: a reload's refusal is the new version's own words.
const QUOTING_FIELDS: &[(&str, &str)] = &[("sandbox.reload_failed", "reason")];

/// One event for humans: `time event sandbox key=value…` (`-` for a daemon-wide event);
/// a lag marker reads `lagged: N events missed`.
pub fn render_event(value: &Value) -> String {
    if let Some(n) = value.get("lagged") {
        return format!(
            "lagged: {} events missed (this reader fell behind)",
            crate::output::json(n)
        );
    }
    let s = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or("-");
    let mut out = format!(
        "{} {} {}",
        shown(s("time")),
        shown(s("event")),
        shown(s("sandbox"))
    );
    if let Some(fields) = value.as_object() {
        for (k, v) in fields {
            if matches!(k.as_str(), "seq" | "time" | "event" | "sandbox") {
                continue;
            }
            let v = match v {
                Value::String(t) => shown(t),
                other => crate::output::json(other),
            };
            out.push_str(&format!(" {}={v}", shown(k)));
            if QUOTING_FIELDS.contains(&(s("event"), k.as_str())) {
                out.push_str(&format!(" {}", crate::output::QUOTES_APP));
            }
        }
    }
    out
}

/// A plain word as it is; anything else (spaces, `=`, quotes, controls) quoted and escaped.
fn shown(text: &str) -> String {
    let plain = !text.is_empty()
        && text.chars().all(|c| {
            !c.is_whitespace() && !crate::output::acts_on_terminal(c) && !"\"\\=".contains(c)
        });
    if plain {
        text.to_string()
    } else {
        crate::output::untrusted(text).quoted().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_read_as_one_line_each() {
        let e = json!({"seq": 3, "time": "2025-01-01T00:00:00.000Z", "event": "sandbox.reloaded",
            "sandbox": "a", "from": 1, "to": 2});
        assert_eq!(
            render_event(&e),
            "2025-01-01T00:00:00.000Z sandbox.reloaded a from=1 to=2"
        );
        let e = json!({"time": "t", "event": "detector.held", "reason": "a b"});
        assert_eq!(render_event(&e), "t detector.held - reason=\"a b\"");
        assert!(render_event(&json!({"lagged": 5})).contains("5 events missed"));
    }

    #[test]
    fn app_words_in_events_are_escaped_and_labelled() {
        let e = json!({"time": "t", "event": "sandbox.reload_failed", "sandbox": "a",
            "reason": "no\u{1b}]0;x\u{7}\n + seccomp: ok", "version": 1});
        assert_eq!(
            render_event(&e),
            r#"t sandbox.reload_failed a reason="no\u{1b}]0;x\u{7}\n + seccomp: ok" (quotes the app) version=1"#
        );
        // A word that would forge a field of its own is quoted.
        let e = json!({"time": "t", "event": "x", "how": "a=b"});
        assert_eq!(render_event(&e), r#"t x - how="a=b""#);
    }
}
