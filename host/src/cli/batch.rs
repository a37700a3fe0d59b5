//! `host batch create|destroy|call|reload`: one request for many sandboxes, a progress bar
//! while it runs (on a terminal only, on stderr), then a summary and a table of the items
//! that failed; with `--json`, one JSON object per item as it completes, then the summary.
//!
//! Exit status: 0 when every item succeeded, [`SOME_FAILED`] when any item failed, 1 when
//! the batch was refused as a whole (nothing started), 2 on a usage error, 3 without a
//! daemon. Ctrl-C ends the client; the daemon then starts no further item and finishes the
//! ones in flight, so only whole sandboxes remain.

use std::io::IsTerminal;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Deserialize;

use crate::cli::LimitArgs;
use crate::client::{self, Client, ClientArgs, ClientError, failure};
use crate::output::untrusted;
use daemon::socket_path;
use proto::batch::{
    BatchAction, BatchLine, BatchRequest, CreateItem, ItemResult, Selector, Summary,
};
use proto::control::{self as wire, ReloadWire, Request, WireError};
use sandbox::{AppSource, Level, Limits, SandboxSpec};

/// Exit status of a batch in which some item failed.
pub const SOME_FAILED: u8 = 4;

/// `host batch`: what to do to many sandboxes.
#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Create many sandboxes: `--count N --prefix P` of one app, or one per entry of `--file`.
    Create(CreateArgs),
    /// Destroy the selected sandboxes.
    Destroy(SelectArgs),
    /// Call one function in every selected sandbox.
    Call(CallArgs),
    /// Reload one new version into every selected sandbox (one build, many swaps).
    Reload(ReloadArgs),
}

/// How a batch runs (every batch command takes these).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Items in flight at once [default: the daemon's CPU count; with --cluster, this
    /// machine's times the live nodes, at most 64].
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<usize>,
    /// Time for the whole batch in milliseconds; items past it are reported `timeout`.
    #[arg(long, value_name = "MS")]
    pub timeout: Option<u64>,
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Which sandboxes: ids, or `--all`, or `--prefix`.
#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    /// Sandbox ids.
    #[arg(conflicts_with_all = ["all", "prefix"])]
    pub ids: Vec<String>,
    /// Every sandbox of the daemon (with --cluster: of the fleet, or of --node, or created
    /// with --label).
    #[arg(long, conflicts_with = "prefix")]
    pub all: bool,
    /// Every sandbox whose id starts with PREFIX.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// How the batch runs.
    #[command(flatten)]
    pub run: RunArgs,
}

impl SelectArgs {
    fn selector(&self) -> Result<Selector, ClientError> {
        match (self.ids.is_empty(), self.all, &self.prefix) {
            (false, _, _) => Ok(Selector {
                ids: Some(self.ids.clone()),
                ..Selector::default()
            }),
            (true, true, _) => Ok(Selector {
                all: true,
                ..Selector::default()
            }),
            (true, false, Some(p)) => Ok(Selector {
                prefix: Some(p.clone()),
                ..Selector::default()
            }),
            (true, false, None) => Err(ClientError::Input(
                "say which sandboxes: IDS..., --all or --prefix PREFIX".into(),
            )),
        }
    }
}

/// Options of `host batch create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// How many sandboxes, named PREFIX-0 … PREFIX-(N-1).
    #[arg(long, value_name = "N", requires = "prefix", conflicts_with = "file")]
    pub count: Option<usize>,
    /// The ids' prefix (with --count).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// A JSON array of specs: `{"id", "app": DIR | "lib": FILE, "limits", "isolation",
    /// "network"}` (relative paths are relative to the file).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// App crate to build once for all [default: the workspace's sandbox_app].
    #[arg(long, value_name = "DIR", conflicts_with = "lib")]
    pub app: Option<PathBuf>,
    /// Prebuilt app library (.so) for all.
    #[arg(long, value_name = "FILE")]
    pub lib: Option<PathBuf>,
    /// Limits of every sandbox (with --count).
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Have the daemon's detector watch them [default: the daemon's --watch].
    #[arg(long, conflicts_with = "no_watch")]
    pub watch: bool,
    /// Keep the daemon's detector off them.
    #[arg(long)]
    pub no_watch: bool,
    /// How the batch runs.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Options of `host batch call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// App function.
    #[arg(long, value_name = "NAME")]
    pub function: String,
    /// Arguments as one JSON value [default: null].
    #[arg(long, value_name = "JSON")]
    pub args: Option<String>,
    /// Each call's timeout in milliseconds [default: the daemon's].
    #[arg(long, value_name = "MS")]
    pub call_timeout: Option<u64>,
    /// Which sandboxes, and how the batch runs.
    #[command(flatten)]
    pub select: SelectArgs,
}

