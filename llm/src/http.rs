//! The one HTTP path every provider uses: send JSON, apply the retry policy, turn failures
//! into [`ProviderError`]s.

use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::retry::{RetryPolicy, classify_status, quota_exhausted, retry_hint};
use crate::types::{ProviderError, ProviderErrorKind};

/// Timeout used when a request carries none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest piece of a body quoted in an error message.
const SNIPPET: usize = 300;

/// Who is calling: for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    /// Provider id.
    pub provider: &'static str,
    /// The variable holding the key, named in auth errors.
    pub key_var: Option<&'static str>,
}

/// POSTs `body` as JSON to `url` with `headers`, retrying per `policy`, and parses a 2xx
/// reply as `T`.
pub(crate) async fn post_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    policy: &RetryPolicy,
    caller: Caller,
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
    policy
        .run(caller.provider, |attempt| async move {
            tracing::debug!(provider = caller.provider, attempt, url, "LLM request");
            let mut request = client.post(url).timeout(timeout).json(body);
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            let response = request
                .send()
                .await
                .map_err(|e| network_error(caller, &e))?;
            let status = response.status().as_u16();
            let header_map = response.headers().clone();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| network_error(caller, &e))?;
            if !(200..300).contains(&status) {
                let text = String::from_utf8_lossy(&bytes);
                return Err(status_error(caller, status, &header_map, &text));
            }
            serde_json::from_slice::<T>(&bytes).map_err(|e| {
                ProviderError::unparseable(
                    caller.provider,
                    format!("{e}; body: {}", snippet(&String::from_utf8_lossy(&bytes))),
                )
                .with_status(status)
            })
        })
        .await
}

impl ProviderError {
    /// The same error with an HTTP status.
    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

/// Maps a transport failure (connect, timeout, broken body) to a retryable Network error.
pub(crate) fn network_error(caller: Caller, err: &reqwest::Error) -> ProviderError {
    let what = if err.is_timeout() {
        "request timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "reply body broken off"
    } else {
        "request failed"
    };
    ProviderError::new(
        caller.provider,
        ProviderErrorKind::Network,
        None,
        format!("{what}: {}", error_chain(err)),
    )
}

/// The error and its sources, `: `-joined (reqwest's own message hides the cause).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
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

/// Maps an HTTP error reply to a classified error with the vendor's message and retry hint.
pub(crate) fn status_error(
    caller: Caller,
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
        && let Some(var) = caller.key_var
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
        ProviderError::new(caller.provider, kind, Some(status), message).with_retry_after(hint);
    err.retryable = retryable;
    err
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
