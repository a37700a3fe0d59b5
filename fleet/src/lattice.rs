//! The fleet's shared state in JetStream: the nodes and specs buckets, the library object
//! store, the events stream, and the records kept in them.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};
use futures_util::StreamExt;
use proto::spec::SandboxSpec;
use serde::{Deserialize, Serialize};

use crate::error::FleetError;

/// KV bucket of live nodes (key: node name).
pub const NODES: &str = "sandbox_nodes";
/// KV bucket of sandboxes' desired state (key: sandbox id).
pub const SPECS: &str = "sandbox_specs";
/// Object store of libraries (name: sha256, hex).
pub const LIBS: &str = "sandbox_libs";
/// Stream of every node's events (subjects `events.<node>`).
pub const EVENTS: &str = "SANDBOX_EVENTS";
/// How often a node refreshes its record.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node's record lives without a refresh.
pub const NODE_TTL: Duration = Duration::from_secs(3);
/// Events the stream keeps (the oldest go first).
pub const EVENTS_KEPT: i64 = 100_000;

/// The subject a request for `op` to `node` goes on.
pub fn subject(node: &str, op: &str) -> String {
    format!("sandbox.{node}.{op}")
}

/// The subject of `node`'s events.
pub fn events_subject(node: &str) -> String {
    format!("events.{node}")
}

/// What a node says of itself in [`NODES`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its name.
    pub node: String,
    /// Most sandboxes placed on it.
    pub capacity: u32,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Sandboxes its daemon runs now.
    pub sandboxes: usize,
    /// The machine's available memory, in bytes.
    pub free_memory: u64,
    /// Its daemon's version.
    pub version: String,
    /// When it wrote this, in milliseconds since the Unix epoch.
    pub seen_ms: u64,
}

/// One sandbox's desired state in [`SPECS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecRecord {
    /// Sandbox id.
    pub id: String,
    /// The node that owns it.
    pub node: String,
    /// Its spec; the app is `{"library":"sha256:HEX"}`.
    pub spec: SandboxSpec,
    /// Whether the detector watches it.
    #[serde(default)]
    pub watch: Option<bool>,
    /// How many times it was re-created on another node.
    #[serde(default)]
    pub generation: u32,
    /// The labels its creator asked for (`create --label`): only a node that has all of
    /// them re-creates it when its owner vanishes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Set while its owner is gone and no live node can take it (see [`Waiting`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
}

