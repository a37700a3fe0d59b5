//! A fleet: many `host serve` daemons, one lattice over NATS JetStream.
//!
//! Modelled on wasmCloud's lattice. Each daemon started with `--cluster` runs a node agent
//! ([`node`]) beside it that talks to its daemon through the daemon's own control socket (as
//! `host mcp` does) and to the fleet through NATS:
//!
//! - membership: the `sandbox_nodes` KV bucket, one key per node, refreshed every second
//!   and expiring after three (a dead node vanishes by itself);
//! - desired state: the `sandbox_specs` KV bucket, one key per sandbox (its spec, its
//!   library's sha256 and its owner); ownership changes only by compare-and-set on the key's
//!   revision, so no sandbox is ever owned twice;
//! - artifacts: the `sandbox_libs` object store, each library named by its sha256;
//! - routing: requests on `sandbox.<node>.<op>`, each the control socket's own request
//!   JSON, answered with its answer JSON ([`wire`]);
//! - events: the `SANDBOX_EVENTS` stream (`events.<node>`).
//! - failover: orphans re-created by one live node that may take them, or waiting, said
//!   once, until one may ([`orphans`]); a node restarted under its name re-creates what it
//!   still owns;
//! - leases: `lease.<name>` keys in the nodes bucket, one holder at a time ([`lease`]); the
//!   coordinator's holder also correlates notifications across nodes.
//!
//! The client side ([`client`]) places creates by free capacity and routes every other
//! request to the owner; a batch is fanned out by the client ([`batch`]), `events --follow`
//! reads the stream with an ordered consumer ([`follow`]), and the requests that are more
//! than one answer (a log's backlog, `destroy --purge`, `ask` of every node) are in
//! [`routed`]. Whoever holds the NATS credentials administers the whole fleet.

pub mod agent;
pub mod batch;
pub mod client;
pub mod connect;
mod correlate;
pub mod error;
pub mod events;
mod failover;
pub mod follow;
pub mod lattice;
pub mod lease;
pub mod node;
pub mod orphans;
mod recreate;
pub mod routed;
pub mod wire;

pub use client::FleetClient;
pub use connect::{ConnectArgs, NodeArgs, PlaceArgs};
pub use error::FleetError;
