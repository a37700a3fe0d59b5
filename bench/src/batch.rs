//! `sandboxes_1000_batch`: the same N idle `standard` sandboxes as `sandboxes_1000`, made by
//! one `Manager::batch_create` (at most the CPU count at a time, the runner pool serving what
//! it holds) and removed by one `batch_destroy`, measured in the same run, beside the
//! one-create-per-sandbox figure.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use appbuild::Profile;
use sandbox::manager::{BatchOptions, default_concurrency};
use sandbox::{AppSource, Manager, ManagerConfig, SandboxSpec};
use serde_json::{Value, json};

use crate::Sizes;
use crate::stats::round1;

fn secs(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

/// Creates `sizes.sandboxes` sandboxes in one batch, measures their PSS, destroys them in one
/// batch; reports the wall times (`create_s`, `destroy_s`: the processes dead; `settled_s`:
/// cgroups and directories removed too).
pub(crate) async fn measure(manager: &Manager, lib: &Path, sizes: Sizes) -> Result<Value> {
    let n = sizes.sandboxes;
    // `SANDBOX_BENCH_BATCH_CONCURRENCY` overrides the default (the CPU count) to explore.
    let opts = BatchOptions {
        max_concurrency: std::env::var("SANDBOX_BENCH_BATCH_CONCURRENCY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(default_concurrency),
        ..BatchOptions::default()
    };
    let items: Vec<(String, SandboxSpec)> = (0..n)
        .map(|i| {
            let spec = SandboxSpec::new(AppSource::Library(lib.to_path_buf()));
            (format!("bench-b-{i}"), spec)
        })
        .collect();
    let served_before = manager.pool_stats().served;
    let started = Instant::now();
    let made = manager.batch_create(items, &opts, &mut |_, _| {}).await;
    let create_s = secs(started);
    let pooled = manager.pool_stats().served - served_before;
    let failed: Vec<String> = made
        .iter()
        .filter_map(|i| i.result.as_ref().err().map(|e| format!("{}: {e}", i.id)))
        .collect();
    let pids: Vec<i32> = made
        .iter()
        .filter_map(|i| i.result.as_ref().ok().map(|info| info.pid))
        .collect();
    let ids: Vec<String> = made.into_iter().map(|i| i.id).collect();
    let (pss_kb, processes) = tokio::task::spawn_blocking(move || {
        let mut pss = 0u64;
        let mut procs = 0usize;
        for pid in pids {
            for p in sandbox::procfs::tree(pid) {
                pss += crate::series::pss_kb(p.pid).unwrap_or(0);
                procs += 1;
            }
        }
        (pss, procs)
    })
    .await?;
    let started = Instant::now();
    let destroyed = manager.batch_destroy(ids, &opts, &mut |_, _| {}).await;
    let destroy_s = secs(started);
    manager.settled().await;
    let settled_s = secs(started);
    if let Some(first) = failed.first() {
        bail!(
            "{} of {n} batch creates failed; first: {first}",
            failed.len()
        );
    }
    if let Some(e) = destroyed.iter().find_map(|i| i.result.as_ref().err()) {
        bail!("a batch destroy failed: {e}");
    }
    let mut v = json!({
        "n": n,
        "max_concurrency": opts.max_concurrency,
        "create_s": create_s,
        "destroy_s": destroy_s,
        "settled_s": settled_s,
        "pooled": pooled,
        "mean_pss_kb": round1(pss_kb as f64 / n as f64),
        "processes": processes,
    });
    if sizes.quick {
        v["note"] = json!(format!("--quick: {n} sandboxes, not 1000"));
    }
    Ok(v)
}

/// `--only-sandboxes`: the two N-sandbox figures of one run (one create per sandbox, all at
/// once; then one batch), with the pool warm before each.
pub(crate) async fn only_sandboxes(sizes: Sizes) -> Result<Value> {
    let state = tempfile::Builder::new()
        .prefix("sandbox-bench-")
        .tempdir_in("/var/tmp")
        .context("state directory")?;
    let mut config = ManagerConfig::new("/proc/self/exe");
    config.state_dir = state.path().join("sandboxes");
    config.compiler.profile = Profile::Release;
    config.start_timeout = std::time::Duration::from_secs(60);
    let manager = Manager::new(config).context("manager")?;
    let lib = manager
        .config()
        .compiler
        .build(&crate::repo_root().join("sandbox_app"))
        .await
        .context("build sandbox_app")?
        .lib;
    manager.warm_pool().await;
    let one_by_one = crate::series::many_sandboxes(&manager, &lib, sizes).await;
    manager.settled().await;
    manager.warm_pool().await;
    let batch = measure(&manager, &lib, sizes).await;
    manager.destroy_all().await;
    Ok(json!({
        "sandboxes_1000": one_by_one?,
        "sandboxes_1000_batch": batch?,
    }))
}
