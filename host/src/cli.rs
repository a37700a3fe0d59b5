//! Command-line interface of the `host` binary.
//!
//! `host serve` runs the daemon; the other commands are thin clients of its control socket.
//! Exit status: 0 on success, 1 when the operation failed, 2 on a usage error, 3 when no
//! daemon could be reached. A failure prints one `host: <reason>` line to stderr (a failed
//! build adds cargo's diagnostics); with `--json` the error also goes to stdout as
//! `{"error":{"kind":…,"message":…}}`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::client::{self, Client, ClientArgs, ClientError, failure};
use crate::output::untrusted;
use daemon::socket_path;
use proto::control::{ReloadWire, Request};
use proto::runner::WorkerList;
use sandbox::{AppSource, ReloadReport, SandboxInfo, SandboxSummary};

mod ask;
pub mod batch;
mod canary;
mod deps;
mod fleet_hook;
mod logs;
mod mcp;
mod reload;
mod serve;
mod tenant_args;
mod watch_args;
pub use ask::AskArgs;
pub use fleet_hook::NodesArgs;
pub use logs::{DestroyArgs, LogsArgs};
pub use mcp::McpArgs;
pub use reload::ReloadArgs;
use reload::reload;
pub use serve::ServeArgs;
use serve::serve;
pub use tenant_args::TenantArgs;

/// Runs untrusted native apps in sandboxes and watches them with an AI operator.
#[derive(Debug, Parser)]
#[command(name = "host", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The demo: sandbox, hot reload to 42, call, AI operator, guardrail (offline by default).
    Demo(crate::demo::DemoArgs),
    /// The anomaly demo: like `demo`, plus N extra worker processes the operator must notice.
    Anomaly {
        /// Extra supervised worker processes to start.
        #[arg(long, default_value_t = 25, allow_negative_numbers = true)]
        load: i64,
        /// Shared demo options.
        #[command(flatten)]
        args: crate::demo::DemoArgs,
    },
    /// Run the daemon in the foreground: owns sandboxes, serves the control socket.
    Serve(ServeArgs),
    /// Create a sandbox (from the demo app unless --app or --lib says otherwise).
    Create(CreateArgs),
    /// List sandboxes.
    List(ClientArgs),
    /// Describe a sandbox: status, pid, versions, limits, isolation.
    Info(IdArgs),
    /// Call an app function and print the JSON value it returns.
    Call(CallArgs),
    /// Hot-reload a new version into a running sandbox.
    Reload(ReloadArgs),
    /// Go back to an earlier version of a sandbox.
    Rollback(RollbackArgs),
    /// Show a sandbox's resource usage, measured by the host.
    Usage(IdArgs),
    /// Run the AI operator once on a live sandbox of the daemon and print its verdict.
    Operate(OperateArgs),
    /// Ask the coordinator a question about a sandbox (or all): its answer and the figures used.
    Ask(AskArgs),
    /// List a sandbox's supervised workers, or start more.
    Workers(WorkersArgs),
    /// Restart a sandbox's runner on its current version.
    Restart(IdArgs),
    /// Destroy a sandbox and everything in it (its log is kept 10 minutes unless --purge).
    Destroy(DestroyArgs),
    /// Print the daemon's events (the last ones kept, then with --follow every new one).
    Events(crate::client_events::EventsArgs),
    /// Print a sandbox's log: its app's and workers' stdout and stderr, escaped.
    Logs(LogsArgs),
    /// Create, destroy, call or reload many sandboxes in one request (exit 4: some failed).
    #[command(subcommand)]
    Batch(batch::BatchCommand),
    /// An app crate's dependencies: `deps fetch --app DIR` fills the daemon's cargo cache.
    Deps(deps::DepsArgs),
    /// Serve the sandboxes to an AI agent over MCP on stdin/stdout (read only unless --write).
    Mcp(McpArgs),
    /// List the live nodes of a fleet (--cluster URLS).
    Nodes(NodesArgs),
}

