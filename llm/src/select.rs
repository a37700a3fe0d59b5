//! Choosing a provider by name.

use crate::anthropic::AnthropicProvider;
use crate::config::{ConfigError, ProviderConfig, ProviderKind};
use crate::gemini::GeminiProvider;
use crate::ollama::OllamaProvider;
use crate::openai::OpenAiProvider;
use crate::types::Provider;

/// Builds the provider called `name` (`anthropic`, `openai`, `google-ai` or `gemini-ai`,
/// `ollama`) from the environment. `mock` is not handled here (the operator owns it) and,
/// like any other name, gives [`ConfigError::UnknownProvider`].
pub fn provider_from_env(name: &str) -> Result<Box<dyn Provider>, ConfigError> {
    let kind = ProviderKind::parse(name)?;
    provider_from_config(kind, ProviderConfig::from_env(kind)?)
}

/// Builds a provider of `kind` from explicit config.
pub fn provider_from_config(
    kind: ProviderKind,
    config: ProviderConfig,
) -> Result<Box<dyn Provider>, ConfigError> {
    Ok(match kind {
        ProviderKind::Anthropic => Box::new(AnthropicProvider::new(config)?),
        ProviderKind::OpenAi => Box::new(OpenAiProvider::new(config)?),
        ProviderKind::GoogleAi => Box::new(GeminiProvider::new(config)?),
        ProviderKind::Ollama => Box::new(OllamaProvider::new(config)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_rejected_with_the_list() {
        let err = provider_from_env("bard").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unknown provider: bard. Use anthropic, openai, google-ai, gemini-ai, ollama, or mock"
        );
        assert!(matches!(
            provider_from_env("mock"),
            Err(ConfigError::UnknownProvider(_))
        ));
    }

    #[test]
    fn every_kind_builds_from_config() {
        for kind in ProviderKind::ALL {
            let provider =
                provider_from_config(kind, ProviderConfig::defaults(kind, "key")).unwrap();
            assert_eq!(provider.name(), kind.id());
            assert_eq!(provider.model(), kind.default_model());
        }
        let err = provider_from_config(
            ProviderKind::Anthropic,
            ProviderConfig::defaults(ProviderKind::Anthropic, ""),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::MissingApiKey(ProviderKind::Anthropic)
        ));
    }
}
