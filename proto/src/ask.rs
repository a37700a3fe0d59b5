//! A question to the coordinator (`host ask [ID] QUESTION`, the control socket's `ask`): about
//! one sandbox, or about all of them when no id is given. The client forwards its provider
//! variables as `operate` does, so the model is the caller's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest question, in bytes.
pub const MAX_QUESTION: usize = 1000;

/// Most sandboxes one question looks at (the first, in id order, when there are more).
pub const MAX_SANDBOXES: usize = 16;

/// A question request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AskRequest {
    /// The sandbox asked about; all of them (at most [`MAX_SANDBOXES`]) when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// The question, in plain language (at most [`MAX_QUESTION`] bytes).
    pub question: String,
    /// Provider name (as `operate`'s).
    #[serde(default)]
    pub provider: Option<String>,
    /// Model override.
    #[serde(default)]
    pub model: Option<String>,
    /// The client's provider variables (see `crate::operate::FORWARDED_ENV`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Iteration cap of the coordinator (default 6).
    #[serde(default)]
    pub max_iterations: Option<u32>,
    /// Overall deadline in milliseconds (default 30000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}
