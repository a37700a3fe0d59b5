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

fn client_error(e: FleetError) -> ClientError {
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

/// `host destroy --cluster` (without `--purge`: a kept log stays on its node).
pub(super) fn destroy(a: &DestroyArgs) -> ExitCode {
    if a.purge {
        let e = ClientError::Input("--purge is not routed in a fleet".into());
        return failure(a.client.json, &e);
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
    let last = a.last.unwrap_or(1000);
    match ::fleet::client::events_blocking(&a.client.cluster, a.id.as_deref(), last) {
        Ok(events) => {
            for event in &events {
                if a.client.json {
                    crate::output::line(&crate::output::json(event));
                } else {
                    let node = untrusted(event["node"].as_str().unwrap_or("-")).to_string();
                    let text = crate::client_events::render_event(event);
                    crate::output::line(&format!("{node} {text}"));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => failure(a.client.json, &client_error(e)),
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

/// Refuses, with `--cluster`, the commands the fleet does not route yet.
pub(super) fn unrouted(command: &Command) -> Option<ExitCode> {
    let (client, what) = match command {
        Command::Events(a) if a.follow => (&a.client, "events --follow"),
        Command::Logs(a) => (&a.client, "logs"),
        Command::Operate(a) => (&a.client, "operate"),
        Command::Reload(a) if a.watch.is_some() => (&a.client, "reload --watch"),
        Command::Batch(batch::BatchCommand::Create(a)) => (&a.run.client, "batch"),
        Command::Batch(batch::BatchCommand::Destroy(a)) => (&a.run.client, "batch"),
        Command::Batch(batch::BatchCommand::Call(a)) => (&a.select.run.client, "batch"),
        Command::Batch(batch::BatchCommand::Reload(a)) => (&a.select.run.client, "batch"),
        Command::Deps(deps::DepsArgs {
            command: deps::DepsCommand::Fetch { client, .. },
        }) => (client, "deps fetch"),
        _ => return None,
    };
    if !client.cluster.is_set() {
        return None;
    }
    let e = ClientError::Input(format!(
        "{what} is not routed in a fleet yet (drop --cluster)"
    ));
    Some(failure(client.json, &e))
}
