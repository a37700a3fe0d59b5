//! Provider configuration, and the one place that reads the environment.
//!
//! Every provider is built from an explicit [`ProviderConfig`] (tests pass the base URL and
//! key of a local server). [`ProviderConfig::from_env`] fills one in from the process
//! environment; [`ProviderConfig::from_lookup`] does the same from any lookup function, so
//! the rules can be tested without touching the process environment.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::retry::RetryPolicy;

/// Variable that overrides the model of every provider.
pub const MODEL_VAR: &str = "BEAMLENS_DEMO_MODEL";

/// One of the HTTP providers this crate implements (`mock` lives in the operator crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Anthropic Messages API.
    Anthropic,
    /// OpenAI Chat Completions (and compatible servers).
    OpenAi,
    /// Google AI (Gemini) `generateContent`.
    GoogleAi,
    /// Ollama's native `/api/chat`.
    Ollama,
}

impl ProviderKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Anthropic,
        ProviderKind::OpenAi,
        ProviderKind::GoogleAi,
        ProviderKind::Ollama,
    ];

    /// The provider id reported by [`crate::Provider::name`].
    pub fn id(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAi => "openai",
            ProviderKind::GoogleAi => "google-ai",
            ProviderKind::Ollama => "ollama",
        }
    }

    /// Parses a provider name: `anthropic`, `openai`, `google-ai` or `gemini-ai`, `ollama`
    /// (case-insensitive, surrounding blanks ignored).
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "anthropic" => Ok(ProviderKind::Anthropic),
            "openai" => Ok(ProviderKind::OpenAi),
            "google-ai" | "gemini-ai" => Ok(ProviderKind::GoogleAi),
            "ollama" => Ok(ProviderKind::Ollama),
            _ => Err(ConfigError::UnknownProvider(name.to_string())),
        }
    }

    /// The default base URL.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "https://api.anthropic.com",
            ProviderKind::OpenAi => "https://api.openai.com",
            ProviderKind::GoogleAi => "https://generativelanguage.googleapis.com",
            ProviderKind::Ollama => "http://localhost:11434",
        }
    }

    /// The default model.
    pub fn default_model(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "claude-haiku-4-5-20251001",
            ProviderKind::OpenAi => "gpt-4o-mini",
            ProviderKind::GoogleAi => "gemini-flash-lite-latest",
            ProviderKind::Ollama => "qwen3:4b",
        }
    }

    /// The variable that overrides the base URL.
    pub fn base_url_var(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "ANTHROPIC_BASE_URL",
            ProviderKind::OpenAi => "OPENAI_BASE_URL",
            ProviderKind::GoogleAi => "GOOGLE_AI_BASE_URL",
            ProviderKind::Ollama => "OLLAMA_HOST",
        }
    }

    /// Whether the provider refuses a config without a key (OpenAI's may be empty, for
    /// local OpenAI-compatible servers; Ollama has none).
    pub(crate) fn key_required(self) -> bool {
        matches!(self, ProviderKind::Anthropic | ProviderKind::GoogleAi)
    }

    /// The variables that hold the API key, first match wins (none for Ollama).
    pub fn key_vars(self) -> &'static [&'static str] {
        match self {
            ProviderKind::Anthropic => &["ANTHROPIC_API_KEY"],
            ProviderKind::OpenAi => &["OPENAI_API_KEY"],
            ProviderKind::GoogleAi => &["GOOGLE_API_KEY", "GEMINI_API_KEY"],
            ProviderKind::Ollama => &[],
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for ProviderKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Why a provider could not be configured.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// The provider's API key variable is unset or empty.
    #[error("{}", missing_key_message(*.0))]
    MissingApiKey(ProviderKind),
    /// The provider name is not one this crate (or the operator's `mock`) knows.
    #[error("Unknown provider: {0}. Use anthropic, openai, google-ai, gemini-ai, ollama, or mock")]
    UnknownProvider(String),
    /// A base URL that is not an `http(s)://` URL.
    #[error("invalid base URL {url:?}: expected http://host[:port] or https://host[:port]")]
    InvalidBaseUrl {
        /// The URL as given.
        url: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] Arc<reqwest::Error>),
}

/// The exact wording the demo prints for a missing key.
fn missing_key_message(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => {
            "ANTHROPIC_API_KEY not set. Set it or choose BEAMLENS_DEMO_PROVIDER=google-ai \
             (gemini-ai), ollama, or mock"
        }
        ProviderKind::OpenAi => "OPENAI_API_KEY not set",
        ProviderKind::GoogleAi => {
            "GOOGLE_API_KEY not set. Set it or use BEAMLENS_DEMO_PROVIDER=anthropic, ollama, or mock"
        }
        ProviderKind::Ollama => "Ollama needs no API key",
    }
}

