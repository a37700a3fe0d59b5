//! `bench`: measures the sandbox host against a raw `posix_spawn` floor and peer sandboxes
//! (`unshare`, `bwrap`) in one run, prints a table and writes `target/bench/summary.json`.
//!
//! The binary is its own sandbox runner: `main` first hands over to
//! [`sandbox::maybe_run_sandbox_child`], and the manager re-executes `/proc/self/exe`.
//!
//! `summary.json` has exactly these top-level keys: `floor_spawn_us`, `create_ready_us`
//! (`none`, `standard`), `reload_us`, `call_rtt_us`, `usage_us` (`p1`, `p1000`),
//! `destroy_us`, `sandboxes_1000`, `reload_loop_ms`, `peer_unshare_us`, `peer_bwrap_us`,
//! `daemon_rss_kb`, `watching` (detector cost and event latency, see `watching.rs`).
//! A measured latency is `{"p50": .., "p99": .., "n": ..}` (plus a few named extras); a
//! measurement that was not taken is `{"p50": null, "p99": null, "skipped": "reason"}`.

mod hostile_rss;
mod procspawn;
mod reload_loop;
mod socket_floor;
mod stats;
mod watching;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use appbuild::{Compiler, Profile};
use proto::spec::Level;
use sandbox::{AppSource, Manager, ManagerConfig, ReloadSource, SandboxSpec, StartupTimings};
use serde_json::{Value, json};

use crate::procspawn::{Cmd, which};
use crate::stats::{Pct, p50_of, round1, skipped};

/// Sample counts of one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    quick: bool,
    spawn: usize,
    create: usize,
    reload: usize,
    call: usize,
    usage_p1: usize,
    usage_p1000: usize,
    many_workers: u32,
    sandboxes: usize,
    reload_loop: usize,
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
    let mut out = repo_root()
        .join("target")
        .join("bench")
        .join("summary.json");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--only-watching" => only_watching = true,
            "--out" => match args.next() {
                Some(path) => out = PathBuf::from(path),
                None => return usage("--out needs a path"),
            },
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--out PATH] [--only-watching]\n  \
                     --only-watching: measure only the `watching` figure and print it as JSON"
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
            if only_watching {
                return only_watching_figure(quick).await;
            }
            run(Sizes::new(quick), &out).await
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
async fn only_watching_figure(quick: bool) -> Result<()> {
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
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "watching": figure }))?
    );
    Ok(())
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("bench: {msg}\nusage: bench [--quick] [--out PATH]");
    ExitCode::from(2)
}

