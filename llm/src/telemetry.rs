//! Telemetry of every call to a provider: which provider and model, the tokens it reported,
//! how long the call took (its retries and their waits included), how many retries the
//! retry policy made, and how it ended. [`Observed`] wraps any [`Provider`] and hands one
//! [`CallRecord`] per call to a sink (the daemon turns them into `llm.call` events and
//! Prometheus metrics); [`crate::FallbackProvider`] reports each provider it tries.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::types::{ChatRequest, ChatResponse, Provider, ProviderError};

tokio::task_local! {
    /// The attempt number the retry policy is at, for the call being timed in this task.
    pub(crate) static ATTEMPTS: Cell<u32>;
}

/// Notes that the retry policy starts attempt `number` (1-based) of the call being timed,
/// if any is.
pub(crate) fn note_attempt(number: u32) {
    let _ = ATTEMPTS.try_with(|c| c.set(number));
}

/// One call to one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The provider's id (`anthropic`, `openai`, `google-ai`, `ollama`, `mock`).
    pub provider: String,
    /// The model asked.
    pub model: String,
    /// Prompt tokens the provider reported (0 when none, or on failure).
    pub input_tokens: u64,
    /// Completion tokens the provider reported.
    pub output_tokens: u64,
    /// Wall time of the call, retries and waits included.
    pub latency: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// `ok`, or the failure's kind in snake case (`server`, `rate_limited`, `auth`, …).
    pub outcome: String,
    /// The provider this one stood in for, when it was tried after that one failed.
    pub fallback_from: Option<String>,
}

/// Where call records go.
pub type CallSink = Arc<dyn Fn(&CallRecord) + Send + Sync>;

/// Sends `request` to `provider` (with the request's model replaced by the provider's own
/// when `own_model`), timing it: the result and its record.
pub(crate) async fn timed_chat(
    provider: &dyn Provider,
    request: &ChatRequest,
    fallback_from: Option<&str>,
) -> (Result<ChatResponse, ProviderError>, CallRecord) {
    let started = Instant::now();
    let (result, attempts) = ATTEMPTS
        .scope(Cell::new(0), async {
            let result = provider.chat(request).await;
            (result, ATTEMPTS.with(Cell::get))
        })
        .await;
    let (input_tokens, output_tokens, outcome) = match &result {
        Ok(r) => (
            r.usage.input_tokens,
            r.usage.output_tokens,
            "ok".to_string(),
        ),
        Err(e) => (0, 0, kind_name(e)),
    };
    let record = CallRecord {
        provider: provider.name().to_string(),
        model: if request.model.is_empty() {
            provider.model().to_string()
        } else {
            request.model.clone()
        },
        input_tokens,
        output_tokens,
        latency: started.elapsed(),
        retries: attempts.saturating_sub(1),
        outcome,
        fallback_from: fallback_from.map(str::to_string),
    };
    (result, record)
}

/// The error's kind as the telemetry names it (`server`, `rate_limited`, …).
fn kind_name(e: &ProviderError) -> String {
    serde_json::to_value(e.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "error".into())
}

/// A provider whose every call is reported to a sink.
#[derive(Clone)]
pub struct Observed {
    inner: Arc<dyn Provider>,
    sink: CallSink,
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Observed {
    /// `inner`, reporting each call to `sink`. A [`crate::FallbackProvider`] reports its
    /// own calls (one record per provider tried): wrap it with
    /// [`crate::FallbackProvider::with_sink`] instead.
    pub fn new(inner: Arc<dyn Provider>, sink: CallSink) -> Observed {
        Observed { inner, sink }
    }
}

#[async_trait::async_trait]
impl Provider for Observed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn can_force_tool(&self) -> bool {
        self.inner.can_force_tool()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let (result, record) = timed_chat(self.inner.as_ref(), request, None).await;
        (self.sink)(&record);
        result
    }
}
