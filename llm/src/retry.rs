//! The one retry policy every provider uses, and the classification of failures.
//!
//! Retried: connection errors and timeouts, and HTTP 408, 409, 429, 500, 502, 503, 504 and 529.
//! Never retried: 400, 401, 403, 404, 413, any other status, and a 429 that reports an
//! exhausted quota or spend limit. The wait before the next attempt is the larger of the
//! server's hint (`retry-after`, `retry-after-ms`, Gemini `RetryInfo.retryDelay`) and an
//! exponential backoff with full jitter; attempts are bounded and so is the total time.

use std::future::Future;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::time::Instant;

use crate::types::{ProviderError, ProviderErrorKind};

/// How often and how long a provider call is retried.
///
/// The `n`-th retry (counting from 0) waits a uniformly random time in
/// `[0, min(cap, base * 2^n)]` ("full jitter"), or the server's hint if that is longer.
/// No attempt starts, and no wait begins, that would end after `deadline` from the first
/// attempt; an attempt still running at the deadline is abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (1 = never retry). 0 is treated as 1.
    pub max_attempts: u32,
    /// Backoff of the first retry, before jitter.
    pub base: Duration,
    /// Upper bound of one backoff, before jitter.
    pub cap: Duration,
    /// Upper bound of the whole call: every attempt and every wait.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, backoff 500 ms doubling up to 30 s, 180 s in all.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            deadline: Duration::from_secs(180),
        }
    }
}

impl RetryPolicy {
    /// A policy with the given bounds.
    pub fn new(max_attempts: u32, base: Duration, cap: Duration, deadline: Duration) -> Self {
        Self {
            max_attempts,
            base,
            cap,
            deadline,
        }
    }

    /// A policy that tries once and never retries (the deadline still applies).
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// This policy with its deadline at least `attempt`: a deadline shorter than one
    /// attempt's timeout would cut every attempt short of it.
    pub fn covering(self, attempt: Duration) -> Self {
        Self {
            deadline: self.deadline.max(attempt),
            ..self
        }
    }

    /// The upper bound of the backoff before retry number `retry` (0-based):
    /// `min(cap, base * 2^retry)`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A full-jitter backoff before retry number `retry`: uniform in
    /// `[0, backoff_ceiling(retry)]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        use rand::Rng;
        let ceiling = self.backoff_ceiling(retry).as_micros();
        let ceiling = u64::try_from(ceiling).unwrap_or(u64::MAX);
        if ceiling == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(rand::rng().random_range(0..=ceiling))
    }

    /// The wait before retry number `retry`: the larger of the server's hint and the backoff.
    pub fn wait_before(&self, retry: u32, hint: Option<Duration>) -> Duration {
        let backoff = self.backoff(retry);
        match hint {
            Some(hint) => hint.max(backoff),
            None => backoff,
        }
    }

    /// Runs `attempt` (called with the 1-based attempt number) until it succeeds, fails with
    /// an error that is not retryable, runs out of attempts, or the deadline would pass.
    ///
    /// Emits a `tracing` warning before every retry. The error returned is the last one;
    /// when more than one attempt was made its message says how many.
    pub async fn run<T, F, Fut>(&self, provider: &str, mut attempt: F) -> Result<T, ProviderError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let max_attempts = self.max_attempts.max(1);
        let start = Instant::now();
        let deadline = start + self.deadline;
        let mut number = 1u32;
        loop {
            crate::telemetry::note_attempt(number);
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = match tokio::time::timeout(remaining, attempt(number)).await {
                Ok(result) => result,
                Err(_) => Err(ProviderError::new(
                    provider,
                    ProviderErrorKind::Network,
                    None,
                    format!(
                        "no reply within the retry deadline of {:.1}s",
                        self.deadline.as_secs_f64()
                    ),
                )
                .not_retryable()),
            };
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !err.retryable {
                return Err(gave_up(err, number, None));
            }
            if number >= max_attempts {
                return Err(gave_up(err, number, Some("attempts exhausted")));
            }
            let wait = self.wait_before(number - 1, err.retry_after);
            if Instant::now() + wait >= deadline {
                tracing::warn!(
                    provider,
                    attempt = number,
                    status = err.status,
                    kind = ?err.kind,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "LLM request failed; next retry would pass the deadline, giving up"
                );
                return Err(gave_up(err, number, Some("retry deadline reached")));
            }
            tracing::warn!(
                provider,
                attempt = number,
                max_attempts,
                status = err.status,
                kind = ?err.kind,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %err.message,
                "LLM request failed; retrying"
            );
            tokio::time::sleep(wait).await;
            number += 1;
        }
    }
}

/// Notes in the message how many attempts were made, when more than one.
fn gave_up(mut err: ProviderError, attempts: u32, why: Option<&str>) -> ProviderError {
    if attempts > 1 || why == Some("retry deadline reached") {
        let why = why.unwrap_or("not retryable");
        err.message = format!(
            "{} (gave up after {attempts} attempt(s): {why})",
            err.message
        );
    }
    err
}

