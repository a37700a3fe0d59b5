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
    /// The provider, ready to use (with its fallbacks, when `BEAMLENS_DEMO_FALLBACK` names
    /// some: see [`llm::FallbackProvider`]).
    pub provider: Option<Arc<dyn llm::Provider>>,
    /// Its name.
    pub name: String,
    /// True when neither `--provider` nor `BEAMLENS_DEMO_PROVIDER` chose it.
    pub by_default: bool,
    /// The chosen provider, then its fallbacks in order (empty for the mock).
    chain: Vec<Arc<dyn llm::Provider>>,
}

impl ProviderChoice {
    /// The fallbacks' names, in order (empty without `BEAMLENS_DEMO_FALLBACK`).
    pub fn fallbacks(&self) -> Vec<&str> {
        self.chain.iter().skip(1).map(|p| p.name()).collect()
    }

    /// The provider to run with, every call (each provider a fallback tries included)
    /// reported to `sink`; `mock()` builds the provider when the choice is the mock.
    pub fn observed(
        &self,
        mock: impl FnOnce() -> Arc<dyn llm::Provider>,
        sink: llm::CallSink,
    ) -> Arc<dyn llm::Provider> {
        match self.chain.split_first() {
            None => Arc::new(llm::Observed::new(mock(), sink)),
            Some((first, [])) => Arc::new(llm::Observed::new(Arc::clone(first), sink)),
            Some((first, rest)) => Arc::new(
                llm::FallbackProvider::new(Arc::clone(first), rest.to_vec()).with_sink(sink),
            ),
        }
    }
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
            chain: Vec::new(),
        });
    }
    let mut chain = vec![build(&name, model, lookup).await?];
    // The fallbacks, in order, each configured from its own variables like the first; the
    // model flag is the first provider's.
    if let Some(list) = env(llm::FALLBACK_VAR) {
        for next in list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .take(4)
        {
            let next = next.to_lowercase();
            if next == name || chain.iter().any(|p| p.name() == next) {
                continue;
            }
            chain.push(build(&next, None, lookup).await.map_err(|e| {
                ProviderError(format!("{} (fallback {next}): {e}", llm::FALLBACK_VAR))
            })?);
        }
    }
    let provider: Arc<dyn llm::Provider> = if chain.len() == 1 {
        Arc::clone(&chain[0])
    } else {
        Arc::new(llm::FallbackProvider::new(
            Arc::clone(&chain[0]),
            chain[1..].to_vec(),
        ))
    };
    Ok(ProviderChoice {
        provider: Some(provider),
        name,
        by_default,
        chain,
    })
}

/// Provider `name` configured from `lookup` (the mock is not one: it is built from the
/// skill's rule), with `model` when given; Ollama is probed.
async fn build(
    name: &str,
    model: Option<&str>,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Arc<dyn llm::Provider>, ProviderError> {
    let config_error = |e: llm::ConfigError| ProviderError(e.to_string());
    let kind = llm::ProviderKind::parse(name).map_err(config_error)?;
    let mut config = llm::ProviderConfig::from_lookup(kind, lookup).map_err(config_error)?;
    if let Some(model) = model {
        config.model = model.to_string();
    }
    if kind == llm::ProviderKind::Ollama {
        let ollama = llm::OllamaProvider::new(config.clone()).map_err(config_error)?;
        ollama.probe().await.map_err(|e| ProviderError(e.message))?;
    }
    let provider = llm::provider_from_config(kind, config).map_err(config_error)?;
    Ok(Arc::from(provider))
}
