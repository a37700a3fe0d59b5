//! The node agent as a whole: its request loop ([`Node::serve`]), its heartbeat and its
//! failover watch (`failover`), and the leader lease it may hold (`lease`) with the
//! fleet-wide correlation its holder does (`correlate`), run together until the connection
//! ends.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::error::FleetError;
use crate::failover;
use crate::node::Node;

/// Runs a joined node's tasks; `host serve --cluster` spawns this beside the daemon.
pub async fn run(node: Node) -> Result<(), FleetError> {
    run_with(node, None).await
}

/// [`run`], also holding the coordinator's leader lease whenever it can when `coordinator`
/// is given (`--watch-coordinator`): set while this node holds it (see [`crate::lease`]).
pub async fn run_with(node: Node, coordinator: Option<Arc<AtomicBool>>) -> Result<(), FleetError> {
    let node = Arc::new(node);
    let lease = coordinator.map(|flag| {
        let correlate = tokio::spawn(crate::correlate::run(node.clone(), flag.clone()));
        let hold = tokio::spawn(crate::lease::hold(
            node.clone(),
            crate::lease::COORDINATOR,
            flag,
        ));
        (hold, correlate)
    });
    // Read before the node answers any request, so none of them is one it is creating now.
    let inherited = failover::inherited(&node).await;
    let heartbeat = tokio::spawn(failover::heartbeat(node.clone()));
    let watch = tokio::spawn(failover::watch(node.clone(), inherited));
    let events = tokio::spawn(crate::events::forward(node.clone()));
    let served = node.serve().await;
    heartbeat.abort();
    watch.abort();
    events.abort();
    if let Some((hold, correlate)) = lease {
        hold.abort();
        correlate.abort();
    }
    served
}
