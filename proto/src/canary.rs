//! A canary reload's settings on the wire, shared by `reload` (`crate::control`) and a batch
//! reload (`crate::batch`).

use serde::{Deserialize, Serialize};

/// A canary reload's settings (`host reload ID --canary --watch-for 30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryWire {
    /// How long the new version is watched, milliseconds (the daemon caps it at 10 min).
    pub watch_for_ms: u64,
}
