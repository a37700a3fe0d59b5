//! `host demo` and `host anomaly`: the whole story, end to end, with honest guardrails.
//!
//! Build the demo app, create a sandbox, hot-reload a source change that makes `answer`
//! return 42, call it, (anomaly) add N supervised worker processes, check the skill's snapshot
//! is live, run the AI operator, then check its verdict against live telemetry. The sandbox is
//! destroyed whatever happens, Ctrl-C included.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use operator::{MockProvider, Operator, OperatorConfig, Outcome, Skill};
use serde_json::{Value, json};

use crate::output::untrusted;
use proto::spec::valid_id;
use sandbox::{AppSource, Manager, ManagerConfig, ReloadSource, SandboxError};
use watch::skill::{PROCESS_THRESHOLD, SandboxSkill};

/// The demo app crate in the source tree this binary was built from.
pub fn demo_app_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("sandbox_app")
}

/// Which flow to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plumbing: the sandbox is calm and the operator must say so.
    Plumbing,
    /// Anomaly: N extra workers are started and the operator must notice.
    Anomaly,
}

/// Options shared by `demo` and `anomaly`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Sandbox id.
    #[arg(long, default_value = "demo-1")]
    pub sandbox_id: String,
    /// LLM provider: anthropic, openai, google-ai (gemini-ai), ollama, mock [default:
    /// $BEAMLENS_DEMO_PROVIDER, else anthropic when ANTHROPIC_API_KEY is set, else mock].
    #[arg(long, value_name = "PROVIDER")]
    pub provider: Option<String>,
    /// Model name (default: the provider's; also BEAMLENS_DEMO_MODEL).
    #[arg(long)]
    pub model: Option<String>,
    /// Operator iteration cap (default 4 for demo, 5 for anomaly).
    #[arg(long)]
    pub max_iterations: Option<u32>,
    /// Operator deadline in milliseconds. Each model request may take what is left of it
    /// (a local model on a small machine can take a minute over a cold prompt).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub timeout: u64,
    /// Print one JSON object instead of the step lines.
    #[arg(long)]
    pub json: bool,
    /// Then run the coordinator over the sandbox and print its insights, checked against the
    /// snapshots and the kernel (in `anomaly`, one must tie the spike to its cause).
    #[arg(long)]
    pub coordinator: bool,
    /// Limits and isolation of the demo sandbox.
    #[command(flatten)]
    pub limits: crate::limit_args::LimitArgs,
    /// Limits of the build sandbox the demo app is built in.
    #[command(flatten)]
    pub build: crate::limit_args::BuildArgs,
}

/// A failure of the demo: a step or guardrail (exit 1) or configuration (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Provider or key are wrong; nothing was created.
    #[error("{0}")]
    Config(String),
    /// A flag is wrong (say, an invalid sandbox id); nothing was created.
    #[error("{0}")]
    Flags(String),
    /// A step failed.
    #[error("{0}")]
    Step(String),
    /// The operator's verdict disagrees with live telemetry.
    #[error(transparent)]
    Guardrail(#[from] watch::skill::Contradiction),
    /// The operator never called `set_state`: there is no verdict to check.
    #[error("{0}")]
    NoVerdict(String),
}

impl From<SandboxError> for DemoError {
    fn from(e: SandboxError) -> DemoError {
        DemoError::Step(e.to_string())
    }
}

pub use watch::provider::{ProviderChoice, choose_provider, choose_provider_with};

impl From<watch::provider::ProviderError> for DemoError {
    fn from(e: watch::provider::ProviderError) -> DemoError {
        DemoError::Config(e.0)
    }
}

/// Runs the flow and prints its lines (or one JSON object); returns the exit status.
pub async fn run(mode: Mode, load: i64, args: DemoArgs) -> ExitCode {
    let out = Printer {
        json: args.json,
        error_shown: Default::default(),
    };
    let mut report =
        json!({"mode": match mode { Mode::Plumbing => "demo", Mode::Anomaly => "anomaly" }});
    // The flow's manager, kept here so that Ctrl-C (which drops the flow mid-way) can still
    // destroy the sandbox it made.
    let made = std::sync::OnceLock::new();
    let result = tokio::select! {
        r = flow(mode, load, &args, &out, &mut report, &made) => r,
        _ = tokio::signal::ctrl_c() => Err(DemoError::Step("interrupted".into())),
    };
    // The flow destroys its sandbox on its own paths; on Ctrl-C it was dropped mid-way, so
    // destroy here too (a no-op when it is already gone).
    if let Some(manager) = made.get()
        && manager.destroy(&args.sandbox_id).await.is_ok()
    {
        manager.settled().await;
        out.line("[demo] sandbox destroyed");
    }
    let code = match &result {
        Ok(()) => 0,
        Err(DemoError::Config(_) | DemoError::Flags(_)) => 2,
        Err(_) => 1,
    };
    if let Err(e) = &result {
        out.error(e);
        report["error"] = json!(e.to_string());
    }
    if args.json {
        report["ok"] = json!(result.is_ok());
        crate::output::line(&crate::output::json(&report));
    }
    ExitCode::from(code)
}