/// Everything a provider needs: where to send requests, with which key, for which model,
/// and how to retry.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Base URL without the API path, e.g. `https://api.anthropic.com` (a trailing `/` is
    /// ignored; for OpenAI a trailing `/v1` is accepted too).
    pub base_url: String,
    /// API key; empty for Ollama.
    pub api_key: String,
    /// Default model, used when a request leaves [`crate::ChatRequest::model`] empty.
    pub model: String,
    /// The retry policy.
    pub retry: RetryPolicy,
}

impl fmt::Debug for ProviderConfig {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("base_url", &self.base_url)
            .field(
                "api_key",
                &if self.api_key.is_empty() {
                    "<none>"
                } else {
                    "<redacted>"
                },
            )
            .field("model", &self.model)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ProviderConfig {
    /// A config with the given base URL, key and model and the default retry policy.
    pub fn new(
        base_url: impl Into<String>,
        api_key: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: api_key.into(),
            model: model.into(),
            retry: RetryPolicy::default(),
        }
    }

    /// The kind's default base URL and model with the given key.
    pub fn defaults(kind: ProviderKind, api_key: impl Into<String>) -> Self {
        Self::new(kind.default_base_url(), api_key, kind.default_model())
    }

    /// The same config with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same config with another model.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Reads the config of `kind` from the process environment (see [`Self::from_lookup`]).
    pub fn from_env(kind: ProviderKind) -> Result<Self, ConfigError> {
        Self::from_lookup(kind, |name| std::env::var(name).ok())
    }

    /// Builds the config of `kind` from `lookup` (a variable name to its value):
    /// the base URL from the kind's base URL variable (for Ollama `OLLAMA_HOST`, which may
    /// be a bare `host:port`), the key from its key variables, the model from
    /// `BEAMLENS_DEMO_MODEL` or the kind's default. Empty values count as unset.
    pub fn from_lookup(
        kind: ProviderKind,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        // A local OpenAI-compatible server (llama.cpp, llama-cpp-python, vLLM) needs no key:
        // with OPENAI_BASE_URL pointing anywhere but api.openai.com, none is asked for.
        let local_openai = kind == ProviderKind::OpenAi
            && get(kind.base_url_var())
                .is_some_and(|url| !url.to_ascii_lowercase().contains("://api.openai.com"));
        let api_key = if kind.key_vars().is_empty() {
            String::new()
        } else {
            match kind.key_vars().iter().find_map(|var| get(var)) {
                Some(key) => key,
                None if local_openai => String::new(),
                None => return Err(ConfigError::MissingApiKey(kind)),
            }
        };
        let base_url = match get(kind.base_url_var()) {
            Some(url) if kind == ProviderKind::Ollama => ollama_host_url(&url),
            Some(url) => url,
            None => kind.default_base_url().to_string(),
        };
        let model = get(MODEL_VAR).unwrap_or_else(|| kind.default_model().to_string());
        Ok(Self {
            base_url,
            api_key,
            model,
            retry: RetryPolicy::default(),
        })
    }
}

/// Turns an `OLLAMA_HOST` value into a base URL the way the Ollama CLI does: no scheme
/// means `http://`, no port means 11434 (443 for `https://`).
pub fn ollama_host_url(value: &str) -> String {
    let value = value.trim().trim_end_matches('/');
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("http".to_string(), value),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let has_port = if let Some(end) = authority.rfind(']') {
        authority[end..].contains(':')
    } else {
        authority.contains(':')
    };
    let authority = if authority.is_empty() {
        "localhost:11434".to_string()
    } else if has_port {
        authority.to_string()
    } else {
        let port = if scheme == "https" { 443 } else { 11434 };
        format!("{authority}:{port}")
    };
    format!("{scheme}://{authority}{path}")
}

/// The base URL of `kind`'s `config`: checked to be `http(s)://...`, without trailing
/// slashes; for Ollama a bare `host:port` (as in `OLLAMA_HOST`) is accepted too.
pub(crate) fn base_url(kind: ProviderKind, config: &ProviderConfig) -> Result<String, ConfigError> {
    if kind == ProviderKind::Ollama {
        normalise_base_url(&ollama_host_url(&config.base_url))
    } else {
        normalise_base_url(&config.base_url)
    }
}

