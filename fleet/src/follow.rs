//! `host events --follow --cluster [ID] [--last N]`: the newest N of every node's events (none
//! by default), then every one stored from then on in the `SANDBOX_EVENTS` stream, until the
//! client is ended.
//!
//! An ordered pull consumer (ephemeral, one replica, no acks; it re-creates itself from the
//! last sequence it saw when it misses a heartbeat or sees a gap, so a NATS server that
//! goes away costs no event) delivering only messages stored after it was made. It holds at
//! most one pull of 500 messages of at most 64 KiB (the stream's message bound). Nothing of
//! it outlives the client for long: the server removes an ephemeral consumer after it has
//! been idle.

use futures_util::StreamExt;
use serde_json::Value;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};

use crate::client::{FleetClient, block_on};
use crate::connect::ConnectArgs;
use crate::error::FleetError;
use crate::events;
use crate::lattice::{EVENTS, Lattice};

/// Calls `each` with the newest `last` events stored (about sandbox `id` when given), then
/// `ready` once the consumer exists, then `each` with every event stored after those, until
/// the stream ends (it ends only with an error). No event is missed or shown twice between
/// the backlog and the rest: the consumer starts at the sequence after the backlog's.
pub async fn follow(
    lattice: &Lattice,
    id: Option<&str>,
    last: usize,
    ready: impl FnOnce(),
    mut each: impl FnMut(Value),
) -> Result<(), FleetError> {
    let (stream, first, upto) = events::open(lattice).await?;
    for event in events::newest_upto(&stream, id, last, first, upto).await {
        each(event);
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: "events.>".into(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: upto + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| FleetError::js(format!("following stream {EVENTS}"), e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| FleetError::js(format!("following stream {EVENTS}"), e))?;
    ready();
    while let Some(message) = messages.next().await {
        let message =
            message.map_err(|e| FleetError::js(format!("following stream {EVENTS}"), e))?;
        let Ok(event) = serde_json::from_slice::<Value>(&message.payload) else {
            continue;
        };
        if id.is_none_or(|id| event["sandbox"] == id) {
            each(event);
        }
    }
    Err(FleetError::js(
        format!("following stream {EVENTS}"),
        "the stream ended",
    ))
}

/// Connects and follows the fleet's events (for `host events --follow --cluster`).
pub fn follow_blocking(
    args: &ConnectArgs,
    id: Option<&str>,
    last: usize,
    ready: impl FnOnce(),
    each: impl FnMut(Value),
) -> Result<(), FleetError> {
    block_on(async {
        let client = FleetClient::connect(args).await?;
        follow(client.lattice(), id, last, ready, each).await
    })?
}