/// The kind of an HTTP error status and whether it may be retried (before looking at the
/// body: a 429 that reports an exhausted quota is not retried, see [`quota_exhausted`]).
pub fn classify_status(status: u16) -> (ProviderErrorKind, bool) {
    use ProviderErrorKind::*;
    match status {
        401 | 403 => (Auth, false),
        408 => (Network, true),
        409 => (Server, true),
        429 => (RateLimited, true),
        503 | 529 => (Overloaded, true),
        500 | 502 | 504 => (Server, true),
        500..=599 => (Server, false),
        _ => (BadRequest, false),
    }
}

/// Whether an error body says the account's quota or spend limit is exhausted, so waiting
/// a little will not help: OpenAI `insufficient_quota`, Anthropic
/// `enforced_spend_limit_reached`, a Gemini `QuotaFailure` on a per-day (or zero) quota,
/// or a "usage limit" message (Ollama's hosted models).
pub fn quota_exhausted(body: &str) -> bool {
    if body.contains("insufficient_quota") || body.contains("enforced_spend_limit_reached") {
        return true;
    }
    if body.to_ascii_lowercase().contains("usage limit") {
        return true;
    }
    match serde_json::from_str::<Value>(body) {
        Ok(value) => gemini_quota_exhausted(&value),
        Err(_) => false,
    }
}

/// Gemini: a `google.rpc.QuotaFailure` whose violation names a per-day quota, or a quota
/// whose value is 0 (the model is not in the plan at all).
fn gemini_quota_exhausted(body: &Value) -> bool {
    let Some(details) = body.pointer("/error/details").and_then(Value::as_array) else {
        return false;
    };
    details
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.QuotaFailure"))
        })
        .flat_map(|d| {
            d.get("violations")
                .and_then(Value::as_array)
                .map(|v| v.as_slice())
                .unwrap_or_default()
        })
        .any(|violation| {
            let field = |name: &str| {
                violation
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_ascii_lowercase()
            };
            let names = format!("{} {}", field("quotaId"), field("quotaMetric"));
            names.contains("perday")
                || names.contains("per_day")
                || names.contains("daily")
                || field("quotaValue") == "0"
        })
}

/// Parses a `retry-after` header: delay seconds (`"2"`, also `"1.5"`) or an HTTP-date,
/// which gives the time left until `now` reaches it (zero if already past).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return duration_from_secs(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a `retry-after-ms` header (milliseconds, possibly fractional).
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let ms = value.trim().parse::<f64>().ok()?;
    duration_from_secs(ms / 1000.0)
}

/// Parses a protobuf JSON duration such as `"59s"`, `"1.5s"` or `"0.250s"`.
pub fn parse_proto_duration(value: &str) -> Option<Duration> {
    let secs = value.trim().strip_suffix('s')?.trim().parse::<f64>().ok()?;
    duration_from_secs(secs)
}

/// Gemini's retry hint: `retryDelay` of the `google.rpc.RetryInfo` entry in
/// `error.details`.
pub fn gemini_retry_delay(body: &Value) -> Option<Duration> {
    body.pointer("/error/details")?
        .as_array()?
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(parse_proto_duration)
}

/// The server's retry hint from response headers (looked up by lower-case name) and body:
/// `retry-after-ms`, then `retry-after`, then Gemini's `RetryInfo.retryDelay`.
pub fn retry_hint<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    body: &str,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(hint) = header("retry-after-ms").and_then(parse_retry_after_ms) {
        return Some(hint);
    }
    if let Some(hint) = header("retry-after").and_then(|v| parse_retry_after(v, now)) {
        return Some(hint);
    }
    serde_json::from_str::<Value>(body)
        .ok()
        .as_ref()
        .and_then(gemini_retry_delay)
}

