//! Which LLM provider an operator run uses: `--provider`, `BEAMLENS_DEMO_PROVIDER`, a key in
//! the environment, or the offline mock. Used by `demo`/`anomaly` and by the daemon's
//! `operate` (with the client's variables).

use std::sync::Arc;

/// The provider or its configuration is wrong (exit 2); the message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProviderError(pub String);

/// The chosen provider and whether it was chosen by default.
#[derive(Debug)]
pub struct ProviderChoice {
    /// The provider, ready to use.
    pub provider: Option<Arc<dyn llm::Provider>>,
    /// Its name.
    pub name: String,
    /// True when neither `--provider` nor `BEAMLENS_DEMO_PROVIDER` chose it.
    pub by_default: bool,
}

/// `--provider`, else `BEAMLENS_DEMO_PROVIDER`, else `anthropic` when `ANTHROPIC_API_KEY` is
/// set, else `mock`. The mock is built later, from the skill's rule (`provider` is `None`).
pub async fn choose_provider(
    flag: Option<&str>,
    model: Option<&str>,
) -> Result<ProviderChoice, ProviderError> {
    choose_provider_with(flag, model, &|k| std::env::var(k).ok()).await
}

/// [`choose_provider`] with the environment read through `lookup` (the daemon answers a
/// client's `operate` with the client's variables, not its own).
pub async fn choose_provider_with(
    flag: Option<&str>,
    model: Option<&str>,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<ProviderChoice, ProviderError> {
    let env = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
    let (name, by_default) = match (flag.map(str::to_string), env("BEAMLENS_DEMO_PROVIDER")) {
        (Some(name), _) | (None, Some(name)) => (name.trim().to_lowercase(), false),
        (None, None) if env("ANTHROPIC_API_KEY").is_some() => ("anthropic".to_string(), true),
        (None, None) => ("mock".to_string(), true),
    };
    if name == "mock" {
        return Ok(ProviderChoice {
            provider: None,
            name,
            by_default,
        });
    }
    let config_error = |e: llm::ConfigError| ProviderError(e.to_string());
    let kind = llm::ProviderKind::parse(&name).map_err(config_error)?;
    let mut config = llm::ProviderConfig::from_lookup(kind, lookup).map_err(config_error)?;
    if let Some(model) = model {
        config.model = model.to_string();
    }
    if kind == llm::ProviderKind::Ollama {
        let ollama = llm::OllamaProvider::new(config.clone()).map_err(config_error)?;
        ollama.probe().await.map_err(|e| ProviderError(e.message))?;
    }
    let provider = llm::provider_from_config(kind, config).map_err(config_error)?;
    Ok(ProviderChoice {
        provider: Some(Arc::from(provider)),
        name,
        by_default,
    })
}
