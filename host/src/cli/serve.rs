//! `host serve`: its options and the daemon's start (logging, limits, the manager's
//! configuration, the HTTP servers, the detector).

use super::*;

/// Options of `host serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Control socket [default: $XDG_RUNTIME_DIR/sandbox-host/host.sock, root:
    /// /run/sandbox-host/host.sock].
    #[arg(long, env = socket_path::ENV, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Where sandboxes' directories live [default: $XDG_RUNTIME_DIR/sandbox-host/sandboxes,
    /// root: /run/sandbox-host/sandboxes]; the library store and staging sit beside it.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Prepared runners to keep for creates (root only; 0 turns the pool off) [default: one
    /// per core, at most 4; env SANDBOX_HOST_POOL].
    #[arg(long, value_name = "N")]
    pub pool: Option<usize>,
    /// Largest library a create or reload accepts; K, M, G, T suffixes.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256M")]
    pub max_lib_size: u64,
    /// Longest request line (a call's arguments, a reload's source); K, M, G, T suffixes.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "1M")]
    pub max_request: u64,
    /// Most client connections at once (past it the longest-idle one is closed, or, when
    /// none is idle, the new one is refused).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// Most sandboxes at once: a create past it, or a batch that would go past it, is
    /// refused before it starts.
    #[arg(long, value_name = "N", default_value_t = daemon::DEFAULT_MAX_SANDBOXES)]
    pub max_sandboxes: usize,
    /// Seconds a request may take to arrive from its first byte (and its answer to be read).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub request_timeout: f64,
    /// Serve Prometheus metrics at http://ADDR/metrics; ADDR is PORT (binds 127.0.0.1),
    /// IP:PORT or localhost:PORT.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Allow --metrics on a non-loopback address (the metrics name every sandbox).
    #[arg(long)]
    pub metrics_allow_remote: bool,
    /// Serve the read-only dashboard at http://ADDR/; ADDR as for --metrics.
    #[arg(long, value_name = "ADDR")]
    pub ui: Option<String>,
    /// Token the dashboard requires on every request (required off loopback).
    #[arg(
        long,
        env = "SANDBOX_HOST_UI_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub ui_token: Option<String>,
    /// Serve MCP (Streamable HTTP) at http://ADDR/mcp for AI agents; ADDR as for --metrics.
    /// Requests need the --ui-token when one is set (required off loopback).
    #[arg(long, value_name = "ADDR")]
    pub mcp: Option<String>,
    /// Let MCP agents create, call, reload, rollback, restart and destroy sandboxes (off:
    /// they can only look); needs --ui-token.
    #[arg(long, requires = "mcp")]
    pub mcp_write: bool,
    /// Limits of the build sandbox.
    #[command(flatten)]
    pub build: BuildArgs,
    /// The event stream and the detector.
    #[command(flatten)]
    pub watch: crate::cli::watch_args::WatchArgs,
    /// Joining a fleet (--cluster).
    #[command(flatten)]
    pub fleet: fleet::NodeArgs,
}

impl ServeArgs {
    /// The HTTP servers the flags ask for, checked.
    pub fn http(&self) -> Result<daemon::listen::HttpServers, daemon::http::ListenError> {
        use daemon::http::{Token, parse_addr};
        use daemon::listen::HttpServers;
        let servers = HttpServers {
            metrics: self
                .metrics
                .as_deref()
                .map(|a| parse_addr("metrics", a))
                .transpose()?,
            metrics_allow_remote: self.metrics_allow_remote,
            ui: self
                .ui
                .as_deref()
                .map(|a| parse_addr("ui", a))
                .transpose()?,
            ui_token: self
                .ui_token
                .as_deref()
                .map(|t| Token::new("ui", t))
                .transpose()?,
            mcp: self
                .mcp
                .as_deref()
                .map(|a| parse_addr("mcp", a))
                .transpose()?,
            mcp_write: self.mcp_write,
        };
        servers.check()?;
        Ok(servers)
    }
}

pub(super) fn serve(args: &ServeArgs) -> ExitCode {
    let default_level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let socket = socket_path::resolve(args.socket.as_deref());
    let mut config = sandbox::ManagerConfig::new("/proc/self/exe");
    if let Some(dir) = &args.state_dir {
        config.state_dir = dir.clone();
    }
    if let Some(n) = args.pool {
        config.pool_size = n;
    }
    if !(args.request_timeout.is_finite() && args.request_timeout > 0.0) {
        eprintln!("host serve: --request-timeout must be a positive number of seconds");
        return ExitCode::from(2);
    }
    let http = match args.http() {
        Ok(http) => http,
        Err(e) => {
            eprintln!("host serve: {e}");
            return ExitCode::from(2);
        }
    };
    let limits = daemon::DaemonLimits {
        http,
        max_lib_size: args.max_lib_size,
        max_request: usize::try_from(args.max_request).unwrap_or(usize::MAX),
        max_connections: args.max_connections.max(1),
        max_sandboxes: args.max_sandboxes,
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        ..Default::default()
    };
    config.compiler.limits = args.build.limits();
    let watch = match args.watch.config() {
        Ok(watch) => watch,
        Err(e) => {
            eprintln!("host serve: {e}");
            return ExitCode::from(2);
        }
    };
    config.events =
        sandbox::events::EventBus::new(args.watch.event_ring, sandbox::events::DEFAULT_CHANNEL);
    let fleet_libs = config.state_dir.with_file_name("fleet-libs");
    with_runtime(|rt| {
        // Joined before the daemon starts, so wrong credentials or an unreachable fleet
        // stop `host serve` at once.
        let node = match args.fleet.connect.is_set() {
            true => match rt.block_on(fleet::node::Node::join(
                &args.fleet,
                &socket.path,
                &fleet_libs,
            )) {
                Ok(node) => Some(node),
                Err(e) => {
                    eprintln!("host serve: {e}");
                    return ExitCode::from(1);
                }
            },
            false => None,
        };
        // In a fleet, each node's coordinator covers its own sandboxes (its kernel's figures);
        // the one holding the leader lease also correlates notifications across nodes.
        let leader = (watch.coordinate && node.is_some())
            .then(|| std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let agent = node.map(|node| rt.spawn(fleet::agent::run_with(node, leader)));
        let served = rt.block_on(daemon::serve_watching(&socket, config, limits, watch));
        if let Some(agent) = agent {
            agent.abort();
        }
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("host serve: {e}");
                ExitCode::from(1)
            }
        }
    })
}
