//! The request to run the AI operator once on a sandbox (`host operate`, the control socket's
//! `operate`), and the provider variables a client forwards with it.
//!
//! The client sends its own provider variables (keys, base URLs, model), so the operator uses
//! the caller's credentials, not whatever the daemon was started with.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Prefixes of the environment variables a client forwards for `operate`.
pub const FORWARDED_ENV: &[&str] = &[
    "BEAMLENS_",
    "ANTHROPIC_",
    "OPENAI_",
    "GOOGLE_",
    "GEMINI_",
    "OLLAMA_",
];

/// Which skill watches the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkillKind {
    /// Status and resource usage.
    #[default]
    Sandbox,
    /// Process spikes.
    Anomaly,
}

/// An operator run request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperateRequest {
    /// The sandbox to watch.
    pub id: String,
    /// The skill.
    #[serde(default)]
    pub skill: SkillKind,
    /// Provider name; the client's `BEAMLENS_DEMO_PROVIDER`, then key-based default, else.
    #[serde(default)]
    pub provider: Option<String>,
    /// Model override.
    #[serde(default)]
    pub model: Option<String>,
    /// The client's provider variables (see [`FORWARDED_ENV`]).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Iteration cap (default 4).
    #[serde(default)]
    pub max_iterations: Option<u32>,
    /// Overall deadline in milliseconds (default 30000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The provider variables of this process, to forward to the daemon.
pub fn forwarded_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| FORWARDED_ENV.iter().any(|p| k.starts_with(p)))
        .collect()
}

impl SkillKind {
    /// Every skill, in the order the CLI lists them.
    pub const ALL: [SkillKind; 2] = [SkillKind::Sandbox, SkillKind::Anomaly];

    /// The skill's name on the wire and the command line.
    pub fn name(self) -> &'static str {
        match self {
            SkillKind::Sandbox => "sandbox",
            SkillKind::Anomaly => "anomaly",
        }
    }
}

impl fmt::Display for SkillKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A skill name that is not one of [`SkillKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSkill(pub String);

impl fmt::Display for UnknownSkill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown skill {:?} (the skills are: sandbox, anomaly)",
            self.0
        )
    }
}

impl std::error::Error for UnknownSkill {}

impl FromStr for SkillKind {
    type Err = UnknownSkill;

    fn from_str(text: &str) -> Result<SkillKind, UnknownSkill> {
        SkillKind::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| UnknownSkill(text.to_string()))
    }
}
