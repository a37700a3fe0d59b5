//! The CLI's hook into the fleet (`--cluster`, or `$SANDBOX_HOST_CLUSTER`): client requests
//! go to the fleet crate's router instead of the local socket, `host nodes` lists the
//! fleet, and the commands the fleet does not route yet say so instead of quietly using
//! the local daemon.

use super::*;
use fleet::FleetError;
use fleet::client::NodeView;

/// Options of `host nodes`.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// The fleet.
    #[command(flatten)]
    pub connect: fleet::ConnectArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A fleet error as the CLI shows it.
pub(super) fn client_error(e: FleetError) -> ClientError {
    match e {
        FleetError::Remote(e) => ClientError::Remote(e),
        FleetError::Connect { urls, cause, .. } => ClientError::Connect {
            path: PathBuf::from(urls),
            source: std::io::Error::other(cause),
        },
        FleetError::Protocol { .. } => ClientError::Protocol(e.to_string()),
        other => ClientError::Input(other.to_string()),
    }
}

/// [`one_request`](super::one_request) through the fleet.
pub(super) fn one_request(
    args: &ClientArgs,
    request: Request,
    human: impl FnOnce(serde_json::Value, Duration) -> Result<String, ClientError>,
) -> ExitCode {
    let started = Instant::now();
    let is_list = matches!(request, Request::List);
    let is_create = matches!(request, Request::Create { .. });
    let result = fleet::client::request_blocking(&args.cluster, &args.place, request)
        .map_err(client_error)
        .and_then(|value| {
            if args.json {
                Ok(crate::output::json(&value))
            } else if is_list {
                render_list(value)
            } else {
                let node = value["node"].as_str().map(|n| untrusted(n).to_string());
                let text = human(value, started.elapsed())?;
                Ok(match node {
                    Some(node) if is_create => format!("{text} on node {node}"),
                    _ => text,
                })
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

/// `host list --cluster`: the local rendering with each sandbox's node.
fn render_list(value: serde_json::Value) -> Result<String, ClientError> {
    let items = value.as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    for item in &items {
        let node = item["node"].as_str().unwrap_or("?").to_string();
        let waiting = item["status"] == "waiting";
        let summary: SandboxSummary = match waiting {
            // A stand-in row for an orphan no live node may take (fleet::orphans).
            true => SandboxSummary {
                id: item["id"].as_str().unwrap_or("?").into(),
                status: proto::info::Status::Crashed,
                pid: 0,
                app_version: 0,
                reason: None,
            },
            false => decode(item.clone())?,
        };
        let line = client::render_list(std::slice::from_ref(&summary));
        let row = line.lines().nth(1).unwrap_or("");
        if out.is_empty() {
            out = format!("{:<16} {}", "NODE", line.lines().next().unwrap_or(""));
        }
        let row = match waiting {
            true => format!(
                "{:<24} {:<10} {:>8} {:>7}  {}",
                untrusted(&summary.id).to_string(),
                "waiting",
                "-",
                "-",
                untrusted(item["reason"].as_str().unwrap_or(""))
            ),
            false => row.to_string(),
        };
        out.push_str(&format!("\n{:<16} {row}", untrusted(&node).to_string()));
    }
    Ok(if out.is_empty() {
        "no sandboxes".into()
    } else {
        out
    })
}

/// `host destroy --cluster [--purge]` (with `--purge`, the kept log goes too: see
/// `fleet::routed::destroy_purge`).
pub(super) fn destroy(a: &DestroyArgs) -> ExitCode {
    if a.purge {
        return destroy_purge(a);
    }
    let id = a.id.clone();
    one_request(
        &a.client,
        Request::Destroy { id: a.id.clone() },
        move |_, _| Ok(format!("destroyed {id}")),
    )
}

/// `host events --cluster [ID] [--last N]`: the fleet's newest events (every node's, each
/// with its `node`), oldest first.
pub(super) fn events(a: &crate::client_events::EventsArgs) -> ExitCode {
    if a.follow {
        return follow_events(a);
    }
    let last = a.last.unwrap_or(1000);
    match ::fleet::client::events_blocking(&a.client.cluster, a.id.as_deref(), last) {
        Ok(events) => {
            for event in &events {
                show_event(a.client.json, event);
            }
            ExitCode::SUCCESS
        }
        Err(e) => failure(a.client.json, &client_error(e)),
    }
}

/// One fleet event: its JSON, or `NODE TIME EVENT SANDBOX ...` with everything escaped.
pub(super) fn show_event(json: bool, event: &serde_json::Value) {
    if json {
        crate::output::line(&crate::output::json(event));
    } else {
        let node = untrusted(event["node"].as_str().unwrap_or("-")).to_string();
        let text = crate::client_events::render_event(event);
        crate::output::line(&format!("{node} {text}"));
    }
}

/// `host nodes`: the live nodes of the fleet.
pub(super) fn nodes(a: &NodesArgs) -> ExitCode {
    if !a.connect.is_set() {
        let e =
            ClientError::Input("host nodes needs --cluster URLS (or $SANDBOX_HOST_CLUSTER)".into());
        return failure(a.json, &e);
    }
    match fleet::client::nodes_blocking(&a.connect) {
        Ok(nodes) if a.json => {
            let value = serde_json::to_value(&nodes).unwrap_or_default();
            crate::output::line(&crate::output::json(&value));
            ExitCode::SUCCESS
        }
        Ok(nodes) => {
            crate::output::line(&render_nodes(&nodes));
            ExitCode::SUCCESS
        }
        Err(e) => failure(a.json, &client_error(e)),
    }
}

fn render_nodes(nodes: &[NodeView]) -> String {
    if nodes.is_empty() {
        return "no live nodes".into();
    }
    let mut out = format!(
        "{:<16} {:>9} {:>8} {:>10} {:>10}  LABELS",
        "NODE", "SANDBOXES", "CAPACITY", "FREE MEM", "VERSION"
    );
    for n in nodes {
        let r = &n.record;
        let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "\n{:<16} {:>9} {:>8} {:>9}M {:>10}  {}",
            untrusted(&r.node).to_string(),
            n.owned,
            r.capacity,
            r.free_memory >> 20,
            untrusted(&r.version).to_string(),
            untrusted(&labels.join(","))
        ));
    }
    out
}

/// Refuses, with `--cluster`, the commands the fleet does not route: they need a build on
/// the machine the client runs on, or a stream the fleet does not carry.
pub(super) fn unrouted(command: &Command) -> Option<ExitCode> {
    let (client, what) = match command {
        Command::Reload(a) if a.watch.is_some() => (
            &a.client,
            "reload --watch is not routed in a fleet: it builds on this machine (drop \
             --cluster, or build and use reload --lib)",
        ),
        Command::Deps(deps::DepsArgs {
            command: deps::DepsCommand::Fetch { client, .. },
        }) => (
            client,
            "deps fetch is not routed in a fleet: a fleet takes built libraries (drop --cluster)",
        ),
        _ => return None,
    };
    if !client.cluster.is_set() {
        return None;
    }
    Some(failure(client.json, &ClientError::Input(what.into())))
}

/// `host batch … --cluster`: fanned out by this client (see `fleet::batch`), shown as a
/// local batch is.
pub(super) fn batch(args: &ClientArgs, request: proto::batch::BatchRequest) -> ExitCode {
    struct Shown {
        json: bool,
        report: Option<batch::Report>,
    }
    impl fleet::batch::Progress for Shown {
        fn started(&mut self, total: usize) {
            self.report = Some(batch::Report::new(total as u64, self.json));
        }
        fn item(&mut self, item: &proto::batch::ItemResult) {
            if let Some(report) = &mut self.report {
                report.item(item);
            }
        }
    }
    let mut shown = Shown {
        json: args.json,
        report: None,
    };
    let result = fleet::client::block_on(async {
        let client = fleet::FleetClient::connect(&args.cluster).await?;
        fleet::batch::run(&client, request, &args.place, &mut shown).await
    })
    .and_then(|r| r);
    match (result, shown.report) {
        (Ok(summary), Some(report)) => report.summary(&summary),
        (Ok(_), None) => failure(
            args.json,
            &ClientError::Protocol("the batch ended before it started".into()),
        ),
        (Err(e), report) => {
            if let Some(report) = report {
                report.abandon();
            }
            failure(args.json, &client_error(e))
        }
    }
}

/// `host events --follow --cluster [ID] [--last N]`: the newest N events (none by default),
/// then every node's new ones until interrupted.
fn follow_events(a: &crate::client_events::EventsArgs) -> ExitCode {
    let json = a.client.json;
    let result = fleet::follow::follow_blocking(
        &a.client.cluster,
        a.id.as_deref(),
        a.last.unwrap_or(0),
        // On stderr, with --json too: stdout stays one event a line.
        || crate::output::error_line("host: following the fleet's events (Ctrl-C ends)"),
        |event| show_event(json, &event),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failure(json, &client_error(e)),
    }
}

/// One log line: its JSON, or `time source stream text` with the text escaped.
fn show_log_line(json: bool, value: &serde_json::Value) -> Result<(), ClientError> {
    if json {
        crate::output::line(&crate::output::json(value));
        return Ok(());
    }
    let line = serde_json::from_value::<proto::logline::WireLogLine>(value.clone())
        .map_err(|e| ClientError::Protocol(format!("not a log line: {e}")))?;
    crate::output::line(&logs::render_line(&line));
    Ok(())
}

/// `host logs --follow --cluster ID`: the newest lines, then the new ones as the owner's
/// log grows (asked every half second), until the sandbox is destroyed or Ctrl-C.
fn follow_logs(a: &logs::LogsArgs) -> ExitCode {
    let json = a.client.json;
    let mut bad = None;
    let result = fleet::routed::follow_logs_blocking(
        &a.client.cluster,
        &a.id,
        a.since,
        a.last,
        |line| {
            if let Err(e) = show_log_line(json, line) {
                bad.get_or_insert(e);
            }
        },
        |dropped| {
            crate::output::error_line(&format!(
                "host: {dropped} line(s) left out: more was written between two looks than one \
                 fleet answer carries"
            ))
        },
    );
    match (result, bad) {
        (Err(e), _) => failure(json, &client_error(e)),
        (Ok(()), Some(e)) => failure(json, &e),
        (Ok(()), None) => {
            if !json {
                crate::output::error_line("host: the sandbox was destroyed; its log ends here");
            }
            ExitCode::SUCCESS
        }
    }
}

/// `host logs --cluster ID [--since WHEN] [--last N] [--follow]`: the log's newest lines,
/// from the node that owns the sandbox (or keeps its log).
pub(super) fn logs(a: &logs::LogsArgs) -> ExitCode {
    if a.follow {
        return follow_logs(a);
    }
    let json = a.client.json;
    let answer = fleet::routed::logs_blocking(&a.client.cluster, &a.id, a.since, a.last)
        .map_err(client_error);
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => return failure(json, &e),
    };
    for value in answer["lines"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        if let Err(e) = show_log_line(json, value) {
            return failure(json, &e);
        }
    }
    let dropped = answer["dropped"].as_u64().unwrap_or(0);
    if dropped > 0 && !json {
        crate::output::error_line(&format!(
            "host: {dropped} older line(s) left out: one fleet answer carries at most {} KiB \
             (use --last or --since)",
            fleet::routed::MAX_LOG_ANSWER / 1024
        ));
    }
    ExitCode::SUCCESS
}

/// `host destroy --cluster ID --purge`.
fn destroy_purge(a: &DestroyArgs) -> ExitCode {
    let json = a.client.json;
    match fleet::routed::destroy_purge_blocking(&a.client.cluster, &a.id) {
        Ok((destroyed, purged)) => {
            if json {
                let value =
                    serde_json::json!({"destroyed": destroyed.then_some(&a.id), "purged": purged});
                crate::output::line(&crate::output::json(&value));
            } else {
                let id = untrusted(&a.id).to_string();
                crate::output::line(&match (destroyed, purged) {
                    (true, true) => format!("destroyed {id} and removed its log"),
                    (true, false) => format!("destroyed {id}"),
                    _ => format!("removed the kept log of {id}"),
                });
            }
            ExitCode::SUCCESS
        }
        Err(e) => failure(json, &client_error(e)),
    }
}

/// One request and its answer: routed in the fleet with `--cluster`, else to the local
/// daemon (`operate`, `ask ID`).
pub(super) fn request(
    args: &ClientArgs,
    request: &Request,
) -> Result<serde_json::Value, ClientError> {
    if args.cluster.is_set() {
        return fleet::client::request_blocking(&args.cluster, &args.place, request.clone())
            .map_err(client_error);
    }
    let socket = socket_path::resolve(args.socket.as_deref());
    Client::connect(&socket).and_then(|mut c| c.request(request))
}

/// `host ask --cluster QUESTION` (no id): every live node (or `--node`'s) answers about its
/// own sandboxes, each answer shown under its node's name. Exit 0 when every node answered, 2 when one
/// refused the provider's configuration, else 1.
pub(super) fn ask_all(a: &ask::AskArgs, ask: proto::ask::AskRequest) -> ExitCode {
    let json = a.client.json;
    let answers = match fleet::routed::ask_all_blocking(
        &a.client.cluster,
        a.client.place.node.as_deref(),
        ask,
    ) {
        Ok(answers) => answers,
        Err(e) => return failure(json, &client_error(e)),
    };
    if answers.is_empty() {
        return failure(json, &ClientError::Input("no live nodes".into()));
    }
    let mut code = 0u8;
    let mut all = Vec::new();
    for (node, answer) in answers {
        let shown = untrusted(&node).to_string();
        let report = answer.map_err(client_error).and_then(|v| {
            decode::<watch::coordinator::CoordinatorReport>(v.clone()).map(|r| (v, r))
        });
        match report {
            Ok((value, report)) => {
                if report.answer.is_none() {
                    code = code.max(1);
                }
                if json {
                    all.push(serde_json::json!({"node": node, "ok": value}));
                } else {
                    crate::output::line(&format!("[node] {shown}\n{}", ask::render(&report)));
                }
            }
            Err(e) => {
                code = code.max(if e.kind() == watch::operate::CONFIG_ERROR {
                    2
                } else {
                    1
                });
                if json {
                    all.push(serde_json::json!({"node": node,
                        "error": {"kind": e.kind(), "message": e.to_string()}}));
                } else {
                    crate::output::line(&format!("[node] {shown}"));
                    crate::output::error_line(&format!(
                        "host: node {shown}: {}",
                        client::error_text(&e)
                    ));
                }
            }
        }
    }
    if json {
        crate::output::line(&crate::output::json(&serde_json::Value::Array(all)));
    }
    ExitCode::from(code)
}
