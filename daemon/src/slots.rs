//! The daemon's connection slots: at most `max` connections at once. When all are taken, a
//! new connection takes the slot of the connection that has been idle (between requests)
//! longest, which is told so and closed; when none is idle, the new one is refused with a
//! message. So idle connections cannot lock out a neighbour, and busy ones are bounded by
//! the request deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

#[derive(Debug)]
struct Entry {
    idle_since: Option<Instant>,
    evict: Arc<Notify>,
}

/// The table of live connections.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    table: Mutex<HashMap<u64, Entry>>,
}

/// A connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    /// Notified when this connection is evicted.
    pub evicted: Arc<Notify>,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// The limit.
    pub max: usize,
}

impl Slots {
    /// Room for `max` connections.
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            table: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for connection `id` (idle), evicting the longest-idle connection when full.
    /// Returns the slot and whether a connection was evicted for it.
    pub fn take(self: &Arc<Self>, id: u64) -> Result<(Slot, bool), Full> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = false;
        if table.len() >= self.max {
            let oldest = table
                .iter()
                .filter_map(|(k, e)| e.idle_since.map(|t| (t, *k)))
                .min();
            match oldest {
                Some((_, victim)) => {
                    if let Some(e) = table.remove(&victim) {
                        e.evict.notify_one();
                    }
                    evicted = true;
                }
                None => return Err(Full { max: self.max }),
            }
        }
        let evict = Arc::new(Notify::new());
        table.insert(
            id,
            Entry {
                idle_since: Some(Instant::now()),
                evict: Arc::clone(&evict),
            },
        );
        Ok((
            Slot {
                slots: Arc::clone(self),
                id,
                evicted: evict,
            },
            evicted,
        ))
    }

    /// Connections holding a slot.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no connection holds a slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Slot {
    /// Marks the connection busy (a request is arriving or being served): not evictable.
    pub fn busy(&self) {
        self.set(None);
    }

    /// Marks the connection idle (waiting for its next request): evictable.
    pub fn idle(&self) {
        self.set(Some(Instant::now()));
    }

    fn set(&self, idle_since: Option<Instant>) {
        let mut table = self.slots.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = table.get_mut(&self.id) {
            e.idle_since = idle_since;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.slots.table.lock().unwrap_or_else(|e| e.into_inner());
        table.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_slots_evict_the_longest_idle_or_refuse() {
        let slots = Slots::new(2);
        let (a, _) = slots.take(1).unwrap();
        let (b, _) = slots.take(2).unwrap();
        b.idle();
        a.busy();
        // Full: b is the only idle one, so it goes.
        let (c, evicted) = slots.take(3).unwrap();
        assert!(evicted);
        assert_eq!(slots.len(), 2);
        drop(b); // its task ends later; the slot is already free
        assert_eq!(slots.len(), 2);
        c.busy();
        assert_eq!(slots.take(4).unwrap_err(), Full { max: 2 });
        drop(a);
        assert!(slots.take(5).is_ok());
    }
}
