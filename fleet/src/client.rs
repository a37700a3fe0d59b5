//! The fleet's client side (`host ... --cluster`): places a create on the node with the
//! most free capacity that meets its constraints (after uploading its library to the object
//! store by sha256), routes every other request to the owner named in the specs bucket, and
//! merges `list` over all live nodes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proto::control::{ReloadWire, Request, WireError};
use proto::spec::AppSource;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::connect::{ConnectArgs, PlaceArgs, check_name};
use crate::error::FleetError;
use crate::lattice::{self, Lattice, NodeRecord};
use crate::node::{MAX_LIBRARY, hex};
use crate::wire::{self, NO_ANSWER, NO_CAPACITY};

/// A connection to the fleet.
#[derive(Debug, Clone)]
pub struct FleetClient {
    lattice: Lattice,
}

/// A node as `host nodes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    /// What the node says of itself.
    #[serde(flatten)]
    pub record: NodeRecord,
    /// Sandboxes the specs bucket gives it.
    pub owned: usize,
}

impl FleetClient {
    /// Connects to the fleet `args` names.
    pub async fn connect(args: &ConnectArgs) -> Result<FleetClient, FleetError> {
        let client = args.connect("sandbox-host client").await?;
        Ok(FleetClient {
            lattice: Lattice::open(client).await?,
        })
    }

    /// The fleet's state.
    pub fn lattice(&self) -> &Lattice {
        &self.lattice
    }

