//! The node agent as a whole: its request loop ([`Node::serve`]), its heartbeat and its
//! failover watch (`failover`), run together until the connection ends.

use std::sync::Arc;

use crate::error::FleetError;
use crate::failover;
use crate::node::Node;

/// Runs a joined node's tasks; `host serve --cluster` spawns this beside the daemon.
pub async fn run(node: Node) -> Result<(), FleetError> {
    let node = Arc::new(node);
    // Read before the node answers any request, so none of them is one it is creating now.
    let inherited = failover::inherited(&node).await;
    let heartbeat = tokio::spawn(failover::heartbeat(node.clone()));
    let watch = tokio::spawn(failover::watch(node.clone(), inherited));
    let events = tokio::spawn(crate::events::forward(node.clone()));
    let served = node.serve().await;
    heartbeat.abort();
    watch.abort();
    events.abort();
    served
}