/// A non-negative, finite, not absurd number of seconds as a duration.
fn duration_from_secs(secs: f64) -> Option<Duration> {
    if (0.0..1.0e9).contains(&secs) {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn retry_after_ms_and_proto_durations() {
        assert_eq!(
            parse_retry_after_ms("250"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after_ms("x"), None);
        assert_eq!(parse_proto_duration("59s"), Some(Duration::from_secs(59)));
        assert_eq!(
            parse_proto_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_proto_duration("0.250s"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_proto_duration("59"), None);
    }

    #[test]
    fn gemini_retry_info_is_found_among_details() {
        let body = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}});
        assert_eq!(gemini_retry_delay(&body), Some(Duration::from_millis(1500)));
        assert_eq!(gemini_retry_delay(&json!({"error": {}})), None);
    }

    #[test]
    fn hint_prefers_ms_then_seconds_then_body() {
        let now = SystemTime::now();
        let body = r#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"3s"}]}}"#;
        let headers = |name: &str| match name {
            "retry-after-ms" => Some("20"),
            "retry-after" => Some("5"),
            _ => None,
        };
        assert_eq!(
            retry_hint(headers, body, now),
            Some(Duration::from_millis(20))
        );
        let headers = |name: &str| (name == "retry-after").then_some("5");
        assert_eq!(retry_hint(headers, body, now), Some(Duration::from_secs(5)));
        assert_eq!(
            retry_hint(|_| None, body, now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry_hint(|_| None, "not json", now), None);
    }

    #[test]
    fn statuses_are_classified() {
        use ProviderErrorKind::*;
        for status in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(classify_status(status).1, "{status} should be retried");
        }
        for status in [400, 401, 403, 404, 413, 422, 501] {
            assert!(!classify_status(status).1, "{status} should not be retried");
        }
        assert_eq!(classify_status(529).0, Overloaded);
        assert_eq!(classify_status(503).0, Overloaded);
        assert_eq!(classify_status(401).0, Auth);
        assert_eq!(classify_status(403).0, Auth);
        assert_eq!(classify_status(413).0, BadRequest);
        assert_eq!(classify_status(429).0, RateLimited);
        assert_eq!(classify_status(500).0, Server);
    }

    #[test]
    fn exhausted_quotas_are_recognised() {
        assert!(quota_exhausted(
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#
        ));
        assert!(quota_exhausted(
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"spend","details":{"error_code":"enforced_spend_limit_reached"}}}"#
        ));
        let per_day = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                 "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaValue": "50"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "43s"}]}});
        assert!(quota_exhausted(&per_day.to_string()));
        let per_minute = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "quotaValue": "15"}]}]}});
        assert!(!quota_exhausted(&per_minute.to_string()));
        assert!(!quota_exhausted(
            r#"{"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}"#
        ));
    }

    #[test]
    fn backoff_is_bounded_by_the_cap() {
        let policy = RetryPolicy::new(
            10,
            Duration::from_millis(100),
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        assert_eq!(policy.backoff_ceiling(0), Duration::from_millis(100));
        assert_eq!(policy.backoff_ceiling(2), Duration::from_millis(400));
        assert_eq!(policy.backoff_ceiling(9), Duration::from_secs(1));
        assert_eq!(policy.backoff_ceiling(100), Duration::from_secs(1));
        for retry in 0..20 {
            assert!(policy.backoff(retry) <= policy.backoff_ceiling(retry));
        }
        let hint = Some(Duration::from_secs(5));
        assert_eq!(policy.wait_before(0, hint), Duration::from_secs(5));
    }

    fn fast(max_attempts: u32) -> RetryPolicy {
        RetryPolicy::new(
            max_attempts,
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_secs(5),
        )
    }

    fn failing(kind: ProviderErrorKind) -> ProviderError {
        ProviderError::new("test", kind, None, "boom")
    }

    #[tokio::test]
    async fn run_retries_retryable_errors_up_to_the_bound() {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let result: Result<(), _> = fast(3)
            .run("test", |_| {
                seen.fetch_add(1, Ordering::SeqCst);
                async { Err(failing(ProviderErrorKind::Server)) }
            })
            .await;
        let err = result.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(err.message.contains("gave up after 3 attempt(s)"), "{err}");
    }

    #[tokio::test]
    async fn run_stops_at_once_on_a_permanent_error() {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let result: Result<(), _> = fast(4)
            .run("test", |_| {
                seen.fetch_add(1, Ordering::SeqCst);
                async { Err(failing(ProviderErrorKind::Auth)) }
            })
            .await;
        assert_eq!(result.unwrap_err().message, "boom");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn run_succeeds_after_a_retry() {
        let result = fast(4)
            .run("test", |attempt| async move {
                if attempt < 2 {
                    Err(failing(ProviderErrorKind::Overloaded))
                } else {
                    Ok(attempt)
                }
            })
            .await;
        assert_eq!(result.unwrap(), 2);
    }

    #[tokio::test]
    async fn run_gives_up_when_the_hint_passes_the_deadline() {
        let policy = RetryPolicy::new(
            4,
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_millis(200),
        );
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let started = std::time::Instant::now();
        let result: Result<(), _> = policy
            .run("test", |_| {
                seen.fetch_add(1, Ordering::SeqCst);
                async {
                    Err(failing(ProviderErrorKind::RateLimited)
                        .with_retry_after(Some(Duration::from_secs(60))))
                }
            })
            .await;
        let err = result.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(err.retry_after, Some(Duration::from_secs(60)));
        assert!(err.message.contains("retry deadline reached"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn the_deadline_covers_one_attempt() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.covering(Duration::from_secs(600)).deadline,
            Duration::from_secs(600)
        );
        assert_eq!(policy.covering(Duration::from_secs(5)), policy);
    }

    #[tokio::test]
    async fn run_abandons_an_attempt_at_the_deadline() {
        let policy = RetryPolicy::new(
            4,
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_millis(50),
        );
        let result: Result<(), _> = policy
            .run("test", |_| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(())
            })
            .await;
        let err = result.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Network);
        assert!(!err.retryable);
    }
}
