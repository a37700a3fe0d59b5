//! The one HTTP path every provider uses: a [`Client`] that sends JSON, applies the retry
//! policy, turns failures into [`ProviderError`]s and replies into [`ChatResponse`]s.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::{ConfigError, ProviderConfig, ProviderKind, base_url};
use crate::retry::{classify_status, quota_exhausted, retry_hint};
use crate::text_tool_calls::{apply_text_tool_calls, next_call_number};
use crate::types::{ChatRequest, ChatResponse, ProviderError, ProviderErrorKind};

/// Timeout used when a request carries none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest piece of a body quoted in an error message.
const SNIPPET: usize = 300;

/// How a network error's message starts when the server could not be reached.
pub(crate) const CONNECTION_FAILED: &str = "connection failed";

/// What every provider holds: its kind, config, checked base URL and HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// Which provider: its id names it in errors, its key variable in auth errors.
    kind: ProviderKind,
    /// The config the provider was built from.
    pub(crate) config: ProviderConfig,
    /// The base URL, checked and without trailing slashes.
    pub(crate) base_url: String,
    /// The HTTP client (connect timeout 10 s; each request sets its own timeout).
    pub(crate) http: reqwest::Client,
}

impl Client {
    /// A client for `kind` from `config`. Fails on an empty key where `kind` needs one, or
    /// a base URL that is not `http(s)://`.
    pub(crate) fn new(kind: ProviderKind, config: ProviderConfig) -> Result<Self, ConfigError> {
        if kind.key_required() && config.api_key.trim().is_empty() {
            return Err(ConfigError::MissingApiKey(kind));
        }
        let base_url = base_url(kind, &config)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("sandbox-host-llm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::HttpClient(Arc::new(e)))?;
        Ok(Self {
            kind,
            config,
            base_url,
            http,
        })
    }

    /// The provider id.
    pub(crate) fn name(&self) -> &'static str {
        self.kind.id()
    }

    /// `Authorization: Bearer <key>` when there is a key (OpenAI-compatible servers and
    /// Ollama work without one).
    pub(crate) fn bearer(&self) -> Vec<(&'static str, String)> {
        let key = &self.config.api_key;
        if key.is_empty() {
            Vec::new()
        } else {
            vec![("authorization", format!("Bearer {key}"))]
        }
    }

    /// POSTs `body` for `request` to `url` with `headers` (retrying per the config's
    /// policy), reads the reply with `parse` (given the number the next synthesised call id
    /// carries), then takes any tool calls written as JSON text.
    pub(crate) async fn chat<W: DeserializeOwned>(
        &self,
        request: &ChatRequest,
        url: &str,
        headers: &[(&'static str, String)],
        body: &Value,
        parse: impl FnOnce(W, usize) -> Result<ChatResponse, ProviderError>,
    ) -> Result<ChatResponse, ProviderError> {
        let wire = self.post_json(url, headers, body, request.timeout).await?;
        let first = next_call_number(&request.messages);
        let mut response = parse(wire, first)?;
        apply_text_tool_calls(&mut response, &request.tools, first);
        Ok(response)
    }

    /// POSTs `body` as JSON to `url` with `headers`, retrying per the config's policy (whose
    /// deadline is stretched to one `timeout` when shorter), and parses a 2xx reply as `T`.
    async fn post_json<T: DeserializeOwned>(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: &Value,
        timeout: Duration,
    ) -> Result<T, ProviderError> {
        let timeout = if timeout.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            timeout
        };
        let provider = self.name();
        self.config
            .retry
            .covering(timeout)
            .run(provider, |attempt| async move {
                tracing::debug!(provider, attempt, url, "LLM request");
                let mut request = self.http.post(url).timeout(timeout).json(body);
                for (name, value) in headers {
                    request = request.header(*name, value);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| network_error(provider, &e))?;
                let status = response.status().as_u16();
                let header_map = response.headers().clone();
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| network_error(provider, &e))?;
                if !(200..300).contains(&status) {
                    let text = String::from_utf8_lossy(&bytes);
                    return Err(self.status_error(status, &header_map, &text));
                }
                serde_json::from_slice::<T>(&bytes).map_err(|e| {
                    ProviderError::unparseable(
                        provider,
                        format!("{e}; body: {}", snippet(&String::from_utf8_lossy(&bytes))),
                    )
                    .with_status(status)
                })
            })
            .await
    }