impl SpecRecord {
    /// Whether a node with `labels` may own this sandbox.
    pub fn fits(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The fleet's buckets, store and stream, opened.
#[derive(Clone)]
pub struct Lattice {
    /// The connection.
    pub client: async_nats::Client,
    /// Its JetStream context.
    pub js: jetstream::Context,
    /// Live nodes.
    pub nodes: kv::Store,
    /// Sandboxes' specs and owners.
    pub specs: kv::Store,
    /// Libraries by sha256.
    pub libs: object_store::ObjectStore,
}

impl std::fmt::Debug for Lattice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lattice")
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl Lattice {
    /// Opens the fleet's state, creating what is missing with `replicas` copies (a node
    /// does this when it joins).
    pub async fn create(
        client: async_nats::Client,
        replicas: usize,
    ) -> Result<Lattice, FleetError> {
        let js = jetstream::new(client.clone());
        let replicas = replicas.clamp(1, 5);
        let nodes = bucket(
            &js,
            NODES,
            "live sandbox-host nodes",
            1,
            NODE_TTL,
            64 * 1024,
            replicas,
        )
        .await?;
        let specs = bucket(
            &js,
            SPECS,
            "sandboxes' specs and owners",
            5,
            Duration::ZERO,
            1024 * 1024,
            replicas,
        )
        .await?;
        let libs = match js.get_object_store(LIBS).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: LIBS.into(),
                    description: Some("app libraries by sha256".into()),
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| FleetError::js(format!("creating object store {LIBS}"), e))?,
        };
        js.get_or_create_stream(stream::Config {
            name: EVENTS.into(),
            subjects: vec!["events.>".into()],
            max_messages: EVENTS_KEPT,
            max_message_size: 64 * 1024,
            max_age: Duration::from_secs(24 * 3600),
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| FleetError::js(format!("creating stream {EVENTS}"), e))?;
        Ok(Lattice {
            client,
            js,
            nodes,
            specs,
            libs,
        })
    }

    /// Opens the fleet's state as a client: it must exist (some node joined).
    pub async fn open(client: async_nats::Client) -> Result<Lattice, FleetError> {
        let js = jetstream::new(client.clone());
        let missing = |what: &str, e: &dyn std::fmt::Display| {
            FleetError::js(
                format!("no fleet state ({what}); has a node joined with `host serve --cluster`?"),
                e,
            )
        };
        let nodes = js
            .get_key_value(NODES)
            .await
            .map_err(|e| missing(NODES, &e))?;
        let specs = js
            .get_key_value(SPECS)
            .await
            .map_err(|e| missing(SPECS, &e))?;
        let libs = js
            .get_object_store(LIBS)
            .await
            .map_err(|e| missing(LIBS, &e))?;
        Ok(Lattice {
            client,
            js,
            nodes,
            specs,
            libs,
        })
    }

    /// The live nodes, by name.
    pub async fn live_nodes(&self) -> Result<BTreeMap<String, NodeRecord>, FleetError> {
        let mut out = BTreeMap::new();
        for key in keys(&self.nodes, NODES).await? {
            if let Ok(Some(value)) = self.nodes.get(&key).await
                && let Ok(record) = serde_json::from_slice::<NodeRecord>(&value)
            {
                out.insert(key, record);
            }
        }
        Ok(out)
    }

    /// Every sandbox's record with its revision, by id.
    pub async fn all_specs(&self) -> Result<BTreeMap<String, (SpecRecord, u64)>, FleetError> {
        let mut out = BTreeMap::new();
        for key in keys(&self.specs, SPECS).await? {
            if let Some(found) = self.spec(&key).await? {
                out.insert(key, found);
            }
        }
        Ok(out)
    }

    /// One sandbox's record and its revision.
    pub async fn spec(&self, id: &str) -> Result<Option<(SpecRecord, u64)>, FleetError> {
        let entry = self
            .specs
            .entry(id)
            .await
            .map_err(|e| FleetError::js(format!("reading {SPECS}/{id}"), e))?;
        Ok(entry.and_then(|e| {
            if e.operation != kv::Operation::Put {
                return None;
            }
            serde_json::from_slice::<SpecRecord>(&e.value)
                .ok()
                .map(|r| (r, e.revision))
        }))
    }
}

/// Opens KV bucket `name`, creating it when missing. Its stream is made here, as the
/// client's `create_key_value` would, because that call first reads the account's info in a
/// shape nats-server 2.9 does not send.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    history: i64,
    max_age: Duration,
    max_value_size: i32,
    replicas: usize,
) -> Result<kv::Store, FleetError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let config = stream::Config {
        name: format!("KV_{name}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: history,
        max_age,
        max_message_size: max_value_size,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| FleetError::js(format!("creating bucket {name}"), e))?;
    js.get_key_value(name)
        .await
        .map_err(|e| FleetError::js(format!("opening bucket {name}"), e))
}

/// The keys of `bucket`, from its stream's subjects (a stream-info request the stream's
/// leader answers: no consumer is made, so none can land on a server that is down).
async fn keys(store: &kv::Store, bucket: &str) -> Result<Vec<String>, FleetError> {
    let prefix = format!("$KV.{bucket}.");
    let mut subjects = store
        .stream
        .info_with_subjects(format!("{prefix}>"))
        .await
        .map_err(|e| FleetError::js(format!("listing {bucket}"), e))?;
    let mut out = Vec::new();
    while let Some(item) = subjects.next().await {
        let (subject, _) = item.map_err(|e| FleetError::js(format!("listing {bucket}"), e))?;
        if let Some(key) = subject.strip_prefix(&prefix) {
            out.push(key.to_string());
        }
    }
    Ok(out)
}

/// Why an orphaned sandbox waits: written once (compare-and-set) by the node that announced
/// it with a `fleet.orphaned` event, cleared by the node that takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    /// The owner that vanished.
    pub from: String,
    /// Why no live node takes it, e.g. `every live node it fits is at capacity`.
    pub reason: String,
    /// Since when, in milliseconds since the Unix epoch.
    pub since_ms: u64,
}
