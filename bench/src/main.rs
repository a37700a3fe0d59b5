//! `bench`: measures the sandbox host against a raw `posix_spawn` floor and peer sandboxes
//! (`unshare`, `bwrap`) in one run, prints a table and writes `target/bench/summary.json`.
//!
//! The binary is its own sandbox runner: `main` first hands over to
//! [`sandbox::maybe_run_sandbox_child`], and the manager re-executes `/proc/self/exe`.
//!
//! `summary.json` has exactly these top-level keys: `floor_spawn_us`, `create_ready_us`
//! (`none`, `standard`), `reload_us`, `call_rtt_us`, `usage_us` (`p1`, `p1000`),
//! `destroy_us`, `sandboxes_1000`, `sandboxes_1000_batch` (the same made and destroyed by one
//! batch each), `reload_loop_ms`, `peer_unshare_us`, `peer_bwrap_us`,
//! `daemon_rss_kb`, `watching` (detector cost and event latency, see `watching.rs`).
//! A measured latency is `{"p50": .., "p99": .., "n": ..}` (plus a few named extras); a
//! measurement that was not taken is `{"p50": null, "p99": null, "skipped": "reason"}`.

mod batch;
mod hostile_rss;
mod procspawn;
mod reload_loop;
mod report;
mod series;
mod serve;
mod socket_floor;
mod stats;
mod watching;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use appbuild::{Compiler, Profile};
use proto::spec::Level;
use sandbox::{AppSource, Manager, ManagerConfig, ReloadSource, SandboxSpec};
use serde_json::{Value, json};

use crate::report::{print_goals, print_table};
use crate::series::{
    answer_of, create_series, file_len, many_sandboxes, peer, pool_figures, spawn_series,
    usage_series,
};
use crate::stats::{Pct, round1};

/// Sample counts of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) quick: bool,
    pub(crate) spawn: usize,
    pub(crate) create: usize,
    pub(crate) reload: usize,
    pub(crate) call: usize,
    pub(crate) usage_p1: usize,
    pub(crate) usage_p1000: usize,
    pub(crate) many_workers: u32,
    pub(crate) sandboxes: usize,
    pub(crate) reload_loop: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                quick,
                spawn: 200,
                create: 40,
                reload: 60,
                call: 2000,
                usage_p1: 200,
                usage_p1000: 5,
                many_workers: 999,
                sandboxes: 100,
                reload_loop: 3,
            }
        } else {
            Sizes {
                quick,
                spawn: 1000,
                create: 300,
                reload: 500,
                call: 10000,
                usage_p1: 1000,
                usage_p1000: 30,
                many_workers: 999,
                sandboxes: 1000,
                reload_loop: 10,
            }
        }
    }
}