    /// Maps an HTTP error reply to a classified error with the vendor's message and retry
    /// hint; an auth error names the variable holding the key.
    fn status_error(
        &self,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &str,
    ) -> ProviderError {
        let (kind, mut retryable) = classify_status(status);
        let hint = retry_hint(
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            body,
            SystemTime::now(),
        );
        let mut message = vendor_message(body).unwrap_or_else(|| {
            if body.trim().is_empty() {
                format!("HTTP {status} with an empty body")
            } else {
                snippet(body)
            }
        });
        if status == 429 && quota_exhausted(body) {
            retryable = false;
            message.push_str(" (quota or spend limit exhausted; not retried)");
        }
        if kind == ProviderErrorKind::Auth
            && let Some(var) = self.kind.key_vars().first()
        {
            message.push_str(&format!(". Check {var}"));
        }
        let request_id = headers
            .get("request-id")
            .or_else(|| headers.get("x-request-id"))
            .and_then(|v| v.to_str().ok());
        if let Some(id) = request_id {
            message.push_str(&format!(" [request id {id}]"));
        }
        let mut err =
            ProviderError::new(self.name(), kind, Some(status), message).with_retry_after(hint);
        err.retryable = retryable;
        err
    }
}

/// Maps a transport failure (connect, timeout, broken body) to a retryable Network error.
pub(crate) fn network_error(provider: &str, err: &reqwest::Error) -> ProviderError {
    let what = if err.is_timeout() {
        "request timed out"
    } else if err.is_connect() {
        CONNECTION_FAILED
    } else if err.is_body() || err.is_decode() {
        "reply body broken off"
    } else {
        "request failed"
    };
    ProviderError::new(
        provider,
        ProviderErrorKind::Network,
        None,
        format!("{what}: {}", error_chain(err)),
    )
}

/// The error and its sources, `: `-joined (reqwest's own message hides the cause).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The vendor's error message: `error.message` (Anthropic, OpenAI, Gemini), `error` as a
/// string (Ollama) or a top-level `message`, with the error type or status when given.
pub(crate) fn vendor_message(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let error = value.get("error");
    if let Some(text) = error.and_then(Value::as_str) {
        return Some(text.to_string());
    }
    let message = error
        .and_then(|e| e.get("message"))
        .or_else(|| value.get("message"))
        .and_then(Value::as_str)?;
    let label = error.and_then(|e| {
        ["type", "status", "code"]
            .iter()
            .find_map(|k| e.get(*k).and_then(Value::as_str))
    });
    Some(match label {
        Some(label) if !message.contains(label) => format!("{label}: {message}"),
        _ => message.to_string(),
    })
}

/// The start of a body, for error messages.
pub(crate) fn snippet(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(SNIPPET) {
        Some((end, _)) => format!("{}...", &body[..end]),
        None => body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_messages() {
        assert_eq!(
            vendor_message(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            )
            .as_deref(),
            Some("overloaded_error: Overloaded")
        );
        assert_eq!(
            vendor_message(r#"{"error":"model \"x\" not found"}"#).as_deref(),
            Some("model \"x\" not found")
        );
        assert_eq!(
            vendor_message(
                r#"{"error":{"code":403,"message":"bad key","status":"PERMISSION_DENIED"}}"#
            )
            .as_deref(),
            Some("PERMISSION_DENIED: bad key")
        );
        assert_eq!(vendor_message("<html>"), None);
        assert_eq!(snippet(&"x".repeat(400)).len(), SNIPPET + 3);
    }
}