/// Options of `host batch reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// App crate to build once and load into all.
    #[arg(long, value_name = "DIR", group = "from")]
    pub app: Option<PathBuf>,
    /// Prebuilt app library (.so) to load into all.
    #[arg(long, value_name = "FILE", group = "from")]
    pub lib: Option<PathBuf>,
    /// New src/lib.rs, built once per crate the sandboxes were made from.
    #[arg(long, value_name = "FILE", group = "from")]
    pub source: Option<PathBuf>,
    /// Reload as canaries, one sandbox at a time, each watched for --watch-for; the first
    /// one the daemon rolls back stops the batch (the rest keep their version).
    #[arg(long)]
    pub canary: bool,
    /// How long each canary is watched (`30s`, `2m`; at most 10m).
    #[arg(long, value_name = "DURATION", requires = "canary", default_value = "30s",
          value_parser = ::watch::parse_duration)]
    pub watch_for: std::time::Duration,
    /// Which sandboxes, and how the batch runs.
    #[command(flatten)]
    pub select: SelectArgs,
}

/// One entry of `--file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    id: String,
    #[serde(default)]
    app: Option<PathBuf>,
    #[serde(default)]
    lib: Option<PathBuf>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    isolation: Level,
    #[serde(default)]
    network: bool,
}

/// Runs `host batch …` (with `--cluster`, over the fleet: see `fleet::batch`).
pub fn run(command: BatchCommand) -> ExitCode {
    let local = match &command {
        BatchCommand::Create(a) => !a.run.client.cluster.is_set(),
        BatchCommand::Destroy(a) => !a.run.client.cluster.is_set(),
        BatchCommand::Call(a) => !a.select.run.client.cluster.is_set(),
        BatchCommand::Reload(a) => !a.select.run.client.cluster.is_set(),
    };
    let (run, built) = match command {
        BatchCommand::Create(a) => (a.run.clone(), create(&a, local)),
        BatchCommand::Destroy(a) => (
            a.run.clone(),
            a.selector()
                .map(|select| (BatchAction::Destroy { select }, Vec::new())),
        ),
        BatchCommand::Call(a) => (a.select.run.clone(), call(&a)),
        BatchCommand::Reload(a) => (a.select.run.clone(), reload(&a, local)),
    };
    let (action, fds) = match built {
        Ok(built) => built,
        Err(e) => return failure(run.client.json, &e),
    };
    let batch = BatchRequest {
        action,
        max_concurrency: run.max_concurrency,
        timeout_ms: run.timeout,
    };
    if !local {
        return super::fleet_hook::batch(&run.client, batch);
    }
    let request = Request::Batch(batch);
    match send(&run.client, &request, &fds) {
        Ok(code) => code,
        Err(e) => failure(run.client.json, &e),
    }
}

fn resolve(base: &Path, path: &Path) -> Result<PathBuf, ClientError> {
    client::absolute(&base.join(path))
}