/// The workspace root this binary was built from.
fn repo_root() -> PathBuf {
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

/// Timings of one series of create → ready → destroy.
#[derive(Debug, Default)]
struct CreateSeries {
    ready: Vec<Duration>,
    create_only: Vec<Duration>,
    destroy: Vec<Duration>,
    /// What the last sandbox's `info` said was applied.
    isolation: Value,
    /// Where each start spent its time (`info.startup`).
    phases: Vec<StartupTimings>,
    /// The pool's time to prepare its last runner, before each create.
    prepare: Vec<Duration>,
}

impl CreateSeries {
    /// The median of every startup phase, in µs.
    fn phases_p50(&self) -> Value {
        let p50 = |f: fn(&StartupTimings) -> u64| {
            let mut v: Vec<u64> = self.phases.iter().map(f).collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        json!({
            "install_us": p50(|t| t.install_us),
            "cgroup_us": p50(|t| t.cgroup_us),
            "prepare_us": p50(|t| t.prepare_us),
            "spawn_us": p50(|t| t.spawn_us),
            "ready_us": p50(|t| t.ready_us),
            "restrict_us": p50(|t| t.restrict_us),
            "load_us": p50(|t| t.load_us),
            "check_us": p50(|t| t.check_us),
            "assign_us": p50(|t| t.assign_us.unwrap_or(0)),
        })
    }
}

/// `n` sandboxes at `level`, one after the other: time `create` + the first `answer` call,
/// then `destroy`.
async fn create_series(
    manager: &Manager,
    lib: &Path,
    level: Level,
    tag: &str,
    n: usize,
) -> Result<CreateSeries> {
    let spec = || SandboxSpec::new(AppSource::Library(lib.to_path_buf())).with_isolation(level);
    let mut out = CreateSeries::default();
    for i in 0..n {
        // A pool refills in the background after each create; here it is given the time
        // (off the clock) that a daemon between creates has.
        manager.warm_pool().await;
        out.prepare
            .push(Duration::from_micros(manager.pool_stats().last_prepare_us));
        let id = format!("bench-{tag}-{i}");
        let t = Instant::now();
        let info = manager.create(&id, spec()).await?;
        let created = t.elapsed();
        let answer = manager.run(&id, "answer", Value::Null, None).await;
        out.ready.push(t.elapsed());
        out.create_only.push(created);
        out.isolation = info.isolation;
        out.phases.push(info.startup);
        let t = Instant::now();
        manager.destroy(&id).await?;
        out.destroy.push(t.elapsed());
        let answer = answer?;
        if !matches!(answer.as_i64(), Some(41 | 42)) {
            bail!("answer() gave {answer}");
        }
    }
    Ok(out)
}

/// The pool's own figures: its size, the time to prepare one runner, and what one costs in
/// memory (PSS of its init and app process) while it waits.
fn pool_figures(manager: &Manager, series: &CreateSeries) -> Value {
    let stats = manager.pool_stats();
    let pids = manager.pool_pids();
    let pss: Vec<u64> = pids.iter().filter_map(|&p| pss_kb(p)).collect();
    let runners = (pids.len() / 2).max(1) as u64;
    json!({
        "target": stats.target,
        "served": stats.served,
        "missed": stats.missed,
        "prepare_us": Pct::of_us(&series.prepare).to_json(),
        "pss_kb_per_prepared_runner": pss.iter().sum::<u64>() / runners,
        "disabled": stats.disabled,
    })
}

/// What `answer()` of a fresh sandbox on `lib` returns (the sandbox is destroyed again).
async fn answer_of(manager: &Manager, lib: &Path) -> Result<Value> {
    let id = "bench-probe";
    manager
        .create(id, SandboxSpec::new(AppSource::Library(lib.to_path_buf())))
        .await?;
    let answer = manager.run(id, "answer", Value::Null, None).await;
    manager.destroy(id).await?;
    Ok(answer?)
}

/// `n` spawn+wait runs of `argv` (10 warm-up runs first), on a blocking thread.
async fn spawn_series(argv: Vec<String>, n: usize) -> Result<Pct> {
    let samples = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        Cmd::new(&args)?.sample(10, n)
    })
    .await??;
    Ok(Pct::of_us(&samples))
}

/// A peer sandbox tool, or [`skipped`] when it is not installed or does not work.
async fn peer(tool: &str, args: &[&str], n: usize) -> Value {
    let Some(path) = which(tool) else {
        return skipped(format!(
            "{tool} is not installed (`which {tool}` found nothing)"
        ));
    };
    let mut argv = vec![path.to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let line = argv.join(" ");
    match spawn_series(argv, n).await {
        Ok(p) => {
            let mut v = p.to_json();
            v["command"] = json!(line);
            v
        }
        Err(e) => skipped(format!("`{line}` failed: {e}")),
    }
}

/// `n` timed `usage()` calls; notes the process count.
async fn usage_series(manager: &Manager, id: &str, n: usize) -> Result<Value> {
    // Settled first: `workers` answers once the workers of the last reload have moved.
    manager.workers(id).await?;
    let first = manager.usage(id).await?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        manager.usage(id).await?;
        samples.push(t.elapsed());
    }
    let mut v = Pct::of_us(&samples).to_json();
    v["processes"] = json!(first.processes);
    Ok(v)
}