fn main() -> ExitCode {
    sandbox::maybe_run_sandbox_child();
    let mut quick = false;
    let mut only_watching = false;
    let mut only_sandboxes = false;
    let mut out_given = false;
    let mut out = repo_root()
        .join("target")
        .join("bench")
        .join("summary.json");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--only-watching" => only_watching = true,
            "--only-sandboxes" => only_sandboxes = true,
            "--out" => match args.next() {
                Some(path) => {
                    out = PathBuf::from(path);
                    out_given = true;
                }
                None => return usage("--out needs a path"),
            },
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--out PATH] [--only-watching] [--only-sandboxes]\n  \
                     --only-watching: measure only the `watching` figure and print it as JSON\n  \
                     --only-sandboxes: measure only `sandboxes_1000` and `sandboxes_1000_batch`\n  \
                     (with --out, an --only-* figure is written there too)"
                );
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Measured from a runtime task, as the daemon's connection handlers use the manager (a
    // future polled by `block_on` itself pays one more thread wake-up per request).
    let measured = runtime.block_on(async move {
        tokio::spawn(async move {
            let figure = if only_watching {
                only_watching_figure(quick).await?
            } else if only_sandboxes {
                batch::only_sandboxes(Sizes::new(quick)).await?
            } else {
                return run(Sizes::new(quick), &out).await;
            };
            let text = serde_json::to_string_pretty(&figure)?;
            println!("{text}");
            if out_given {
                std::fs::write(&out, text + "\n")
                    .with_context(|| format!("write {}", out.display()))?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(anyhow!("bench task: {e}")))
    });
    match measured {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `--only-watching`: builds the demo app and measures just the `watching` figure.
async fn only_watching_figure(quick: bool) -> Result<Value> {
    let compiler = Compiler {
        profile: Profile::Release,
        ..Compiler::default()
    };
    let lib = compiler
        .build(&repo_root().join("sandbox_app"))
        .await
        .context("build sandbox_app")?
        .lib;
    let figure = watching::measure(&repo_root(), &lib, quick).await;
    Ok(json!({ "watching": figure }))
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("bench: {msg}\nusage: bench [--quick] [--out PATH]");
    ExitCode::from(2)
}

/// The workspace root this binary was built from.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs every measurement, then destroys every sandbox and removes the state directory,
/// whether the measurements succeeded, failed or were interrupted.
async fn run(sizes: Sizes, out: &Path) -> Result<()> {
    // Not under /tmp: standard isolation gives the sandbox a private /tmp, which would
    // hide a sandbox directory that lives there (it then leaves /tmp shared and says so).
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let state = tempfile::Builder::new()
        .prefix("sandbox-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("state directory under {}", base.display()))?;
    let mut config = ManagerConfig::new("/proc/self/exe");
    config.state_dir = state.path().join("sandboxes");
    config.compiler = Compiler {
        profile: Profile::Release,
        ..config.compiler
    };
    config.call_timeout = Duration::from_secs(120);
    config.start_timeout = Duration::from_secs(60);
    // The same configuration without a pool: the "pool empty" figures.
    let mut cold_config = config.clone();
    cold_config.pool_size = 0;
    cold_config.state_dir = state.path().join("sandboxes-cold");
    let manager = Manager::new(config).context("manager")?;
    let cold = Manager::new(cold_config).context("manager without a pool")?;
    let result = tokio::select! {
        r = measure(&manager, &cold, sizes) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    manager.destroy_all().await;
    drop(state);
    let summary = result?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("write {}", out.display()))?;
    print_table(&summary);
    print_goals(&summary);
    println!("\nwrote {}", out.display());
    Ok(())
}

fn progress(what: &str) {
    eprintln!("[bench] {what}");
}

async fn measure(manager: &Manager, cold: &Manager, sizes: Sizes) -> Result<Value> {
    let mut s = serde_json::Map::new();

    progress("floor: posix_spawn /bin/true");
    let floor = spawn_series(vec!["/bin/true".into()], sizes.spawn).await?;
    s.insert("floor_spawn_us".into(), floor.to_json());
    progress("peers");
    s.insert(
        "peer_unshare_us".into(),
        peer("unshare", &["-Urpf", "--mount-proc", "true"], sizes.spawn).await,
    );
    s.insert(
        "peer_bwrap_us".into(),
        peer(
            "bwrap",
            &["--ro-bind", "/", "/", "--unshare-all", "true"],
            sizes.spawn,
        )
        .await,
    );

    progress("building sandbox_app (release) and its ANSWER = 42 copy");
    let app_dir = repo_root().join("sandbox_app");
    let compiler = &manager.config().compiler;
    let mut lib41 = compiler
        .build(&app_dir)
        .await
        .context("build sandbox_app")?
        .lib;
    let source = std::fs::read_to_string(app_dir.join("src/lib.rs"))?;
    let mut lib_note = None;
    if answer_of(manager, &lib41).await? != json!(41) {
        // The shared apps target dir can hold another crate's `libsandbox_app.so` (a copy of
        // the crate built there under the same name), which cargo then reports as fresh.
        lib41 = compiler
            .build_source(&app_dir, &source)
            .await
            .context("rebuild sandbox_app in a fresh copy")?
            .lib;
        lib_note = Some(
            "Compiler::build returned a stale libsandbox_app.so that did not answer 41; \
             rebuilt with build_source",
        );
    }
    let source42 = source.replace("pub const ANSWER: i64 = 41;", "pub const ANSWER: i64 = 42;");
    if source42 == source {
        bail!("sandbox_app/src/lib.rs has no `pub const ANSWER: i64 = 41;`");
    }
    let lib42 = compiler
        .build_source(&app_dir, &source42)
        .await
        .context("build the ANSWER = 42 copy")?
        .lib;
    // The default isolation level (standard) for everything but `create_ready_us.none`.
    let spec = || SandboxSpec::new(AppSource::Library(lib41.clone()));

    progress("create -> ready -> first call; destroy");
    for i in 0..2 {
        // Warm-up: first spawns pay for page cache and one-time spawner setup.
        let id = format!("bench-warm-{i}");
        manager.create(&id, spec()).await?;
        manager.destroy(&id).await?;
    }
    let none_series = create_series(manager, &lib41, Level::None, "n", sizes.create).await?;
    // With the pool warm (refilled, off the clock, before each create), then without one.
    let standard_series =
        create_series(manager, &lib41, Level::Standard, "st", sizes.create).await?;
    let cold_series = create_series(cold, &lib41, Level::Standard, "sc", sizes.create).await?;
    let mut none = Pct::of_us(&none_series.ready).to_json();
    none["create_only_p50"] = json!(round1(Pct::of_us(&none_series.create_only).p50));
    none["phases_p50"] = none_series.phases_p50();
    none["lib_bytes"] = json!(file_len(&lib41));
    if let Some(note) = lib_note {
        none["note"] = json!(note);
    }
    let mut standard = Pct::of_us(&standard_series.ready).to_json();
    standard["create_only_p50"] = json!(round1(Pct::of_us(&standard_series.create_only).p50));
    standard["phases_p50"] = standard_series.phases_p50();
    standard["applied"] = standard_series.isolation.clone();
    standard["pooled"] = json!(standard_series.phases.iter().filter(|p| p.pooled).count());
    let mut standard_cold = Pct::of_us(&cold_series.ready).to_json();
    standard_cold["create_only_p50"] = json!(round1(Pct::of_us(&cold_series.create_only).p50));
    standard_cold["phases_p50"] = cold_series.phases_p50();
    s.insert(
        "create_ready_us".into(),
        json!({ "none": none, "standard": standard, "standard_pool_empty": standard_cold }),
    );
    s.insert("pool".into(), pool_figures(manager, &standard_series));
    let mut all_destroys = standard_series.destroy.clone();
    all_destroys.extend(cold_series.destroy.iter().copied());
    let mut destroy = Pct::of_us(&all_destroys).to_json();
    destroy["isolation"] = json!("standard");
    destroy["none_p50"] = json!(round1(Pct::of_us(&none_series.destroy).p50));
    s.insert("destroy_us".into(), destroy);

    progress("call round trip, reload, usage of a 2-process sandbox");
    let id = "bench-main";
    manager.create(id, spec()).await?;
    for _ in 0..100 {
        manager.run(id, "answer", Value::Null, None).await?;
    }
    let mut calls = Vec::with_capacity(sizes.call);
    for _ in 0..sizes.call {
        let t = Instant::now();
        manager.run(id, "answer", Value::Null, None).await?;
        calls.push(t.elapsed());
    }
    let mut call = Pct::of_us(&calls).to_json();
    let n = sizes.call;
    let floor = tokio::task::spawn_blocking(move || socket_floor::round_trips(n)).await??;
    let floor = Pct::of_us(&floor);
    call["socketpair_floor_p50"] = json!(round1(floor.p50));
    call["socketpair_floor_p99"] = json!(round1(floor.p99));
    s.insert("call_rtt_us".into(), call);

    let mut reloads = Vec::with_capacity(sizes.reload);
    let mut load = Vec::with_capacity(sizes.reload);
    for i in 0..sizes.reload {
        let lib = if i % 2 == 0 { &lib42 } else { &lib41 };
        let t = Instant::now();
        let report = manager
            .reload(id, ReloadSource::Library(lib.clone()))
            .await?;
        reloads.push(t.elapsed());
        load.push(Duration::from_micros(report.load_us));
        if report.status != "reloaded" {
            bail!("reload {i} reported {:?}", report.status);
        }
    }
    let want = if sizes.reload % 2 == 1 { 42 } else { 41 };
    let answer = manager.run(id, "answer", Value::Null, None).await?;
    if answer != json!(want) {
        bail!(
            "after {} reloads answer() gave {answer}, want {want}",
            sizes.reload
        );
    }
    let mut reload = Pct::of_us(&reloads).to_json();
    reload["runner_load_p50"] = json!(round1(Pct::of_us(&load).p50));
    s.insert("reload_us".into(), reload);

    let p1 = usage_series(manager, id, sizes.usage_p1).await?;
    manager.destroy(id).await?;

    progress(&format!(
        "usage of a sandbox with {} extra workers",
        sizes.many_workers
    ));
    let id = "bench-many";
    manager.create(id, spec()).await?;
    let t = Instant::now();
    manager.spawn_workers(id, sizes.many_workers).await?;
    let spawn_s = t.elapsed().as_secs_f64();
    let mut p1000 = usage_series(manager, id, sizes.usage_p1000).await?;
    p1000["spawn_workers_s"] = json!(round1(spawn_s));
    manager.destroy(id).await?;
    s.insert("usage_us".into(), json!({ "p1": p1, "p1000": p1000 }));

    progress(&format!("{} idle sandboxes at once", sizes.sandboxes));
    s.insert(
        "sandboxes_1000".into(),
        many_sandboxes(manager, &lib41, sizes).await?,
    );

    progress(&format!("{} idle sandboxes in one batch", sizes.sandboxes));
    s.insert(
        "sandboxes_1000_batch".into(),
        batch::measure(manager, &lib41, sizes).await?,
    );

    progress("reload loop");
    s.insert(
        "reload_loop_ms".into(),
        reload_loop::measure(&repo_root(), sizes.reload_loop).await,
    );

    progress("watching 100 idle sandboxes; event latency to a follower");
    s.insert(
        "watching".into(),
        watching::measure(&repo_root(), &lib41, sizes.quick).await,
    );

    progress("daemon memory under hostile clients");
    s.insert(
        "daemon_rss_kb".into(),
        hostile_rss::measure(&repo_root()).await,
    );
    Ok(Value::Object(s))
}