/// The create batch `a` asks for, and (when `local`) the descriptors the daemon takes.
fn create(a: &CreateArgs, local: bool) -> Result<(BatchAction, Vec<OwnedFd>), ClientError> {
    let items: Vec<CreateItem> = match (&a.count, &a.file) {
        (Some(count), None) => {
            let app = match (&a.app, &a.lib) {
                (_, Some(lib)) => AppSource::Library(client::absolute(lib)?),
                (Some(dir), None) => AppSource::Crate(client::absolute(dir)?),
                (None, None) => AppSource::Crate(client::absolute(&crate::demo::demo_app_dir())?),
            };
            let prefix = a.prefix.as_deref().unwrap_or_default();
            let spec = a.limits.spec(app);
            (0..*count)
                .map(|n| CreateItem {
                    id: format!("{prefix}-{n}"),
                    spec: spec.clone(),
                })
                .collect()
        }
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| ClientError::Input(format!("{}: {e}", file.display())))?;
            let specs: Vec<FileSpec> = serde_json::from_str(&text).map_err(|e| {
                ClientError::Input(format!(
                    "{}: not a JSON array of specs: {e}",
                    file.display()
                ))
            })?;
            let base = file.parent().unwrap_or(Path::new("."));
            specs
                .into_iter()
                .map(|s| {
                    let app = match (s.app, s.lib) {
                        (None, Some(lib)) => AppSource::Library(resolve(base, &lib)?),
                        (Some(dir), None) => AppSource::Crate(resolve(base, &dir)?),
                        _ => {
                            return Err(ClientError::Input(format!(
                                "{}: entry {:?} needs exactly one of \"app\" and \"lib\"",
                                file.display(),
                                s.id
                            )));
                        }
                    };
                    Ok(CreateItem {
                        id: s.id,
                        spec: SandboxSpec {
                            limits: s.limits,
                            isolation: s.isolation,
                            network: s.network,
                            ..SandboxSpec::new(app)
                        },
                    })
                })
                .collect::<Result<_, _>>()?
        }
        _ => {
            return Err(ClientError::Input(
                "say what to create: --count N --prefix P, or --file SPECS.json".into(),
            ));
        }
    };
    let action = BatchAction::Create {
        items,
        watch: match (a.watch, a.no_watch) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
    };
    if !local {
        return Ok((action, Vec::new()));
    }
    // One descriptor per distinct path, in the order the daemon expects them.
    let paths = proto::batch::paths(&action);
    if paths.len() > wire::MAX_FDS {
        return Err(ClientError::Input(format!(
            "a batch names at most {} distinct apps, not {}",
            wire::MAX_FDS,
            paths.len()
        )));
    }
    let BatchAction::Create { items, .. } = &action else {
        unreachable!("built above")
    };
    let fds = paths
        .iter()
        .map(|p| {
            let crate_dir = items
                .iter()
                .any(|i| matches!(&i.spec.app, AppSource::Crate(d) if d == p));
            client::open_for_daemon(p, crate_dir)
        })
        .collect::<Result<_, _>>()?;
    Ok((action, fds))
}

fn call(a: &CallArgs) -> Result<(BatchAction, Vec<OwnedFd>), ClientError> {
    let args = match a.args.as_deref().map(serde_json::from_str) {
        None => serde_json::Value::Null,
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(ClientError::Input(format!("--args is not JSON: {e}"))),
    };
    let action = BatchAction::Call {
        select: a.select.selector()?,
        function: a.function.clone(),
        args,
        call_timeout_ms: a.call_timeout,
    };
    Ok((action, Vec::new()))
}

/// The reload batch `a` asks for, and (when `local`) the descriptor the daemon takes.
fn reload(a: &ReloadArgs, local: bool) -> Result<(BatchAction, Vec<OwnedFd>), ClientError> {
    let source = match (&a.app, &a.lib, &a.source) {
        (Some(dir), _, _) => ReloadWire::Crate(client::absolute(dir)?),
        (_, Some(lib), _) => ReloadWire::Library(client::absolute(lib)?),
        (_, _, Some(file)) => ReloadWire::Source {
            lib_rs: std::fs::read_to_string(file)
                .map_err(|e| ClientError::Input(format!("{}: {e}", file.display())))?,
            crate_dir: None,
        },
        (None, None, None) => {
            return Err(ClientError::Input(
                "say what to load: --app DIR, --lib FILE or --source FILE".into(),
            ));
        }
    };
    let fds = if local {
        client::fd_for_reload(&source)?.into_iter().collect()
    } else {
        Vec::new()
    };
    let action = BatchAction::Reload {
        select: a.select.selector()?,
        source: source.into(),
        canary: a.canary.then_some(proto::control::CanaryWire {
            watch_for_ms: a.watch_for.as_millis() as u64,
        }),
    };
    Ok((action, fds))
}