struct Printer {
    json: bool,
    /// Set once the error line is out, so it is printed once, before `sandbox destroyed`.
    error_shown: std::cell::Cell<bool>,
}

impl Printer {
    fn line(&self, text: &str) {
        if !self.json {
            crate::output::line(text);
        }
    }

    /// An error: its message may quote the app (an app error, a refused reload, cargo's
    /// diagnostics) or the model, so it is shown escaped, on one line.
    fn error(&self, e: &DemoError) {
        if !self.error_shown.replace(true) {
            match e {
                DemoError::Flags(msg) => {
                    self.line(&format!("[demo] config error: {}", untrusted(msg)))
                }
                DemoError::Config(msg) => {
                    self.line(&format!("[demo] operator config error: {}", untrusted(msg)))
                }
                e => self.line(&format!("[demo] error: {}", untrusted(&e.to_string()))),
            }
        }
    }
}

async fn flow(
    mode: Mode,
    load: i64,
    args: &DemoArgs,
    out: &Printer,
    report: &mut Value,
    made: &std::sync::OnceLock<Manager>,
) -> Result<(), DemoError> {
    if !valid_id(&args.sandbox_id) {
        return Err(DemoError::Flags(format!(
            "invalid --sandbox-id {:?}: use 1 to 64 characters of A-Z, a-z, 0-9, _ and -",
            args.sandbox_id
        )));
    }
    let spec = args.limits.spec(AppSource::Crate(demo_app_dir()));
    proto::spec::check_limits(&spec.limits).map_err(|e| DemoError::Flags(e.to_string()))?;
    let choice = choose_provider(args.provider.as_deref(), args.model.as_deref()).await?;
    if choice.by_default {
        if choice.name == "mock" {
            out.line("[demo] provider=mock (offline: set ANTHROPIC_API_KEY or BEAMLENS_DEMO_PROVIDER to use a model)");
        } else {
            out.line(&format!(
                "[demo] provider={} (ANTHROPIC_API_KEY is set)",
                choice.name
            ));
        }
    }
    let mut config = ManagerConfig::new("/proc/self/exe");
    config.compiler.limits = args.build.limits();
    // One sandbox, then the process exits: prepared runners would only cost time.
    config.pool_size = 0;
    let manager = Manager::new(config)?;
    let manager = made.get_or_init(|| manager).clone();
    let id = args.sandbox_id.as_str();
    let mut timings = json!({});
    let started = Instant::now();
    let spinner = Spinner::start("building sandbox_app");
    let created = manager.create(id, spec).await;
    spinner.stop();
    let info = created.map_err(|e| DemoError::Step(format!("sandbox create error: {e}")))?;
    timings["create_ms"] = json!(started.elapsed().as_millis() as u64);
    report["sandbox"] = json!({"id": id, "pid": info.pid, "isolation": info.isolation,
                               "warnings": info.warnings});
    out.line(&format!(
        "[demo] sandbox created: {id} (pid {}, isolation {})",
        info.pid,
        untrusted(&isolation_label(&info.isolation))
    ));
    for warning in &info.warnings {
        out.line(&format!("[demo] warning: {}", untrusted(warning)));
    }

    let result = steps(
        mode,
        load,
        args,
        out,
        report,
        &manager,
        &choice,
        &mut timings,
    )
    .await;
    if let Err(e) = &result {
        out.error(e);
    }
    report["timings"] = timings;
    match manager.destroy(id).await {
        Ok(()) => {
            // Its cgroup and directory go in the background; the demo exits right after.
            manager.settled().await;
            out.line("[demo] sandbox destroyed")
        }
        Err(e) => out.line(&format!("[demo] sandbox destroy error: {e}")),
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    mode: Mode,
    load: i64,
    args: &DemoArgs,
    out: &Printer,
    report: &mut Value,
    manager: &Manager,
    choice: &ProviderChoice,
    timings: &mut Value,
) -> Result<(), DemoError> {
    let id = args.sandbox_id.as_str();
    // Hot reload: a real source change, compiled, not a prebuilt switch.
    let source = std::fs::read_to_string(demo_app_dir().join("src/lib.rs"))
        .map_err(|e| DemoError::Step(format!("read sandbox_app source: {e}")))?;
    // Whatever the working copy answers (the development loop's `sed` makes it 43), the
    // reloaded version answers 42.
    let changed = with_answer(&source, 42).ok_or_else(|| {
        DemoError::Step(
            "sandbox_app/src/lib.rs has no `pub const ANSWER: i64 = …;` line: restore it with \
             `git checkout sandbox_app/src/lib.rs`"
                .into(),
        )
    })?;
    let spinner = Spinner::start("compiling the change");
    let reloaded = manager
        .reload(
            id,
            ReloadSource::Source {
                lib_rs: changed,
                crate_dir: None,
            },
        )
        .await;
    spinner.stop();
    let r = reloaded.map_err(|e| DemoError::Step(format!("hot reload error: {e}")))?;
    timings["compile_ms"] = json!(r.compile_ms);
    timings["load_us"] = json!(r.load_us);
    out.line(&format!(
        "[demo] hot reload: ok (v{} -> v{}, built in {:.1} s, loaded in {:.1} ms)",
        r.from_version,
        r.to_version,
        r.compile_ms.unwrap_or(0) as f64 / 1000.0,
        r.load_us as f64 / 1000.0
    ));

    let started = Instant::now();
    let answer = manager.run(id, "answer", Value::Null, None).await?;
    timings["call_us"] = json!(started.elapsed().as_micros() as u64);
    report["run_result"] = answer.clone();
    out.line(&format!(
        "[demo] run result: {}",
        crate::output::json(&answer)
    ));
    if answer != json!(42) {
        return Err(DemoError::Step(format!(
            "run result {}, expected 42 after the hot reload",
            crate::output::json(&answer)
        )));
    }

    let mut context = json!({"reason": "sandbox health check"});
    if mode == Mode::Anomaly {
        if load > 0 {
            manager.spawn_workers(id, load as u32).await?;
            out.line(&format!(
                "[demo] process load injected: {load} extra workers"
            ));
            context = anomaly_context();
        } else {
            out.line(&format!(
                "[demo] process load skipped (process_load={load})"
            ));
        }
    }

    let skill: Arc<dyn Skill> = match mode {
        Mode::Plumbing => Arc::new(SandboxSkill::new(manager.clone(), id)),
        Mode::Anomaly => Arc::new(SandboxSkill::anomaly(
            manager.clone(),
            id,
            PROCESS_THRESHOLD,
        )),
    };
    let snapshot = skill.snapshot().await;
    if let Some(err) = snapshot.get("error") {
        return Err(DemoError::Step(format!(
            "skill_snapshot_failed: {}",
            err.as_str().unwrap_or("unknown")
        )));
    }
    if snapshot["sandbox_id"] != json!(id) || !snapshot["processes"].is_u64() {
        return Err(DemoError::Step(format!(
            "skill_snapshot_failed: snapshot is not live: {}",
            crate::output::json(&snapshot)
        )));
    }

    let provider: Arc<dyn llm::Provider> = match &choice.provider {
        Some(p) => Arc::clone(p),
        None => Arc::new(MockProvider::careful(skill.alert_rule())),
    };
    let config = OperatorConfig {
        max_iterations: args
            .max_iterations
            .unwrap_or(if mode == Mode::Anomaly { 5 } else { 4 }),
        deadline: Duration::from_millis(args.timeout),
        ..OperatorConfig::default()
    };
    let started = Instant::now();
    let outcome = Operator::new(skill, provider)
        .with_config(config)
        .run(context)
        .await;
    timings["operator_ms"] = json!(started.elapsed().as_millis() as u64);
    report["operator"] = json!({
        "state": outcome.state,
        "summary": outcome.summary,
        "notifications": outcome.notifications.len(),
        "iterations": outcome.iterations,
        "stop": outcome.stop,
        "stop_reason": outcome.stop_reason,
        "usage": outcome.usage,
        "forced": outcome.forced,
    });
    if !outcome.forced.is_empty() {
        out.line(&format!(
            "[operator] forced calls (the request named the tool): {}",
            outcome.forced.join(", ")
        ));
    }
    // No verdict (no set_state): say why, and check nothing against telemetry.
    let verdict_lines = |out: &Printer| {
        out.line(&format!(
            "[operator] state={} summary={}",
            outcome.state,
            untrusted(&outcome.summary).quoted()
        ));
        out.line(&format!(
            "[operator] notifications={}",
            outcome.notifications.len()
        ));
    };
    if let Some(why) = outcome.no_verdict() {
        verdict_lines(out);
        return Err(DemoError::NoVerdict(why));
    }
    if let Some(err) = &outcome.error {
        out.line(&format!("[operator] error={}", untrusted(&err.to_string())));
        return Err(DemoError::Step(format!("operator failed: {err}")));
    }
    verdict_lines(out);

    let live = manager.usage(id).await?;
    let verdict = guardrail(mode, live.processes, PROCESS_THRESHOLD, &outcome);
    report["guardrail"] = json!({
        "ok": verdict.is_ok(),
        "live_processes": live.processes,
        "threshold": PROCESS_THRESHOLD,
        "error": verdict.as_ref().err().map(ToString::to_string),
    });
    if args.coordinator {
        let timeout = Duration::from_millis(args.timeout);
        let anomaly = mode == Mode::Anomaly;
        let model = choice.provider.as_ref();
        let step = crate::demo_coordinator::run(anomaly, manager, id, model, timeout).await;
        for line in &step.lines {
            out.line(line);
        }
        report["coordinator"] = step.json;
        verdict?;
        return step.result.map_err(DemoError::Step);
    }
    Ok(verdict?)
}

/// What the anomaly flow tells the operator after it started extra workers: what was done,
/// not what to conclude. Whether the count is above the threshold is for the snapshot to
/// show (with `--load 5` it is not), and a small model copies any conclusion it is handed.
pub fn anomaly_context() -> Value {
    json!({
        "reason": "sandbox health check after extra worker processes were started in it",
    })
}

/// `source` with its `pub const ANSWER: i64 = …;` line set to `answer`; `None` without
/// such a line.
pub fn with_answer(source: &str, answer: i64) -> Option<String> {
    const PREFIX: &str = "pub const ANSWER: i64 =";
    let mut found = false;
    let lines: Vec<String> = source
        .lines()
        .map(|line| {
            if !found && line.trim_start().starts_with(PREFIX) {
                found = true;
                format!("{PREFIX} {answer};")
            } else {
                line.to_string()
            }
        })
        .collect();
    found.then(|| lines.join("\n") + "\n")
}

/// Checks the operator's verdict against live telemetry, in the original's order (see
/// [`watch::skill::guardrail`], which the detector shares).
pub fn guardrail(
    mode: Mode,
    processes: u64,
    threshold: u64,
    outcome: &Outcome,
) -> Result<(), watch::skill::Contradiction> {
    let check = match mode {
        Mode::Plumbing => watch::skill::Check::Plumbing,
        Mode::Anomaly => watch::skill::Check::Anomaly,
    };
    watch::skill::guardrail(check, processes, threshold, outcome)
}

fn isolation_label(isolation: &Value) -> String {
    isolation
        .get("level")
        .and_then(Value::as_str)
        .unwrap_or("none")
        .to_string()
}

/// A progress spinner on stderr while cargo compiles; silent when stderr is not a terminal.
struct Spinner {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Spinner {
    fn start(what: &'static str) -> Spinner {
        if !std::io::stderr().is_terminal() {
            return Spinner { task: None };
        }
        let task = tokio::spawn(async move {
            let frames = ['|', '/', '-', '\\'];
            for i in 0usize.. {
                eprint!("\r{} {what}...", frames[i % frames.len()]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Spinner { task: Some(task) }
    }

    fn stop(self) {
        if let Some(task) = self.task {
            task.abort();
            eprint!("\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anomaly_context_describes_and_does_not_conclude() {
        let text = anomaly_context().to_string().to_lowercase();
        for word in [
            "spike",
            "> 10",
            "if processes",
            "send_notification",
            "set_state",
            "warning",
        ] {
            assert!(!text.contains(word), "{word} in {text}");
        }
        assert!(text.contains("worker processes were started"), "{text}");
    }

    #[test]
    fn the_reload_answers_42_whatever_the_working_copy_says() {
        let edited = "//! app\npub const ANSWER: i64 = 43;\nfn f() {}\n";
        assert_eq!(
            with_answer(edited, 42).as_deref(),
            Some("//! app\npub const ANSWER: i64 = 42;\nfn f() {}\n")
        );
        let real = std::fs::read_to_string(demo_app_dir().join("src/lib.rs")).unwrap();
        assert!(
            with_answer(&real, 42)
                .unwrap()
                .contains("pub const ANSWER: i64 = 42;")
        );
        assert_eq!(with_answer("fn f() {}\n", 42), None);
    }
}
