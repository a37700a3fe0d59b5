//! Prometheus metrics of LLM calls, from the `llm.call` events: calls by provider and
//! outcome, tokens by provider and direction, retries and latency by provider. Label values
//! come from small fixed sets (a provider id the host knows, else `other`; an outcome the
//! retry classification knows, else `other`), so no client can grow the series; the model,
//! a free string, is not a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use sandbox::events::EventKind;

/// Provider ids kept as label values.
const PROVIDERS: [&str; 5] = ["anthropic", "openai", "google-ai", "ollama", "mock"];
/// Outcomes kept as label values.
const OUTCOMES: [&str; 8] = [
    "ok",
    "rate_limited",
    "overloaded",
    "auth",
    "bad_request",
    "server",
    "network",
    "unavailable",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    provider: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabel {
    provider: &'static str,
    direction: &'static str,
}

/// The LLM call families.
#[derive(Debug)]
pub struct LlmMetrics {
    calls: Family<CallLabel, Counter>,
    tokens: Family<TokenLabel, Counter>,
    retries: Family<ProviderLabel, Counter>,
    fallbacks: Family<ProviderLabel, Counter>,
    latency: Family<ProviderLabel, Histogram>,
}

impl Default for LlmMetrics {
    fn default() -> Self {
        LlmMetrics {
            calls: Family::default(),
            tokens: Family::default(),
            retries: Family::default(),
            fallbacks: Family::default(),
            // 10 ms .. ~160 s, doubling: a mock's call and a cold local model both fit.
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 15))
            }),
        }
    }
}

/// `value` if it is one of `known`, else `other`.
fn bounded(value: &str, known: &[&'static str]) -> &'static str {
    known
        .iter()
        .find(|k| **k == value)
        .copied()
        .unwrap_or("other")
}

impl LlmMetrics {
    /// Registers the families in `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "llm_calls",
            "LLM provider calls (retries included in one call), by provider and outcome",
            self.calls.clone(),
        );
        r.register(
            "llm_tokens",
            "Tokens the providers reported, by provider and direction (input, output)",
            self.tokens.clone(),
        );
        r.register(
            "llm_retries",
            "Attempts after the first, by provider",
            self.retries.clone(),
        );
        r.register(
            "llm_fallbacks",
            "Calls a provider took over after the one before it in the fallback list failed",
            self.fallbacks.clone(),
        );
        r.register_with_unit(
            "llm_call_duration",
            "Wall time of an LLM call, retries and their waits included, by provider",
            Unit::Seconds,
            self.latency.clone(),
        );
    }

    /// Counts an `llm.call` event (other events are ignored).
    pub fn record(&self, kind: &EventKind) {
        let EventKind::LlmCall {
            provider,
            input_tokens,
            output_tokens,
            latency_ms,
            retries,
            outcome,
            fallback_from,
            ..
        } = kind
        else {
            return;
        };
        let provider = bounded(provider, &PROVIDERS);
        let outcome = bounded(outcome, &OUTCOMES);
        self.calls
            .get_or_create(&CallLabel { provider, outcome })
            .inc();
        for (direction, n) in [("input", *input_tokens), ("output", *output_tokens)] {
            self.tokens
                .get_or_create(&TokenLabel {
                    provider,
                    direction,
                })
                .inc_by(n);
        }
        let label = ProviderLabel { provider };
        self.retries
            .get_or_create(&label)
            .inc_by(u64::from(*retries));
        if fallback_from.is_some() {
            self.fallbacks.get_or_create(&label).inc();
        }
        self.latency
            .get_or_create(&label)
            .observe(*latency_ms as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_with_bounded_labels() {
        let m = LlmMetrics::default();
        let mut r = Registry::with_prefix("sandbox_host");
        m.register(&mut r);
        let call = |provider: &str, outcome: &str, fallback: bool| EventKind::LlmCall {
            provider: provider.into(),
            model: "m".into(),
            input_tokens: 412,
            output_tokens: 61,
            latency_ms: 1500,
            retries: 3,
            outcome: outcome.into(),
            fallback_from: fallback.then(|| "openai".into()),
            run: None,
        };
        m.record(&call("openai", "server", false));
        m.record(&call("anthropic", "ok", true));
        m.record(&call("<evil>", "<evil>", false));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        for line in [
            r#"sandbox_host_llm_calls_total{provider="openai",outcome="server"} 1"#,
            r#"sandbox_host_llm_calls_total{provider="anthropic",outcome="ok"} 1"#,
            r#"sandbox_host_llm_calls_total{provider="other",outcome="other"} 1"#,
            r#"sandbox_host_llm_tokens_total{provider="anthropic",direction="input"} 412"#,
            r#"sandbox_host_llm_retries_total{provider="openai"} 3"#,
            r#"sandbox_host_llm_fallbacks_total{provider="anthropic"} 1"#,
            r#"sandbox_host_llm_call_duration_seconds_count{provider="anthropic"} 1"#,
        ] {
            assert!(out.contains(line), "{line} not in\n{out}");
        }
    }
}