/// A sandbox id and the client options.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Sandbox id.
    pub id: String,
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `host operate`.
#[derive(Debug, Args)]
pub struct OperateArgs {
    /// Sandbox id.
    pub id: String,
    /// Which skill watches the sandbox.
    #[arg(long, value_enum, default_value = "sandbox")]
    pub skill: proto::operate::SkillKind,
    /// LLM provider: anthropic, openai, google-ai (gemini-ai), ollama, mock [default:
    /// $BEAMLENS_DEMO_PROVIDER, else anthropic when ANTHROPIC_API_KEY is set, else mock].
    #[arg(long, value_name = "PROVIDER")]
    pub provider: Option<String>,
    /// Model name.
    #[arg(long)]
    pub model: Option<String>,
    /// Operator iteration cap.
    #[arg(long, default_value_t = 4)]
    pub max_iterations: u32,
    /// Operator deadline in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub timeout: u64,
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

pub use crate::limit_args::{BuildArgs, LimitArgs, parse_size};

/// Options of `host create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Sandbox id: 1 to 64 characters of A-Z a-z 0-9 _ -.
    pub id: String,
    /// App crate to build [default: the workspace's sandbox_app].
    #[arg(long, value_name = "DIR", conflicts_with = "lib")]
    pub app: Option<PathBuf>,
    /// Prebuilt app library (.so).
    #[arg(long, value_name = "FILE")]
    pub lib: Option<PathBuf>,
    /// Limits.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Environment, config and data files.
    #[command(flatten)]
    pub tenant: TenantArgs,
    /// Have the daemon's detector watch this sandbox [default: the daemon's --watch].
    #[arg(long, conflicts_with = "no_watch")]
    pub watch: bool,
    /// Keep the daemon's detector off this sandbox.
    #[arg(long)]
    pub no_watch: bool,
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `host call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Sandbox id.
    pub id: String,
    /// App function.
    pub function: String,
    /// Arguments as one JSON value [default: null].
    pub args: Option<String>,
    /// Call timeout in milliseconds [default: the daemon's, 5000].
    #[arg(long, value_name = "MS")]
    pub timeout: Option<u64>,
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `host rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Sandbox id.
    pub id: String,
    /// Version number from `host info`.
    pub version: u32,
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `host workers`.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// Sandbox id.
    pub id: String,
    /// Start N more workers first.
    #[arg(long, value_name = "N")]
    pub add: Option<u32>,
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Parses argv and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    run(cli.command)
}

