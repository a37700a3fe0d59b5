//! The daemon's HTTP servers (`--metrics`, `--ui`, `--mcp`): checked, bound and started
//! together.

use std::net::SocketAddr;

use crate::http::{ListenError, Token, bind};

/// The daemon's HTTP servers (`--metrics`, `--ui`); none by default.
#[derive(Debug, Clone, Default)]
pub struct HttpServers {
    /// Where to serve `/metrics`.
    pub metrics: Option<SocketAddr>,
    /// Whether `metrics` may be a non-loopback address.
    pub metrics_allow_remote: bool,
    /// Where to serve the dashboard.
    pub ui: Option<SocketAddr>,
    /// The token the dashboard requires (required when `ui` is not loopback); `/mcp`
    /// requires it too.
    pub ui_token: Option<Token>,
    /// Where to serve MCP at `/mcp`.
    pub mcp: Option<SocketAddr>,
    /// Whether `/mcp` serves the write tools (`--mcp-write`).
    pub mcp_write: bool,
}

/// The addresses the servers actually listen on (a port 0 resolved).
#[derive(Debug, Clone, Default)]
pub struct Listening {
    /// The metrics server's address.
    pub metrics: Option<SocketAddr>,
    /// The dashboard's address.
    pub ui: Option<SocketAddr>,
    /// The MCP endpoint's address.
    pub mcp: Option<SocketAddr>,
}

impl HttpServers {
    /// Refuses a non-loopback address without its protection: the dashboard needs a token,
    /// the metrics `--metrics-allow-remote` (they name every sandbox and what it uses).
    pub fn check(&self) -> Result<(), ListenError> {
        if let Some(addr) = self.metrics
            && !addr.ip().is_loopback()
            && !self.metrics_allow_remote
        {
            return Err(ListenError::Remote {
                what: "metrics",
                addr,
                hint: "add --metrics-allow-remote to serve metrics to other machines",
            });
        }
        if let Some(addr) = self.ui
            && !addr.ip().is_loopback()
            && self.ui_token.is_none()
        {
            return Err(ListenError::Remote {
                what: "ui",
                addr,
                hint: "give a token with --ui-token TOKEN or SANDBOX_HOST_UI_TOKEN",
            });
        }
        if let Some(addr) = self.mcp
            && !addr.ip().is_loopback()
            && self.ui_token.is_none()
        {
            return Err(ListenError::Remote {
                what: "mcp",
                addr,
                hint: "give a token with --ui-token TOKEN or SANDBOX_HOST_UI_TOKEN",
            });
        }
        if self.mcp.is_some() && self.mcp_write && self.ui_token.is_none() {
            // Loopback is not enough: a sandbox created with --network shares the host's
            // network namespace and could otherwise drive the write tools.
            return Err(ListenError::TokenRequired {
                what: "mcp-write",
                why: "write tools over HTTP need a token (a sandbox created with --network can \
                      connect to loopback)",
            });
        }
        Ok(())
    }

    /// Checks, binds and starts the servers (each in its own task, until `stop`).
    pub async fn start(
        &self,
        manager: &sandbox::Manager,
        metrics: &std::sync::Arc<::watch::metrics::Metrics>,
        control_socket: &std::path::Path,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<Listening, ListenError> {
        self.check()?;
        let mut listening = Listening::default();
        let metrics_listener = match self.metrics {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        let ui_listener = match self.ui {
            Some(addr) => Some(bind("ui", addr).await?),
            None => None,
        };
        let mcp_listener = match self.mcp {
            Some(addr) => Some(bind("mcp", addr).await?),
            None => None,
        };
        if metrics_listener.is_some() || ui_listener.is_some() || mcp_listener.is_some() {
            let limits = crate::http::ConnLimits::of_process();
            tracing::info!(
                "HTTP: at most {} connections per listener, request heads within {:?}, \
                 stalled answers dropped after {:?}, {} descriptors kept free",
                limits.max_connections,
                limits.header_timeout,
                limits.write_stall,
                limits.fd_reserve
            );
        }
        if let Some(listener) = metrics_listener {
            let addr = listener.local_addr().ok();
            listening.metrics = addr;
            tokio::spawn(
                std::sync::Arc::clone(metrics).follow(manager.events().clone(), stop.clone()),
            );
            let loopback_only = !self.metrics_allow_remote;
            tokio::spawn(crate::metrics_http::serve(
                listener,
                std::sync::Arc::clone(metrics),
                manager.clone(),
                loopback_only,
                stop.clone(),
            ));
            if let Some(addr) = addr {
                tracing::info!("metrics on http://{addr}/metrics");
            }
        }
        if let Some(listener) = ui_listener {
            let addr = listener.local_addr().ok();
            listening.ui = addr;
            tokio::spawn(crate::ui::serve(
                listener,
                manager.clone(),
                self.ui_token.clone(),
                stop.clone(),
            ));
            if let Some(addr) = addr {
                tracing::info!("dashboard on http://{addr}/");
            }
        }
        if let Some(listener) = mcp_listener {
            let addr = listener.local_addr().ok();
            listening.mcp = addr;
            let config = crate::http::mcp::McpHttp {
                control_socket: control_socket.to_path_buf(),
                token: self.ui_token.clone(),
                write: self.mcp_write,
            };
            tokio::spawn(crate::http::mcp::serve(listener, config, stop.clone()));
            if let Some(addr) = addr {
                if self.mcp_write {
                    tracing::warn!(
                        "MCP on http://{addr}/mcp with write tools ON (--mcp-write): an agent \
                         can create, call, reload, rollback, restart and destroy sandboxes"
                    );
                } else {
                    tracing::info!(
                        "MCP on http://{addr}/mcp (read tools only; --mcp-write adds the write tools)"
                    );
                }
            }
        }
        Ok(listening)
    }
}
