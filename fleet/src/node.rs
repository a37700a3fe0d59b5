//! The node agent: beside a `host serve --cluster` daemon, it answers the fleet's requests
//! for this node on `sandbox.<node>.<op>` by passing them to the daemon's control socket
//! (the same session code every client goes through), keeps the node's record alive in the
//! nodes bucket, keeps the specs bucket in step with what it creates and destroys, and
//! re-creates the sandboxes of nodes that vanished (see `failover`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use mcp::backend::{Backend, BackendError, SocketBackend};
use proto::canary::CanaryWire;
use proto::control::{BAD_REQUEST, INTERNAL, ReloadWire, Request, WireError};
use proto::spec::AppSource;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::connect::{NodeArgs, check_name, parse_labels};
use crate::error::FleetError;
use crate::lattice::{self, Lattice, SpecRecord};
use crate::wire::{self, MAX_MESSAGE, TOO_LARGE};

/// Requests a node works on at once; past it the answer is `busy`.
pub const MAX_IN_FLIGHT: usize = 64;
/// How long a joining node waits for a NATS server to answer and for JetStream to be ready.
pub const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest one attempt to open the fleet's state may take before it is tried again.
pub const JOIN_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(8);
/// Largest library a node fetches from the object store.
pub const MAX_LIBRARY: u64 = 256 * 1024 * 1024;

/// A node that joined the fleet, ready to [`run`](Node::run).
#[derive(Debug)]
pub struct Node {
    pub(crate) name: String,
    pub(crate) capacity: u32,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) lattice: Lattice,
    pub(crate) daemon: SocketBackend,
    lib_dir: PathBuf,
}