/// Checks that a base URL is `http(s)://...` and returns it without trailing slashes.
fn normalise_base_url(url: &str) -> Result<String, ConfigError> {
    let trimmed = url.trim().trim_end_matches('/');
    let lower = trimmed.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() => Ok(trimmed.to_string()),
        _ => Err(ConfigError::InvalidBaseUrl {
            url: url.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn missing_keys_have_the_documented_messages() {
        let err = ProviderConfig::from_lookup(ProviderKind::Anthropic, env(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ANTHROPIC_API_KEY not set. Set it or choose BEAMLENS_DEMO_PROVIDER=google-ai \
             (gemini-ai), ollama, or mock"
        );
        let err = ProviderConfig::from_lookup(ProviderKind::OpenAi, env(&[("OPENAI_API_KEY", "")]))
            .unwrap_err();
        assert_eq!(err.to_string(), "OPENAI_API_KEY not set");
        let err = ProviderConfig::from_lookup(
            ProviderKind::OpenAi,
            env(&[("OPENAI_BASE_URL", "https://api.openai.com/v1")]),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "OPENAI_API_KEY not set");
        // A local OpenAI-compatible server needs none.
        let local = ProviderConfig::from_lookup(
            ProviderKind::OpenAi,
            env(&[("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")]),
        )
        .unwrap();
        assert_eq!(local.api_key, "");
        let err = ProviderConfig::from_lookup(ProviderKind::GoogleAi, env(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "GOOGLE_API_KEY not set. Set it or use BEAMLENS_DEMO_PROVIDER=anthropic, ollama, or mock"
        );
        assert!(ProviderConfig::from_lookup(ProviderKind::Ollama, env(&[])).is_ok());
    }

    #[test]
    fn defaults_and_overrides() {
        let cfg = ProviderConfig::from_lookup(
            ProviderKind::Anthropic,
            env(&[("ANTHROPIC_API_KEY", "k")]),
        )
        .unwrap();
        assert_eq!(cfg.base_url, "https://api.anthropic.com");
        assert_eq!(cfg.model, "claude-haiku-4-5-20251001");
        assert_eq!(cfg.api_key, "k");
        assert!(!format!("{cfg:?}").contains("\"k\""));

        let cfg = ProviderConfig::from_lookup(
            ProviderKind::GoogleAi,
            env(&[
                ("GEMINI_API_KEY", "g"),
                ("GOOGLE_AI_BASE_URL", "http://127.0.0.1:9"),
                ("BEAMLENS_DEMO_MODEL", "gemini-2.5-flash"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.api_key, "g");
        assert_eq!(cfg.base_url, "http://127.0.0.1:9");
        assert_eq!(cfg.model, "gemini-2.5-flash");

        let cfg = ProviderConfig::from_lookup(
            ProviderKind::GoogleAi,
            env(&[("GEMINI_API_KEY", "g"), ("GOOGLE_API_KEY", "first")]),
        )
        .unwrap();
        assert_eq!(cfg.api_key, "first");

        let cfg = ProviderConfig::from_lookup(ProviderKind::Ollama, env(&[])).unwrap();
        assert_eq!(cfg.base_url, "http://localhost:11434");
        assert_eq!(cfg.model, "qwen3:4b");
        let cfg =
            ProviderConfig::from_lookup(ProviderKind::OpenAi, env(&[("OPENAI_API_KEY", "o")]))
                .unwrap();
        assert_eq!(cfg.model, "gpt-4o-mini");
    }

    #[test]
    fn ollama_host_forms() {
        assert_eq!(ollama_host_url("127.0.0.1:11500"), "http://127.0.0.1:11500");
        assert_eq!(ollama_host_url("gpu-box"), "http://gpu-box:11434");
        assert_eq!(ollama_host_url("http://gpu-box/"), "http://gpu-box:11434");
        assert_eq!(
            ollama_host_url("https://ollama.example"),
            "https://ollama.example:443"
        );
        assert_eq!(ollama_host_url("http://[::1]:8080"), "http://[::1]:8080");
        assert_eq!(ollama_host_url("[::1]"), "http://[::1]:11434");
        assert_eq!(ollama_host_url("0.0.0.0:11434"), "http://0.0.0.0:11434");
    }

    #[test]
    fn provider_names() {
        assert_eq!(
            ProviderKind::parse("gemini-ai").unwrap(),
            ProviderKind::GoogleAi
        );
        assert_eq!(
            ProviderKind::parse(" Google-AI ").unwrap(),
            ProviderKind::GoogleAi
        );
        assert_eq!(
            ProviderKind::parse("mock").unwrap_err().to_string(),
            "Unknown provider: mock. Use anthropic, openai, google-ai, gemini-ai, ollama, or mock"
        );
        for kind in ProviderKind::ALL {
            assert_eq!(ProviderKind::parse(kind.id()).unwrap(), kind);
        }
    }

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(normalise_base_url("http://h:1/").unwrap(), "http://h:1");
        assert!(normalise_base_url("h:1").is_err());
        assert!(normalise_base_url("https://").is_err());
    }
}
