//! Where the detector's verdicts go besides the event stream: a JSON-lines file (bounded by
//! rotation) and a webhook (bounded queue, timeout, retries with backoff).
//!
//! Neither may slow the detector: both take records through bounded queues and drop (and
//! count) what does not fit; the file is written on a thread of its own, the webhook by a
//! task of its own.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

/// Records the JSONL writer's queue holds before it drops new ones.
pub const JSONL_QUEUE: usize = 256;
/// Verdicts the webhook queue holds before it drops the oldest.
pub const WEBHOOK_QUEUE: usize = 64;
/// Time one webhook POST may take.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries after a failed POST (so at most 4 attempts), waiting 0.5, 1, 2 s in between.
pub const WEBHOOK_RETRIES: u32 = 3;
const WEBHOOK_BACKOFF: Duration = Duration::from_millis(500);

/// One verdict of a detector-triggered run, as the sinks get it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `verdict`.
    pub kind: &'static str,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// The sandbox.
    pub sandbox: String,
    /// The operator run's id (as in the `operator.*` events).
    pub run: String,
    /// What triggered it: the flagged metric, value, mean, z and rule.
    pub anomaly: serde_json::Value,
    /// The operator's state (`unknown` without a verdict).
    pub state: String,
    /// Its summary.
    pub summary: String,
    /// Its notifications.
    pub notifications: Vec<serde_json::Value>,
    /// Whether the verdict agrees with live telemetry (the demo's guardrail); a refused one
    /// has `accepted: false` and the reason in `guardrail`.
    pub accepted: bool,
    /// Why the guardrail refused it, or why there is no verdict.
    pub guardrail: Option<String>,
}

/// Why a sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The JSONL file cannot be opened.
    #[error("open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The webhook URL or HTTP client is unusable.
    #[error("webhook {url}: {why}")]
    Webhook {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
}

/// Appends records to a file, one JSON object per line. When the file would pass `max`
/// bytes it is renamed to `FILE.1` (replacing the previous one) and a new one begun, so the
/// two never hold more than `2 * max`.
#[derive(Debug, Clone)]
pub struct JsonlSink {
    tx: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl JsonlSink {
    /// Opens (appending) `path` and starts its writer thread.
    pub fn open(path: &Path, max: u64) -> Result<JsonlSink, SinkError> {
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = std::sync::mpsc::sync_channel(JSONL_QUEUE);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("watch-jsonl".into())
            .spawn(move || write_loop(rx, path, file, size, max.max(1)))
            .map_err(|source| SinkError::Open {
                path: PathBuf::from("watch-jsonl thread"),
                source,
            })?;
        Ok(JsonlSink {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues one record; drops it (counted) when the writer is behind.
    pub fn write<T: Serialize>(&self, record: &T) {
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(dropped = n, "watch jsonl: writer behind, record dropped");
            }
        }
    }
}

fn open_append(path: &Path) -> Result<File, SinkError> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| SinkError::Open {
            path: path.to_owned(),
            source,
        })
}

fn write_loop(rx: Receiver<Vec<u8>>, path: PathBuf, mut file: File, mut size: u64, max: u64) {
    let mut old = path.clone().into_os_string();
    old.push(".1");
    while let Ok(line) = rx.recv() {
        if size > 0 && size + line.len() as u64 > max {
            let rotated = std::fs::rename(&path, &old)
                .map_err(|e| e.to_string())
                .and_then(|()| open_append(&path).map_err(|e| e.to_string()));
            match rotated {
                Ok(f) => {
                    file = f;
                    size = 0;
                }
                Err(e) => tracing::warn!("watch jsonl: rotate {}: {e}", path.display()),
            }
        }
        match file.write_all(&line) {
            Ok(()) => size += line.len() as u64,
            Err(e) => tracing::warn!("watch jsonl: write {}: {e}", path.display()),
        }
    }
}

/// POSTs verdicts to a URL, one at a time, oldest first.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    queue: Arc<Mutex<VecDeque<Verdict>>>,
    wake: Arc<Notify>,
    dropped: Arc<AtomicU64>,
}

impl WebhookSink {
    /// Starts the sender task for `url` (http or https, rustls).
    pub fn start(url: &str) -> Result<WebhookSink, SinkError> {
        let bad = |why: String| SinkError::Webhook {
            url: url.to_string(),
            why,
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("not an http or https URL".into()));
        }
        let client = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .user_agent(concat!("sandbox-host-watch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let sink = WebhookSink {
            queue: Arc::new(Mutex::new(VecDeque::with_capacity(WEBHOOK_QUEUE))),
            wake: Arc::new(Notify::new()),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(send_loop(sink.clone(), client, parsed));
        Ok(sink)
    }

    /// Queues a verdict; when the queue is full the oldest is dropped (and counted).
    pub fn send(&self, verdict: Verdict) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= WEBHOOK_QUEUE {
            q.pop_front();
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                dropped = n,
                "watch webhook: queue full, oldest verdict dropped"
            );
        }
        q.push_back(verdict);
        drop(q);
        self.wake.notify_one();
    }

    /// Verdicts dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn send_loop(sink: WebhookSink, client: reqwest::Client, url: reqwest::Url) {
    loop {
        let next = sink
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let Some(verdict) = next else {
            sink.wake.notified().await;
            continue;
        };
        let mut wait = WEBHOOK_BACKOFF;
        for attempt in 0..=WEBHOOK_RETRIES {
            let sent = client.post(url.clone()).json(&verdict).send().await;
            let why = match sent {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => format!("status {}", r.status()),
                Err(e) => e.to_string(),
            };
            if attempt == WEBHOOK_RETRIES {
                tracing::warn!(sandbox = %verdict.sandbox, run = %verdict.run,
                    "watch webhook: gave up after {} attempts: {why}", attempt + 1);
                break;
            }
            tracing::info!(sandbox = %verdict.sandbox, "watch webhook: {why}; retrying in {wait:?}");
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jsonl_file_rotates_at_its_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("w.jsonl");
        let (tx, rx) = std::sync::mpsc::sync_channel(JSONL_QUEUE);
        for i in 0..20 {
            tx.send(format!("{{\"i\":{i},\"pad\":\"xxxxxxxxxxxxxxxxxxxx\"}}\n").into_bytes())
                .unwrap();
        }
        drop(tx);
        // Runs here until the queue is drained.
        write_loop(rx, path.clone(), open_append(&path).unwrap(), 0, 100);
        let old = tmp.path().join("w.jsonl.1");
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        assert!(std::fs::metadata(&old).unwrap().len() <= 100);
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"i\":19"));
    }

    #[test]
    fn a_webhook_url_must_be_http() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(WebhookSink::start("ftp://x/").is_err());
            assert!(WebhookSink::start("not a url").is_err());
            assert!(WebhookSink::start("http://127.0.0.1:9/hook").is_ok());
        });
    }
}