    /// The live nodes and what each owns.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, FleetError> {
        let live = self.lattice.live_nodes().await?;
        let owned = self.owned().await?;
        Ok(live
            .into_values()
            .map(|record| NodeView {
                owned: owned.get(&record.node).copied().unwrap_or(0),
                record,
            })
            .collect())
    }

    async fn owned(&self) -> Result<BTreeMap<String, usize>, FleetError> {
        let mut owned = BTreeMap::new();
        for (record, _) in self.lattice.all_specs().await?.into_values() {
            *owned.entry(record.node).or_insert(0) += 1;
        }
        Ok(owned)
    }

    /// The node a new sandbox goes to: the most free capacity among the live nodes that
    /// meet `place` (ties: the name).
    pub async fn place(&self, place: &PlaceArgs) -> Result<String, FleetError> {
        let want = place.labels()?;
        let live = self.lattice.live_nodes().await?;
        let owned = self.owned().await?;
        live.values()
            .filter(|n| place.node.as_ref().is_none_or(|only| &n.node == only))
            .filter(|n| want.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
            .map(|n| {
                let used = owned.get(&n.node).copied().unwrap_or(0);
                (n.capacity as i64 - used as i64, n.node.clone())
            })
            .filter(|(free, _)| *free > 0)
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)))
            .map(|(_, node)| node)
            .ok_or_else(|| {
                FleetError::Remote(WireError::new(
                    NO_CAPACITY,
                    format!(
                        "no live node with free capacity meets the constraints (live: {})",
                        live.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ))
            })
    }

    /// Uploads the library at `path` (when the store lacks it) and returns its content name.
    pub async fn upload(&self, path: &Path) -> Result<String, FleetError> {
        let input =
            |e: &dyn std::fmt::Display| FleetError::Input(format!("{}: {e}", path.display()));
        let size = std::fs::metadata(path).map_err(|e| input(&e))?.len();
        if size > MAX_LIBRARY {
            return Err(input(&format!(
                "{size} bytes is over the fleet's {MAX_LIBRARY}"
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| input(&e))?;
        let hash = hex(&Sha256::digest(&bytes));
        let present = matches!(self.lattice.libs.info(&hash).await, Ok(info) if !info.deleted);
        if !present {
            self.lattice
                .libs
                .put(hash.as_str(), &mut bytes.as_slice())
                .await
                .map_err(|e| FleetError::js(format!("uploading {}", path.display()), e))?;
        }
        Ok(format!("{}{hash}", wire::CONTENT))
    }

    /// The node that owns sandbox `id`.
    pub async fn owner(&self, id: &str) -> Result<String, FleetError> {
        match self.lattice.spec(id).await? {
            Some((record, _)) => Ok(record.node),
            None => Err(FleetError::Remote(WireError::new(
                "not_found",
                format!("sandbox {id} not found in the fleet"),
            ))),
        }
    }

    /// Sends `request` to `node` and waits for its answer.
    pub async fn send(&self, node: &str, request: &Request) -> Result<Value, FleetError> {
        self.send_labelled(node, request, &BTreeMap::new()).await
    }

    /// [`Client::send`] for a `create` with the labels its creator asked for (carried in
    /// [`wire::LABELS_HEADER`]; the node records them with the spec).
    pub async fn send_labelled(
        &self,
        node: &str,
        request: &Request,
        labels: &BTreeMap<String, String>,
    ) -> Result<Value, FleetError> {
        let op = wire::op_of(request);
        let payload = serde_json::to_vec(request)
            .map_err(|e| FleetError::Input(format!("encoding the request: {e}")))?;
        if payload.len() > wire::MAX_MESSAGE {
            return Err(FleetError::Input(format!(
                "a request of {} bytes is over the fleet's bound of {}",
                payload.len(),
                wire::MAX_MESSAGE
            )));
        }
        let timeout = match request {
            // A canary is watched for its window after the swap.
            Request::Reload {
                canary: Some(canary),
                ..
            } => Duration::from_millis(canary.watch_for_ms) + Duration::from_secs(120),
            Request::Create { .. } | Request::Reload { .. } => Duration::from_secs(120),
            Request::Call { timeout_ms, .. } => {
                Duration::from_millis(timeout_ms.unwrap_or(5_000)) + Duration::from_secs(10)
            }
            Request::Operate(proto::operate::OperateRequest { timeout_ms, .. })
            | Request::Ask(proto::ask::AskRequest { timeout_ms, .. }) => {
                Duration::from_millis(timeout_ms.unwrap_or(30_000)) + Duration::from_secs(10)
            }
            _ => Duration::from_secs(30),
        };
        let mut message = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(timeout));
        if !labels.is_empty() {
            let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(wire::LABELS_HEADER, text.join(",").as_str());
            message = message.headers(headers);
        }
        let message = self
            .lattice
            .client
            .send_request(lattice::subject(node, &op), message)
            .await
            .map_err(|e| {
                FleetError::Remote(WireError::new(
                    NO_ANSWER,
                    format!("node {node} did not answer {op}: {e}"),
                ))
            })?;
        wire::read_answer(&message.payload).map_err(|e| match e {
            Ok(remote) => FleetError::Remote(remote),
            Err(cause) => FleetError::Protocol {
                node: node.to_string(),
                cause,
            },
        })
    }

    /// Sends one client request where it belongs (see the module docs).
    pub async fn request(&self, request: Request, place: &PlaceArgs) -> Result<Value, FleetError> {
        match request {
            Request::Create {
                id,
                mut spec,
                watch,
            } => {
                check_name("sandbox", &id)?;
                let AppSource::Library(path) = &spec.app else {
                    return Err(FleetError::Input(
                        "in a fleet, create takes --lib FILE (a built library, uploaded to the \
                         fleet by its sha256); --app is not built for a fleet"
                            .into(),
                    ));
                };
                spec.app = AppSource::Library(self.upload(path).await?.into());
                let node = self.place(place).await?;
                // Re-placement after a node dies keeps to the same labels: the node records
                // them with the spec.
                let labels = place.labels()?;
                let create = Request::Create {
                    id: id.clone(),
                    spec,
                    watch,
                };
                let mut info = self.send_labelled(&node, &create, &labels).await?;
                if let Some(map) = info.as_object_mut() {
                    map.insert("node".into(), node.into());
                }
                Ok(info)
            }
            Request::List => self.list(place).await,
            Request::Ping => {
                let node = match &place.node {
                    Some(n) => n.clone(),
                    None => self.place(&PlaceArgs::default()).await?,
                };
                self.send(&node, &Request::Ping).await
            }
            Request::Reload { id, source, canary } => {
                let ReloadWire::Library(path) = source else {
                    return Err(FleetError::Input(
                        "in a fleet, reload takes --lib FILE (a built library)".into(),
                    ));
                };
                let name = self.upload(&path).await?;
                let node = self.owner(&id).await?;
                let source = ReloadWire::Library(name.into());
                self.send(&node, &Request::Reload { id, source, canary })
                    .await
            }
            Request::Info { ref id }
            | Request::Call { ref id, .. }
            | Request::Rollback { ref id, .. }
            | Request::Usage { ref id }
            | Request::Workers { ref id, .. }
            | Request::Restart { ref id }
            | Request::Destroy { ref id }
            | Request::Operate(proto::operate::OperateRequest { ref id, .. })
            | Request::Ask(proto::ask::AskRequest {
                id: Some(ref id), ..
            }) => {
                let node = self.owner(id).await?;
                self.send(&node, &request).await
            }
            other => Err(FleetError::Input(format!(
                "{} is not routed in a fleet yet",
                wire::op_of(&other)
            ))),
        }
    }

    /// Every live node's sandboxes, each with a `node` field.
    async fn list(&self, place: &PlaceArgs) -> Result<Value, FleetError> {
        let live = self.lattice.live_nodes().await?;
        let mut all = Vec::new();
        for node in live.keys() {
            if place.node.as_ref().is_some_and(|only| only != node) {
                continue;
            }
            match self.send(node, &Request::List).await {
                Ok(Value::Array(items)) => {
                    for mut item in items {
                        if let Some(map) = item.as_object_mut() {
                            map.insert("node".into(), node.clone().into());
                        }
                        all.push(item);
                    }
                }
                Ok(other) => {
                    return Err(FleetError::Protocol {
                        node: node.clone(),
                        cause: format!("list answered {other}"),
                    });
                }
                Err(e) => tracing::warn!(node, error = %e, "fleet: a node did not list"),
            }
        }
        if place.node.is_none() {
            all.extend(crate::orphans::list_entries(&self.lattice, &live).await?);
        }
        Ok(Value::Array(all))
    }
}

/// Connects and reads the fleet's newest events (for `host events --cluster`).
pub fn events_blocking(
    args: &ConnectArgs,
    id: Option<&str>,
    last: usize,
) -> Result<Vec<Value>, FleetError> {
    block_on(async {
        let client = FleetClient::connect(args).await?;
        crate::events::newest(client.lattice(), id, last).await
    })?
}

/// Runs `f` on a runtime of its own (the client commands are blocking).
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, FleetError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FleetError::Input(format!("cannot start the async runtime: {e}")))?;
    Ok(runtime.block_on(f))
}

/// Connects and sends one request (for the blocking client commands).
pub fn request_blocking(
    args: &ConnectArgs,
    place: &PlaceArgs,
    request: Request,
) -> Result<Value, FleetError> {
    block_on(async {
        let client = FleetClient::connect(args).await?;
        client.request(request, place).await
    })?
}

/// Connects and lists the live nodes (for `host nodes`).
pub fn nodes_blocking(args: &ConnectArgs) -> Result<Vec<NodeView>, FleetError> {
    block_on(async { FleetClient::connect(args).await?.nodes().await })?
}
