//! `host ask [ID] QUESTION`: one question to the coordinator about a sandbox (or all of them),
//! answered by the daemon from the skills' figures; printed with the figures it used, each
//! marked grounded or not, and any insight. Everything in the answer is the model's or the
//! app's word and goes out escaped.

use operator::{Answer, Figure};

use crate::insight_render::insight_lines;
use watch::coordinator::CoordinatorReport;

use super::*;

/// Options of `host ask`.
#[derive(Debug, Args)]
pub struct AskArgs {
    /// The sandbox asked about, then the question; the question alone asks about all of them.
    #[arg(value_name = "[ID] QUESTION", num_args = 1..=2, required = true)]
    pub words: Vec<String>,
    /// LLM provider (as `host operate`'s) [default: $BEAMLENS_DEMO_PROVIDER, else anthropic
    /// when ANTHROPIC_API_KEY is set, else mock].
    #[arg(long, value_name = "PROVIDER")]
    pub provider: Option<String>,
    /// Model name.
    #[arg(long)]
    pub model: Option<String>,
    /// Coordinator iteration cap.
    #[arg(long, default_value_t = 6)]
    pub max_iterations: u32,
    /// Deadline in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub timeout: u64,
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// One figure: `SANDBOX METRIC=VALUE (snapshot ID) grounded|ungrounded: WHY`.
fn figure_line(f: &Figure) -> String {
    let o = &f.observation;
    let value = crate::output::json(&o.value);
    let mut line = format!(
        "[figure] {}{}={} (snapshot {})",
        f.source
            .as_deref()
            .map(|s| format!("{} ", untrusted(s)))
            .unwrap_or_default(),
        untrusted(&o.metric),
        untrusted(&value),
        untrusted(&o.snapshot_id)
    );
    match &f.ungrounded {
        None => line.push_str(" grounded"),
        Some(why) => line.push_str(&format!(" UNGROUNDED: {}", untrusted(why))),
    }
    line
}

/// A coordinator's report for a terminal (`host ask`; in a fleet, under each node's name).
pub(super) fn render(report: &CoordinatorReport) -> String {
    let mut lines = Vec::new();
    match &report.answer {
        Some(Answer { text, figures }) => {
            lines.push(format!("[answer] {}", untrusted(text).quoted()));
            lines.extend(figures.iter().map(figure_line));
        }
        None => lines.push("[answer] none".into()),
    }
    for i in &report.insights {
        lines.extend(insight_lines("[coordinator]", i));
    }
    lines.push(format!(
        "[coordinator] state={} looks={} stop={}",
        report.state, report.looks, report.stop
    ));
    lines.join("\n")
}

/// `host ask`: exit 0 with an answer, 1 without one, 2 on a provider configuration error, 3
/// without a daemon.
pub(super) fn ask(a: AskArgs) -> ExitCode {
    let (id, question) = match a.words.as_slice() {
        [q] => (None, q.clone()),
        [id, q] => (Some(id.clone()), q.clone()),
        _ => unreachable!("clap takes one or two words"),
    };
    let request = Request::Ask(proto::ask::AskRequest {
        id,
        question,
        provider: a.provider.clone(),
        model: a.model.clone(),
        env: proto::operate::forwarded_env(),
        max_iterations: Some(a.max_iterations),
        timeout_ms: Some(a.timeout),
    });
    if a.client.cluster.is_set()
        && let Request::Ask(ask @ proto::ask::AskRequest { id: None, .. }) = request
    {
        return super::fleet_hook::ask_all(&a, ask);
    }
    let answer = super::fleet_hook::request(&a.client, &request)
        .and_then(|v| decode::<CoordinatorReport>(v.clone()).map(|r| (v, r)));
    let (value, report) = match answer {
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
        crate::output::line(&render(&report));
    }
    if report.answer.is_none() {
        crate::output::error_line(&format!(
            "host: the coordinator gave no answer: {}",
            untrusted(&report.stop_reason)
        ));
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
