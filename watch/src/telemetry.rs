//! LLM call telemetry into the daemon's event stream: each call an operator run makes
//! (`llm::CallRecord`, from `llm::Observed` or `llm::FallbackProvider`) becomes one
//! `llm.call` event about the sandbox the run watches; the metrics follow the stream
//! (`crate::llm_metrics`).

use sandbox::events::{EventBus, EventKind};

/// A sink that emits each call of run `run` on sandbox `sandbox` as an `llm.call` event.
pub fn event_sink(events: EventBus, sandbox: Option<String>, run: Option<String>) -> llm::CallSink {
    std::sync::Arc::new(move |r: &llm::CallRecord| {
        events.emit(sandbox.as_deref(), event_of(r, run.clone()));
    })
}

/// The `llm.call` event of `record`.
pub fn event_of(r: &llm::CallRecord, run: Option<String>) -> EventKind {
    EventKind::LlmCall {
        provider: r.provider.clone(),
        model: r.model.clone(),
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        latency_ms: r.latency.as_millis() as u64,
        retries: r.retries,
        outcome: r.outcome.clone(),
        fallback_from: r.fallback_from.clone(),
        run,
    }
}