/// Creates `sizes.sandboxes` idle sandboxes concurrently; reports the wall time, the
/// host's RSS and the mean PSS of each sandbox's process tree; destroys them.
async fn many_sandboxes(manager: &Manager, lib: &Path, sizes: Sizes) -> Result<Value> {
    let n = sizes.sandboxes;
    let rss_before = vm_rss_kb().unwrap_or(0);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let manager = manager.clone();
        let spec = SandboxSpec::new(AppSource::Library(lib.to_path_buf()));
        set.spawn(async move { manager.create(&format!("bench-n-{i}"), spec).await });
    }
    let mut pids = Vec::with_capacity(n);
    let mut first_err = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(info)) => pids.push(info.pid),
            Ok(Err(e)) => first_err = first_err.or(Some(anyhow!(e))),
            Err(e) => first_err = first_err.or(Some(anyhow!(e))),
        }
    }
    let total_s = started.elapsed().as_secs_f64();
    let result = match first_err {
        Some(e) => Err(e.context(format!("creating {n} sandboxes"))),
        None => {
            let rss = vm_rss_kb().unwrap_or(0);
            let (pss_kb, processes) = tokio::task::spawn_blocking(move || {
                let mut pss = 0u64;
                let mut procs = 0usize;
                for pid in pids {
                    for p in sandbox::procfs::tree(pid) {
                        pss += pss_kb(p.pid).unwrap_or(0);
                        procs += 1;
                    }
                }
                (pss, procs)
            })
            .await?;
            let mut v = json!({
                "n": n,
                "total_s": (total_s * 1000.0).round() / 1000.0,
                "host_rss_kb": rss,
                "host_rss_before_kb": rss_before,
                "mean_pss_kb": round1(pss_kb as f64 / n as f64),
                "processes": processes,
            });
            if sizes.quick {
                v["note"] = json!(format!("--quick: {n} sandboxes, not 1000"));
            }
            Ok(v)
        }
    };
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let manager = manager.clone();
        set.spawn(async move { manager.destroy(&format!("bench-n-{i}")).await });
    }
    while set.join_next().await.is_some() {}
    let mut v = result?;
    v["destroy_all_s"] = json!((t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0);
    Ok(v)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// A `kB` field of a `/proc` file such as `VmRSS:` of `status` or `Pss:` of `smaps_rollup`.
fn proc_kb(path: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

fn vm_rss_kb() -> Option<u64> {
    proc_kb("/proc/self/status", "VmRSS:")
}

fn pss_kb(pid: i32) -> Option<u64> {
    proc_kb(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// The rows of the table: label, summary key path, unit factor to microseconds.
const ROWS: &[(&str, &[&str], f64)] = &[
    ("floor_spawn_us", &["floor_spawn_us"], 1.0),
    ("create_ready_us.none", &["create_ready_us", "none"], 1.0),
    (
        "create_ready_us.standard",
        &["create_ready_us", "standard"],
        1.0,
    ),
    (
        "create_ready_us.standard (pool empty)",
        &["create_ready_us", "standard_pool_empty"],
        1.0,
    ),
    ("pool.prepare_us", &["pool", "prepare_us"], 1.0),
    ("reload_us", &["reload_us"], 1.0),
    ("call_rtt_us", &["call_rtt_us"], 1.0),
    ("usage_us.p1", &["usage_us", "p1"], 1.0),
    ("usage_us.p1000", &["usage_us", "p1000"], 1.0),
    ("destroy_us", &["destroy_us"], 1.0),
    ("reload_loop_ms (ms)", &["reload_loop_ms"], 1000.0),
    ("peer_unshare_us", &["peer_unshare_us"], 1.0),
    ("peer_bwrap_us", &["peer_bwrap_us"], 1.0),
];

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn print_table(s: &Value) {
    let floor = p50_of(&s["floor_spawn_us"]);
    let unshare = p50_of(&s["peer_unshare_us"]);
    let bwrap = p50_of(&s["peer_bwrap_us"]);
    let ratio = |x: f64, base: Option<f64>| match base {
        Some(b) if b > 0.0 => format!("{:.2}x", x / b),
        _ => "-".into(),
    };
    println!(
        "\n| operation | p50 | p99 | n | / floor | / unshare | / bwrap |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for (label, path, to_us) in ROWS {
        let v = at(s, path);
        match p50_of(v) {
            Some(p50) => {
                let us = p50 * to_us;
                println!(
                    "| {label} | {p50:.1} | {:.1} | {} | {} | {} | {} |",
                    v["p99"].as_f64().unwrap_or(f64::NAN),
                    v["n"],
                    ratio(us, floor),
                    ratio(us, unshare),
                    ratio(us, bwrap),
                );
            }
            None => println!(
                "| {label} | - | - | - | skipped: {} | | |",
                v["skipped"].as_str().unwrap_or("?")
            ),
        }
    }
    let c = &s["call_rtt_us"];
    if let (Some(call), Some(floor)) = (p50_of(c), c["socketpair_floor_p50"].as_f64()) {
        println!(
            "\ncall_rtt_us against a bare socketpair round trip in the same run: {call} vs {floor} µs ({})",
            ratio(call, Some(floor))
        );
    }
    let m = &s["sandboxes_1000"];
    println!(
        "\nsandboxes_1000: n={} total_s={} host_rss_kb={} mean_pss_kb={} processes={} destroy_all_s={}",
        m["n"],
        m["total_s"],
        m["host_rss_kb"],
        m["mean_pss_kb"],
        m["processes"],
        m["destroy_all_s"]
    );
    if let Some(note) = m["note"].as_str() {
        println!("  ({note})");
    }
    let w = &s["watching"];
    println!(
        "watching: {} sandboxes at 1 s: daemon cpu={}% (unwatched {}%) rss_delta_kb={} event_latency_ms p50={} p99={}{}",
        w["sandboxes"],
        w["daemon_cpu_percent"],
        w["daemon_cpu_percent_unwatched"],
        w["rss_delta_kb"],
        w["event_latency_ms"]["p50"],
        w["event_latency_ms"]["p99"],
        w["skipped"]
            .as_str()
            .map(|why| format!(" (skipped: {why})"))
            .unwrap_or_default()
    );
    let r = &s["daemon_rss_kb"];
    println!(
        "daemon_rss_kb under 48 unterminated 15 MB lines and 1000 idle connections: before={} loaded={} after={} peak={}{}",
        r["before"],
        r["loaded"],
        r["after"],
        r["peak"],
        r["skipped"]
            .as_str()
            .map(|why| format!(" (skipped: {why})"))
            .unwrap_or_default()
    );
}

/// Prints each goal of the issue as met, missed or not measured.
fn print_goals(s: &Value) {
    let p50 = |path: &[&str]| p50_of(at(s, path));
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    let standard = p50(&["create_ready_us", "standard"]);
    let bwrap = p50(&["peer_bwrap_us"]);
    let floor = p50(&["floor_spawn_us"]);
    let m = &s["sandboxes_1000"];
    let w = &s["watching"];
    let p99 = |path: &[&str]| at(s, path)["p99"].as_f64();
    let cold = p50(&["create_ready_us", "standard_pool_empty"]);
    let call = p50(&["call_rtt_us"]);
    let call_floor = s["call_rtt_us"]["socketpair_floor_p50"].as_f64();
    let goals: Vec<(String, Option<bool>)> = vec![
        (
            "create_ready_us.standard p50 <= 1000 (pool warm)".into(),
            standard.map(|v| v <= 1000.0),
        ),
        (
            "create_ready_us.standard p50 <= 0.25 x peer_bwrap_us p50".into(),
            standard.zip(bwrap).map(|(a, b)| a <= 0.25 * b),
        ),
        (
            "create_ready_us.standard p99 <= 3000".into(),
            p99(&["create_ready_us", "standard"]).map(|v| v <= 3000.0),
        ),
        (
            "create_ready_us.standard_pool_empty p50 (informational: no slower than before)".into(),
            cold.map(|_| true),
        ),
        (
            "create_ready_us.none p50 <= 1.5 x floor_spawn_us p50".into(),
            p50(&["create_ready_us", "none"])
                .zip(floor)
                .map(|(a, f)| a <= 1.5 * f),
        ),
        (
            "destroy_us p99 <= 10000".into(),
            p99(&["destroy_us"]).map(|v| v <= 10_000.0),
        ),
        (
            "reload_us p50 <= 300".into(),
            p50(&["reload_us"]).map(|v| v <= 300.0),
        ),
        (
            "call_rtt_us p50 <= 1.3 x socketpair floor p50".into(),
            call.zip(call_floor).map(|(c, f)| c <= 1.3 * f),
        ),
        (
            "usage_us.p1000 p50 <= 2000".into(),
            p50(&["usage_us", "p1000"]).map(|v| v <= 2000.0),
        ),
        (
            format!("{} sandboxes <= 3 s", m["n"]),
            m["total_s"].as_f64().map(|v| v <= 3.0),
        ),
        (
            "mean PSS per sandbox <= 1 MB (1024 kB)".into(),
            m["mean_pss_kb"].as_f64().map(|v| v <= 1024.0),
        ),
        (
            "reload_loop_ms p50 <= 1000".into(),
            p50(&["reload_loop_ms"]).map(|v| v <= 1000.0),
        ),
        (
            "watching: daemon CPU < 2% of one core (100 sandboxes, 1 s)".into(),
            w["daemon_cpu_percent"].as_f64().map(|v| v < 2.0),
        ),
        (
            "watching: RSS delta < 20 MB".into(),
            w["rss_delta_kb"].as_f64().map(|v| v < 20.0 * 1024.0),
        ),
        (
            "watching: event latency p99 < 50 ms".into(),
            w["event_latency_ms"]["p99"].as_f64().map(|v| v < 50.0),
        ),
    ];
    println!("\ngoals:");
    for (goal, ok) in goals {
        println!("  {:<13} {goal}", verdict(ok));
    }
}
