//! The operator's skills as an MCP server, for the agents people already run (coding
//! assistants, IDE agents, their own loops), on the official Rust SDK (`rmcp`).
//!
//! Two transports, one server ([`SandboxServer`]): stdio (`host mcp`, [`serve_stdio`]) and
//! Streamable HTTP (`host serve --mcp ADDR`, [`http_service`], mounted at `/mcp` by the
//! daemon behind its token, `Origin`/`Host` and size checks). Both reach the daemon through a
//! [`Backend`]: its control socket, as every other client does.
//!
//! The coordinator's insights are resources (`sandbox-host://insights`, [`resources`]).
//! Read tools are always listed; write tools (create, call, reload, rollback, restart,
//! destroy) only with [`Access::Write`] (`--mcp-write`): without it they are absent from the
//! tool list and a call to one is an unknown tool. A verdict an agent reports
//! (`report_verdict`) is checked against live telemetry by the operator's own guardrail
//! (`watch::skill::guardrail`). Whatever an app controls (names, versions, call results, log
//! lines) goes out as JSON values, never interpreted, and every answer is bounded
//! ([`bounds`]).

pub mod backend;
pub mod bounds;
mod prompts;
mod read_tools;
pub mod resources;
mod server;
mod verdict;
mod write_tools;

pub use backend::{Backend, BackendError, SocketBackend};
pub use server::SandboxServer;

use std::sync::Arc;

/// What an MCP client may do: look (the default) or also act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Read tools only.
    #[default]
    Read,
    /// Read and write tools (`--mcp-write`).
    Write,
}

/// Why the stdio server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The MCP session could not start (the client's `initialize` failed or never came).
    #[error("MCP session: {0}")]
    Start(String),
    /// The session ended with an error.
    #[error("MCP session ended: {0}")]
    Run(String),
}

/// Serves MCP on this process's stdin and stdout until the client closes them.
pub async fn serve_stdio(backend: Arc<dyn Backend>, access: Access) -> Result<(), ServeError> {
    use rmcp::ServiceExt;
    let (stdin, stdout) = rmcp::transport::stdio();
    let service = SandboxServer::new(backend, access)
        .serve((stdin, stdout))
        .await
        .map_err(|e| ServeError::Start(e.to_string()))?;
    service
        .waiting()
        .await
        .map_err(|e| ServeError::Run(e.to_string()))?;
    Ok(())
}

/// The Streamable HTTP service for `/mcp`: stateless (no session is kept between requests,
/// so a client cannot make the daemon hold any), JSON answers, bodies of at most
/// [`bounds::MAX_HTTP_BODY`], `Host` checked against `allowed_hosts` (empty: not checked,
/// for a listener the token guards), stopped with `stop`.
pub fn http_service(
    backend: Arc<dyn Backend>,
    access: Access,
    allowed_hosts: Vec<String>,
    stop: tokio_util::sync::CancellationToken,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    SandboxServer,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(bounds::MAX_HTTP_BODY)
        .with_cancellation_token(stop);
    config = if allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(allowed_hosts)
    };
    StreamableHttpService::new(
        move || Ok(SandboxServer::new(Arc::clone(&backend), access)),
        Default::default(),
        config,
    )
}
