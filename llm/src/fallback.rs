//! Provider fallback: an ordered list of providers; a call that fails on one with a server
//! error, an overload, a rate limit or an exhausted quota, or that cannot reach it, is sent
//! to the next (each with its own model). A failure the next provider would not fix (a bad
//! key, a bad request) ends the call at once. Each provider tried is reported as one
//! [`CallRecord`] when a sink is set, the stand-ins naming the provider they stood in for.
//!
//! Configured like the providers: `BEAMLENS_DEMO_FALLBACK=openai,google-ai` names the
//! providers tried, in order, after the chosen one, each set up from its own variables.

use std::fmt;
use std::sync::Arc;

use crate::telemetry::{CallSink, timed_chat};
use crate::types::{ChatRequest, ChatResponse, Provider, ProviderError, ProviderErrorKind};

/// The variable naming the fallback providers, comma-separated, in order.
pub const FALLBACK_VAR: &str = "BEAMLENS_DEMO_FALLBACK";

/// Providers tried in order until one answers.
#[derive(Clone)]
pub struct FallbackProvider {
    chain: Vec<Arc<dyn Provider>>,
    sink: Option<CallSink>,
}

impl fmt::Debug for FallbackProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackProvider")
            .field("chain", &self.chain)
            .finish()
    }
}

impl FallbackProvider {
    /// `first`, then each of `rest` in order.
    pub fn new(first: Arc<dyn Provider>, rest: Vec<Arc<dyn Provider>>) -> FallbackProvider {
        let mut chain = vec![first];
        chain.extend(rest);
        FallbackProvider { chain, sink: None }
    }

    /// The same chain, reporting every provider call to `sink`.
    pub fn with_sink(mut self, sink: CallSink) -> FallbackProvider {
        self.sink = Some(sink);
        self
    }

    /// The providers' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.chain.iter().map(|p| p.name()).collect()
    }
}

/// Whether the next provider may succeed where this failure happened: the provider's side
/// failed (5xx, overloaded), it refused for load or quota (429), or it could not be reached.
pub fn falls_back(e: &ProviderError) -> bool {
    matches!(
        e.kind,
        ProviderErrorKind::Server
            | ProviderErrorKind::Overloaded
            | ProviderErrorKind::RateLimited
            | ProviderErrorKind::Network
            | ProviderErrorKind::Unavailable
    )
}

#[async_trait::async_trait]
impl Provider for FallbackProvider {
    fn name(&self) -> &str {
        self.chain[0].name()
    }

    fn model(&self) -> &str {
        self.chain[0].model()
    }

    /// Only when every provider of the chain can (a forced call to one that cannot would
    /// be sent as a plain one).
    fn can_force_tool(&self) -> bool {
        self.chain.iter().all(|p| p.can_force_tool())
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let mut failed: Option<(String, ProviderError)> = None;
        for (i, provider) in self.chain.iter().enumerate() {
            // Each provider is asked for its own model, not the first one's.
            let mut own = request.clone();
            own.model = provider.model().to_string();
            let from = failed.as_ref().map(|(name, _)| name.as_str());
            let (result, record) = timed_chat(provider.as_ref(), &own, from).await;
            if let Some(sink) = &self.sink {
                sink(&record);
            }
            match result {
                Ok(response) => return Ok(response),
                Err(e) if falls_back(&e) && i + 1 < self.chain.len() => {
                    tracing::warn!(
                        provider = provider.name(),
                        next = self.chain[i + 1].name(),
                        error = %e,
                        "LLM provider failed; falling back to the next"
                    );
                    failed = Some((provider.name().to_string(), e));
                }
                Err(mut e) => {
                    if let Some((name, first)) = &failed {
                        e.message = format!("{} (after {name} failed: {first})", e.message);
                    }
                    return Err(e);
                }
            }
        }
        unreachable!("a chain has at least one provider")
    }
}