impl Node {
    /// Connects to the fleet and opens (or creates) its state; fails at once on wrong
    /// credentials or an unreachable fleet. `socket` is the daemon's control socket,
    /// `lib_dir` where fetched libraries are kept.
    pub async fn join(args: &NodeArgs, socket: &Path, lib_dir: &Path) -> Result<Node, FleetError> {
        let name = args.name()?;
        let labels = args.labels()?;
        let client = args
            .connect
            .connect_patiently(&format!("sandbox-host node {name}"), JOIN_PATIENCE)
            .await?;
        let replicas = args.replicas.unwrap_or_else(|| {
            default_replicas(
                args.connect.urls().map_or(1, |u| u.len()),
                client.server_info().connect_urls.len(),
            )
        });
        if replicas < 3 && client.server_info().connect_urls.len() > 1 {
            tracing::warn!(
                node = %name, replicas,
                "fleet: fewer than 3 copies of the fleet's buckets: one server stopping stops the fleet's writes"
            );
        }
        tracing::info!(node = %name, replicas, "fleet: joining");
        // JetStream may still be electing its leaders (servers started with the daemons):
        // retried for a while before giving up.
        let started = std::time::Instant::now();
        let lattice = loop {
            // One attempt that hangs (a stream created by two nodes at once while the
            // cluster bootstraps was seen to get no answer) is abandoned and tried again.
            let attempt =
                tokio::time::timeout(JOIN_ATTEMPT, Lattice::create(client.clone(), replicas))
                    .await
                    .unwrap_or_else(|_| {
                        Err(FleetError::js(
                            "opening the fleet's buckets",
                            format!("no answer in {JOIN_ATTEMPT:?}"),
                        ))
                    });
            match attempt {
                Ok(lattice) => break lattice,
                Err(e) if started.elapsed() < JOIN_PATIENCE => {
                    tracing::warn!(error = %e, "fleet: JetStream not ready yet; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        std::fs::create_dir_all(lib_dir).map_err(|source| FleetError::Credentials {
            path: lib_dir.to_path_buf(),
            source,
        })?;
        Ok(Node {
            name,
            capacity: args.capacity,
            labels,
            lattice,
            daemon: SocketBackend::new(socket),
            lib_dir: lib_dir.to_path_buf(),
        })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Answers this node's subjects until the connection ends.
    pub async fn serve(self: Arc<Self>) -> Result<(), FleetError> {
        let node = self;
        let subject = format!("sandbox.{}.*", node.name);
        let mut requests = node
            .lattice
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|e| FleetError::js(format!("subscribing to {subject}"), e))?;
        tracing::info!(node = %node.name, "joined the fleet");
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        while let Some(message) = requests.next().await {
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            let op = message.subject.rsplit('.').next().unwrap_or("").to_string();
            let node = node.clone();
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(async move {
                        let labels = message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(wire::LABELS_HEADER))
                            .map(|v| v.as_str().to_string());
                        let answer = node.handle(&op, &message.payload, labels.as_deref()).await;
                        node.reply(reply, answer).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    let busy = WireError::new(
                        proto::control::BUSY,
                        format!("node {} has {MAX_IN_FLIGHT} requests in flight", node.name),
                    );
                    node.reply(reply, wire::answer(Err(busy))).await;
                }
            }
        }
        Ok(())
    }

    async fn reply(&self, to: async_nats::Subject, answer: Vec<u8>) {
        let max = self.lattice.client.server_info().max_payload;
        let answer = if answer.len() > max {
            wire::answer(Err(WireError::new(
                TOO_LARGE,
                format!(
                    "the answer of {} bytes is over NATS's max_payload of {max}",
                    answer.len()
                ),
            )))
        } else {
            answer
        };
        if let Err(e) = self.lattice.client.publish(to, answer.into()).await {
            tracing::warn!(error = %e, "fleet: answer not sent");
        }
    }

    /// Answers one request that arrived on the subject of `op`, with the text of its
    /// [`wire::LABELS_HEADER`] if it had one.
    pub async fn handle(&self, op: &str, payload: &[u8], labels: Option<&str>) -> Vec<u8> {
        if payload.len() > MAX_MESSAGE {
            return wire::answer(wire::decode(op, payload).map(|_| Value::Null));
        }
        wire::answer(self.dispatch(op, payload, labels).await)
    }

    async fn dispatch(
        &self,
        op: &str,
        payload: &[u8],
        labels: Option<&str>,
    ) -> Result<Value, WireError> {
        match wire::decode(op, payload)? {
            Request::Create { id, spec, watch } => {
                let labels = match labels {
                    Some(text) if text.len() > wire::MAX_LABELS_HEADER => {
                        return Err(WireError::new(
                            BAD_REQUEST,
                            format!(
                                "the {} header is over {} bytes",
                                wire::LABELS_HEADER,
                                wire::MAX_LABELS_HEADER
                            ),
                        ));
                    }
                    Some(text) => parse_labels(text)
                        .map_err(|e| WireError::new(BAD_REQUEST, e.to_string()))?,
                    None => BTreeMap::new(),
                };
                self.create(id, spec, watch, labels).await
            }
            Request::Reload { id, source, canary } => self.reload(id, source, canary).await,
            Request::Destroy { id } => {
                let result = self.forward(Request::Destroy { id: id.clone() }).await;
                if result.is_ok() || result.as_ref().is_err_and(|e| e.kind == "not_found") {
                    self.forget(&id).await;
                }
                result
            }
            Request::Logs {
                id,
                follow,
                since_ms,
                last,
            } => self.logs(id, follow, since_ms, last).await,
            other => self.forward(other).await,
        }
    }

    /// Passes a request to the daemon.
    pub(crate) async fn forward(&self, request: Request) -> Result<Value, WireError> {
        self.daemon.request(request).await.map_err(daemon_error)
    }

    async fn create(
        &self,
        id: String,
        spec: proto::spec::SandboxSpec,
        watch: Option<bool>,
        labels: BTreeMap<String, String>,
    ) -> Result<Value, WireError> {
        check_name("sandbox", &id).map_err(|e| WireError::new(BAD_REQUEST, e.to_string()))?;
        let hash = wire::content_hash(&spec.app)?;
        let path = self.library(&hash).await?;
        let record = SpecRecord {
            id: id.clone(),
            node: self.name.clone(),
            spec: spec.clone(),
            watch,
            generation: 0,
            labels,
            waiting: None,
        };
        let bytes = serde_json::to_vec(&record).map_err(internal)?;
        if let Err(e) = self.lattice.specs.create(&id, bytes.into()).await {
            return Err(if e.kind() == kv::CreateErrorKind::AlreadyExists {
                WireError::new(
                    "already_exists",
                    format!("sandbox {id} already exists in the fleet"),
                )
            } else {
                WireError::new(INTERNAL, format!("recording {id} in the fleet: {e}"))
            });
        }
        let mut local = spec;
        local.app = AppSource::Library(path);
        let result = self
            .forward(Request::Create {
                id: id.clone(),
                spec: local,
                watch,
            })
            .await;
        if result.is_err() {
            self.forget(&id).await;
        }
        result
    }

    async fn reload(
        &self,
        id: String,
        source: ReloadWire,
        canary: Option<CanaryWire>,
    ) -> Result<Value, WireError> {
        let ReloadWire::Library(name) = source else {
            return Err(WireError::new(
                BAD_REQUEST,
                "in a fleet a reload takes a library (--lib FILE)",
            ));
        };
        let hash = wire::library_hash(&name.to_string_lossy())?;
        let path = self.library(&hash).await?;
        let answer = self
            .forward(Request::Reload {
                id: id.clone(),
                source: ReloadWire::Library(path),
                canary,
            })
            .await?;
        // The fleet re-creates it from this version from now on.
        for _ in 0..3 {
            let Ok(Some((mut record, revision))) = self.lattice.spec(&id).await else {
                break;
            };
            if record.node != self.name {
                break;
            }
            record.spec.app = AppSource::Library(name.clone());
            let Ok(bytes) = serde_json::to_vec(&record) else {
                break;
            };
            if self
                .lattice
                .specs
                .update(&id, bytes.into(), revision)
                .await
                .is_ok()
            {
                break;
            }
        }
        Ok(answer)
    }

    /// Removes `id`'s record when this node owns it.
    async fn forget(&self, id: &str) {
        if let Ok(Some((record, revision))) = self.lattice.spec(id).await
            && record.node == self.name
            && let Err(e) = self
                .lattice
                .specs
                .delete_expect_revision(id, Some(revision))
                .await
        {
            tracing::warn!(id, error = %e, "fleet: spec record not removed");
        }
    }

    /// The library of sha256 `hash` on this machine, fetched from the object store when
    /// missing (bounded, checked against its hash).
    pub(crate) async fn library(&self, hash: &str) -> Result<PathBuf, WireError> {
        let path = self.lib_dir.join(format!("{hash}.so"));
        if path.exists() {
            return Ok(path);
        }
        let mut object = self.lattice.libs.get(hash).await.map_err(|e| {
            WireError::new(
                "not_found",
                format!("library sha256:{hash} is not in the fleet: {e}"),
            )
        })?;
        // Named for this fetch alone: creates of one library run at once (a batch), each may
        // fetch it, and the last rename wins with the same bytes.
        static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let fetch = FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .lib_dir
            .join(format!(".{hash}.{}.{fetch}.part", std::process::id()));
        let fetched = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(internal)?;
            let mut digest = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                let n = object.read(&mut buf).await.map_err(internal)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                if total > MAX_LIBRARY {
                    return Err(WireError::new(
                        TOO_LARGE,
                        format!("library sha256:{hash} is over {MAX_LIBRARY} bytes"),
                    ));
                }
                digest.update(&buf[..n]);
                file.write_all(&buf[..n]).await.map_err(internal)?;
            }
            file.sync_all().await.map_err(internal)?;
            let got = hex(&digest.finalize());
            if got != hash {
                return Err(WireError::new(
                    BAD_REQUEST,
                    format!("library sha256:{hash} in the object store hashes to {got}"),
                ));
            }
            tokio::fs::rename(&tmp, &path).await.map_err(internal)
        }
        .await;
        if fetched.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        fetched.map(|()| path)
    }

    /// Publishes one fleet event on the events stream.
    pub(crate) async fn event(&self, kind: &str, id: &str, message: String) {
        let event = serde_json::json!({
            "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "event": format!("fleet.{kind}"),
            "sandbox": id,
            "node": self.name,
            "message": message,
        });
        self.publish(event).await;
    }

    /// Publishes `event` on this node's events subject and waits for the stream to store it
    /// (a failure is logged: an event is never worth failing the work it tells of).
    pub(crate) async fn publish(&self, event: Value) {
        let subject = lattice::events_subject(&self.name);
        match self
            .lattice
            .js
            .publish(subject, event.to_string().into())
            .await
        {
            Ok(ack) => {
                if let Err(e) = ack.await {
                    tracing::warn!(error = %e, "fleet: event not stored");
                }
            }
            Err(e) => tracing::warn!(error = %e, "fleet: event not published"),
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn internal(e: impl std::fmt::Display) -> WireError {
    WireError::new(INTERNAL, e.to_string())
}

fn daemon_error(e: BackendError) -> WireError {
    match e {
        BackendError::Remote(e) => e,
        other => WireError::new(wire::NO_ANSWER, format!("this node's daemon: {other}")),
    }
}

/// Copies of the fleet's buckets when `--replicas` is not given: the servers known, at most 3.
///
/// The servers known are the more of those the node was given (`--cluster`) and those the
/// server it reached advertises. The advertised list alone is not enough: while a cluster
/// forms, a server may know only one of its two peers, and the first node to join would make
/// every bucket R2, which stops taking writes when either of its two servers stops (seen in
/// CI: a fleet that lost one of three servers refused every create).
pub fn default_replicas(configured: usize, advertised: usize) -> usize {
    configured.max(advertised).clamp(1, 3)
}

#[cfg(test)]
mod tests {
    use super::default_replicas;

    #[test]
    fn default_replicas_counts_the_servers_the_node_was_given_too() {
        // (given with --cluster, advertised by the server reached, copies)
        for (configured, advertised, want) in [
            (1, 0, 1),
            (1, 1, 1),
            (3, 2, 3), // a cluster still forming: the configured list knows better
            (1, 2, 2),
            (1, 5, 3),
            (2, 2, 2),
            (5, 5, 3),
        ] {
            assert_eq!(
                default_replicas(configured, advertised),
                want,
                "{configured} given, {advertised} advertised"
            );
        }
    }
}
