//! Provider-neutral chat-with-tools types and the [`Provider`] trait.
//!
//! This crate knows nothing of sandboxes or operators: it turns a [`ChatRequest`] into one
//! vendor's wire format, sends it, and maps the reply back to a [`ChatResponse`].

pub mod types;

pub use types::{
    ChatRequest, ChatResponse, Message, Provider, ProviderError, ProviderErrorKind, StopReason,
    TokenUsage, ToolCall, ToolResult, ToolSpec,
};
