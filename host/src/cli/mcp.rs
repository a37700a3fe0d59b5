//! `host mcp`: the operator's skills as an MCP server on stdin/stdout, for an agent that
//! spawns a process (its MCP client configuration names `host mcp`). It talks to the daemon
//! through its control socket; write tools only with `--write`.

use std::sync::Arc;

use super::*;

/// Options of `host mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// The daemon's control socket [default: $XDG_RUNTIME_DIR/sandbox-host/host.sock, root:
    /// /run/sandbox-host/host.sock].
    #[arg(long, env = socket_path::ENV, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Also serve the write tools (create, call, reload, rollback, restart, destroy); off by
    /// default: an agent can then only look.
    #[arg(long, alias = "mcp-write")]
    pub write: bool,
}

/// Serves MCP on stdio until the client closes it. Stdout carries only MCP messages; what
/// the server says about itself goes to stderr.
pub(super) fn mcp(args: &McpArgs) -> ExitCode {
    let socket = socket_path::resolve(args.socket.as_deref());
    let access = if args.write {
        ::mcp::Access::Write
    } else {
        ::mcp::Access::Read
    };
    eprintln!(
        "host mcp: MCP on stdio for the daemon at {}; write tools {}",
        untrusted(&socket.path.display().to_string()),
        if args.write {
            "ON (--write): the agent can create, call, reload, rollback, restart and destroy"
        } else {
            "off (read only; --write enables them)"
        }
    );
    let backend = Arc::new(::mcp::SocketBackend::new(socket.path.clone()));
    with_runtime(|rt| {
        rt.block_on(async {
            if let Err(e) = ::mcp::Backend::request(&*backend, Request::Ping).await {
                eprintln!(
                    "host mcp: warning: {e}; the tools answer with this error until a daemon runs"
                );
            }
            match ::mcp::serve_stdio(backend, access).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("host mcp: {e}");
                    ExitCode::from(1)
                }
            }
        })
    })
}
