//! Provider-neutral chat-with-tools types and the [`Provider`] trait.
//!
//! This crate knows nothing of sandboxes or operators: it turns a [`ChatRequest`] into one
//! vendor's wire format, sends it, and maps the reply back to a [`ChatResponse`].
//!
//! Providers: [`AnthropicProvider`], [`OpenAiProvider`], [`GeminiProvider`] (`google-ai`),
//! [`OllamaProvider`]; pick one by name with [`provider_from_env`]. All of them share one
//! [`RetryPolicy`] and parse tool calls written as JSON text ([`text_tool_calls`]).

#![warn(missing_docs)]

pub mod anthropic;
mod common;
mod compat;
pub mod config;
pub mod fallback;
pub mod gemini;
mod http;
pub mod ollama;
pub mod openai;
pub mod retry;
pub mod select;
pub mod telemetry;
pub mod text_tool_calls;
pub mod types;

pub use anthropic::AnthropicProvider;
pub use config::{ConfigError, ProviderConfig, ProviderKind};
pub use fallback::{FALLBACK_VAR, FallbackProvider, falls_back};
pub use gemini::GeminiProvider;
pub use ollama::OllamaProvider;
pub use openai::OpenAiProvider;
pub use retry::RetryPolicy;
pub use select::{provider_from_config, provider_from_env};
pub use telemetry::{CallRecord, CallSink, Observed};
pub use types::{
    ChatRequest, ChatResponse, Message, Provider, ProviderError, ProviderErrorKind, StopReason,
    TokenUsage, ToolCall, ToolChoice, ToolResult, ToolSpec,
};