fn with_runtime(f: impl FnOnce(&tokio::runtime::Runtime) -> ExitCode) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("host: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = f(&runtime);
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ClientError> {
    serde_json::from_value(value).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Sends one request; prints the raw JSON answer with `--json`, else `human(answer)`.
fn one_request(
    args: &ClientArgs,
    request: Request,
    human: impl FnOnce(serde_json::Value, Duration) -> Result<String, ClientError>,
) -> ExitCode {
    one_request_fds(args, request, Vec::new(), human)
}

/// [`one_request`] with descriptors the client opened (the file or directory it names).
fn one_request_fds(
    args: &ClientArgs,
    request: Request,
    fd: Vec<std::os::fd::OwnedFd>,
    human: impl FnOnce(serde_json::Value, Duration) -> Result<String, ClientError>,
) -> ExitCode {
    use std::os::fd::AsFd;
    if args.cluster.is_set() {
        return fleet_hook::one_request(args, request, human);
    }
    let socket = socket_path::resolve(args.socket.as_deref());
    let started = Instant::now();
    let fds: Vec<_> = fd.iter().map(|f| f.as_fd()).collect();
    let result = Client::connect(&socket)
        .and_then(|mut c| c.request_with_fds(&request, &fds))
        .and_then(|value| {
            if args.json {
                Ok(crate::output::json(&value))
            } else {
                human(value, started.elapsed())
            }
        });
    match result {
        Ok(out) => {
            crate::output::line(&out);
            ExitCode::SUCCESS
        }
        Err(e) => failure(args.json, &e),
    }
}

fn default_app() -> Result<PathBuf, ClientError> {
    let dir = crate::demo::demo_app_dir();
    client::absolute(&dir).map_err(|_| {
        ClientError::Input(format!(
            "no --app or --lib given, and the demo app is not at {}",
            dir.display()
        ))
    })
}

/// Runs one parsed command.
pub fn run(command: Command) -> ExitCode {
    if let Some(refused) = fleet_hook::unrouted(&command) {
        return refused;
    }
    match command {
        Command::Demo(args) => {
            with_runtime(|rt| rt.block_on(crate::demo::run(crate::demo::Mode::Plumbing, 0, args)))
        }
        Command::Anomaly { load, args } => {
            with_runtime(|rt| rt.block_on(crate::demo::run(crate::demo::Mode::Anomaly, load, args)))
        }
        Command::Serve(args) => serve(&args),
        Command::Create(a) => {
            let app = match (&a.app, &a.lib) {
                (_, Some(lib)) => client::absolute(lib).map(AppSource::Library),
                (Some(dir), None) => client::absolute(dir).map(AppSource::Crate),
                (None, None) => default_app().map(AppSource::Crate),
            };
            let app = match app {
                Ok(app) => app,
                Err(e) => return failure(a.client.json, &e),
            };
            // Opened here, with the client's rights: the daemon reads it by descriptor.
            let fd = match client::fds_for_app(&app) {
                Ok(fd) => fd,
                Err(e) => return failure(a.client.json, &e),
            };
            let mut spec = a.limits.spec(app);
            if let Err(e) = a.tenant.apply(&mut spec) {
                return failure(a.client.json, &e);
            }
            let request = Request::Create {
                id: a.id.clone(),
                spec,
                watch: match (a.watch, a.no_watch) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
            };
            one_request_fds(&a.client, request, fd, |v, _| {
                let info: SandboxInfo = decode(v)?;
                for warning in &info.warnings {
                    crate::output::error_line(&format!("host: warning: {}", untrusted(warning)));
                }
                Ok(client::render_created(&info))
            })
        }
        Command::List(a) => one_request(&a, Request::List, |v, _| {
            let list: Vec<SandboxSummary> = decode(v)?;
            Ok(client::render_list(&list))
        }),
        Command::Info(a) => one_request(&a.client, Request::Info { id: a.id.clone() }, |v, _| {
            Ok(client::render_info(&decode(v)?))
        }),
        Command::Call(a) => {
            let args = match a.args.as_deref().map(serde_json::from_str) {
                None => serde_json::Value::Null,
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    let e = ClientError::Input(format!("JSON_ARGS is not valid JSON: {e}"));
                    return failure(a.client.json, &e);
                }
            };
            let request = Request::Call {
                id: a.id.clone(),
                function: a.function.clone(),
                args,
                timeout_ms: a.timeout,
            };
            one_request(&a.client, request, |v, _| Ok(crate::output::json(&v)))
        }
        Command::Reload(a) => reload(a),
        Command::Rollback(a) => {
            let id = a.id.clone();
            let request = Request::Rollback {
                id: a.id.clone(),
                version: a.version,
            };
            one_request(&a.client, request, move |v, _| {
                let r: ReloadReport = decode(v)?;
                Ok(if r.status == "no_change" {
                    format!("unchanged {id}: already v{}", r.to_version)
                } else {
                    format!(
                        "rolled back {id}: v{} -> v{} (swap {})",
                        r.from_version,
                        r.to_version,
                        client::fmt_ms(r.load_us as f64 / 1000.0)
                    )
                })
            })
        }
        Command::Operate(a) => operate(a),
        Command::Ask(a) => ask::ask(a),
        Command::Usage(a) => one_request(&a.client, Request::Usage { id: a.id.clone() }, |v, _| {
            Ok(client::render_usage(&decode(v)?))
        }),
        Command::Workers(a) => {
            let id = a.id.clone();
            let request = Request::Workers {
                id: a.id.clone(),
                add: a.add,
            };
            one_request(&a.client, request, move |v, _| {
                let list: WorkerList = decode(v)?;
                Ok(client::render_workers(&id, &list))
            })
        }
        Command::Restart(a) => {
            one_request(&a.client, Request::Restart { id: a.id.clone() }, |v, _| {
                let info: SandboxInfo = decode(v)?;
                Ok(format!(
                    "restarted {}: pid {}, v{}, {} restart(s)",
                    info.id, info.pid, info.app.version, info.restart_count
                ))
            })
        }
        Command::Events(a) if a.client.cluster.is_set() => fleet_hook::events(&a),
        Command::Events(a) => crate::client_events::run(&a),
        Command::Destroy(a) => logs::run_destroy(&a),
        Command::Logs(a) => logs::run_logs(&a),
        Command::Batch(c) => batch::run(c),
        Command::Deps(a) => deps::run(a),
        Command::Mcp(a) => mcp::mcp(&a),
        Command::Nodes(a) => fleet_hook::nodes(&a),
    }
}

/// `host operate`: exit 0 with a verdict, 1 without one (or on a failure), 2 on a provider
/// configuration error, 3 without a daemon.
fn operate(a: OperateArgs) -> ExitCode {
    let request = Request::Operate(proto::operate::OperateRequest {
        id: a.id.clone(),
        skill: a.skill,
        provider: a.provider.clone(),
        model: a.model.clone(),
        env: proto::operate::forwarded_env(),
        max_iterations: Some(a.max_iterations),
        timeout_ms: Some(a.timeout),
    });
    let outcome = fleet_hook::request(&a.client, &request)
        .and_then(|v| decode::<operator::Outcome>(v.clone()).map(|o| (v, o)));
    let (value, outcome) = match outcome {
        Ok(answer) => answer,
        Err(e) => {
            let code = failure(a.client.json, &e);
            return if e.kind() == watch::operate::CONFIG_ERROR {
                ExitCode::from(2)
            } else {
                code
            };
        }
    };
    if a.client.json {
        crate::output::line(&crate::output::json(&value));
    } else {
        // The verdict's words are the model's, which read the app's.
        crate::output::line(&format!(
            "[operator] state={} summary={}\n[operator] notifications={}",
            outcome.state,
            untrusted(&outcome.summary).quoted(),
            outcome.notifications.len()
        ));
    }
    if let Some(why) = outcome.no_verdict() {
        crate::output::error_line(&format!("host: {}", untrusted(&why)));
        return ExitCode::from(1);
    }
    if let Some(err) = &outcome.error {
        if !a.client.json {
            crate::output::line(&format!("[operator] error={}", untrusted(&err.to_string())));
        }
        crate::output::error_line(&format!(
            "host: operator failed: {}",
            untrusted(&err.to_string())
        ));
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use sandbox::Limits;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert_eq!(parse_size("512K").ok(), Some(512 << 10));
        assert_eq!(parse_size("64M").ok(), Some(64 << 20));
        assert_eq!(parse_size("1GiB").ok(), Some(1 << 30));
        assert_eq!(parse_size("2g").ok(), Some(2 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn limit_flags_map_to_limits() {
        let cli = Cli::try_parse_from([
            "host",
            "create",
            "x",
            "--address-space",
            "1G",
            "--max-open-files",
            "64",
            "--cpu-seconds",
            "5",
        ])
        .unwrap();
        let Command::Create(a) = cli.command else {
            panic!("not create")
        };
        let limits = Limits::from(&a.limits);
        assert_eq!(limits.address_space, Some(1 << 30));
        assert_eq!(limits.max_open_files, Some(64));
        assert_eq!(limits.cpu_seconds, Some(5));
        assert_eq!(limits.max_file_size, None);
    }

    #[test]
    fn build_limits_have_documented_defaults() {
        let Command::Serve(a) = Cli::try_parse_from(["host", "serve"]).unwrap().command else {
            panic!("not serve");
        };
        assert_eq!(a.build.limits(), appbuild::BuildLimits::default());
        let Command::Serve(a) = Cli::try_parse_from([
            "host",
            "serve",
            "--build-memory",
            "1G",
            "--build-timeout",
            "9",
        ])
        .unwrap()
        .command
        else {
            panic!("not serve");
        };
        assert_eq!(a.build.limits().memory, 1 << 30);
        assert_eq!(a.build.limits().wall, Duration::from_secs(9));
    }

    #[test]
    fn watch_takes_an_optional_crate_dir() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Reload(a) => a.watch,
            _ => panic!("not reload"),
        };
        assert_eq!(parse(&["host", "reload", "d", "--watch"]), Some(None));
        assert_eq!(
            parse(&["host", "reload", "d", "--watch", "/c"]),
            Some(Some(PathBuf::from("/c")))
        );
        assert_eq!(parse(&["host", "reload", "d", "--app", "/c"]), None);
        assert!(Cli::try_parse_from(["host", "reload", "d", "--watch", "--lib", "/x.so"]).is_err());
    }
}