/// Sends the batch and shows its answer; the exit status says whether every item succeeded.
fn send(args: &ClientArgs, request: &Request, fds: &[OwnedFd]) -> Result<ExitCode, ClientError> {
    let socket = socket_path::resolve(args.socket.as_deref());
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let (header, mut conn) = Client::connect(&socket)?.open_stream(request, &borrowed)?;
    let total = header["items"].as_u64().unwrap_or(0);
    let mut buf = Vec::new();
    let mut report = Report::new(total, args.json);
    loop {
        buf.clear();
        if !client::read_line(&mut conn, &mut buf).map_err(ClientError::Io)? {
            report.abandon();
            return Err(ClientError::Protocol(
                "the daemon closed before the batch's summary".into(),
            ));
        }
        let line: BatchLine = serde_json::from_slice(buf.trim_ascii())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        match line {
            BatchLine::Item(item) => report.item(&item),
            BatchLine::Summary(s) => return Ok(report.summary(&s)),
        }
    }
}

/// How a batch is shown as it runs (the local batch and the fleet's share it): a progress
/// bar (on a terminal), with `--json` one object per item as it completes, then the summary
/// and the failed items.
pub(super) struct Report {
    json: bool,
    bar: indicatif::ProgressBar,
    failed: Vec<ItemResult>,
}

impl Report {
    /// A batch of `total` items starts.
    pub(super) fn new(total: u64, json: bool) -> Report {
        Report {
            json,
            bar: progress_bar(total, json),
            failed: Vec::new(),
        }
    }

    /// One item completed.
    pub(super) fn item(&mut self, item: &ItemResult) {
        if self.json {
            let value = serde_json::to_value(item).unwrap_or_default();
            crate::output::line(&crate::output::json(&value));
        }
        self.bar.inc(1);
        if item.error.is_some() {
            self.failed.push(item.clone());
        }
    }

    /// The batch ended before its summary.
    pub(super) fn abandon(&self) {
        self.bar.abandon();
    }

    /// The summary; the exit status says whether every item succeeded.
    pub(super) fn summary(mut self, s: &Summary) -> ExitCode {
        self.bar.finish_and_clear();
        if self.json {
            let line = BatchLine::Summary(s.clone());
            let value = serde_json::to_value(&line).unwrap_or_default();
            crate::output::line(&crate::output::json(&value));
        } else {
            // The wall time is in the --json summary (`ms`) and on the bar.
            let timed_out = match s.timed_out {
                0 => String::new(),
                n => format!(" ({n} timed out)"),
            };
            crate::output::line(&format!(
                "batch {}: {} ok, {} failed{timed_out} of {}",
                s.action, s.ok, s.failed, s.total,
            ));
            if !self.failed.is_empty() {
                self.failed.sort_by_key(|i| i.index);
                crate::output::line(&failure_table(&self.failed));
            }
        }
        if s.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(SOME_FAILED)
        }
    }
}

/// A progress bar on stderr when it is a terminal (never with `--json`), else a hidden one.
fn progress_bar(total: u64, json: bool) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise}")
    {
        bar.set_style(style);
    }
    bar
}

/// The failed items: `ID  KIND  MESSAGE`, one line each, every field escaped (ids and
/// messages may quote the app).
fn failure_table(failed: &[ItemResult]) -> String {
    let width = failed
        .iter()
        .map(|i| untrusted(&i.id).to_string().chars().count())
        .max()
        .unwrap_or(2)
        .max(2);
    let mut out = format!("{:width$}  {:16}  MESSAGE", "ID", "KIND");
    for item in failed {
        let Some(error) = &item.error else { continue };
        let e = ClientError::Remote(WireError::new(&error.kind, error.message.clone()));
        let text = client::error_text(&e).replace('\n', "\n    ");
        out.push_str(&format!(
            "\n{:width$}  {:16}  {}",
            untrusted(&item.id).to_string(),
            untrusted(&error.kind).to_string(),
            text
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::batch::ItemError;

    #[test]
    fn the_failure_table_escapes_what_it_quotes() {
        let table = failure_table(&[ItemResult {
            index: 0,
            id: "w-1".into(),
            ok: None,
            error: Some(ItemError {
                kind: "app_error".into(),
                message: "app error: \u{1b}]0;x\u{7}".into(),
            }),
        }]);
        assert!(!table.contains('\u{1b}'), "{table}");
        assert!(table.contains("w-1"), "{table}");
        assert!(table.contains("(quotes the app)"), "{table}");
    }
}
