//! Batch operations of the library: every operation, one result per item in input order,
//! partial failure (a duplicate, an unknown id, a crate that does not build, a version that
//! does not load), the batch timeout, cancellation, and nothing left behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::manager::cgroup_name;
use e2e::prelude::*;
use sandbox::manager::{BatchItem, BatchOptions};
use sandbox::{AppSource, Level, ReloadSource, SandboxInfo, SandboxSpec};
use serde_json::{Value, json};

fn spec_of(lib: PathBuf) -> SandboxSpec {
    in_test_cgroup(SandboxSpec::new(AppSource::Library(lib)).with_isolation(Level::Standard))
}

fn kinds<T>(items: &[BatchItem<T>]) -> Vec<String> {
    items
        .iter()
        .map(|i| match &i.result {
            Ok(_) => "ok".to_string(),
            Err(e) => e.kind().to_string(),
        })
        .collect()
}

fn opts(max_concurrency: usize, timeout: Option<Duration>) -> BatchOptions {
    BatchOptions {
        max_concurrency,
        timeout,
        cancel: None,
    }
}

/// What a sandbox made: its directory, its cgroup name, its runner and app pids.
struct Made {
    dir: PathBuf,
    cgroup: String,
    pids: [i32; 2],
}

impl Made {
    fn of(info: &SandboxInfo) -> Made {
        Made {
            dir: info.dir.clone(),
            cgroup: cgroup_name(info),
            pids: [info.pid, info.app_pid],
        }
    }
}

/// Nothing of `made` remains, and the state directory holds nothing but the pool's.
async fn assert_nothing_left(m: &Managed, made: &[Made]) {
    m.settled().await;
    for made in made {
        assert!(!made.dir.exists(), "{} remains", made.dir.display());
        let left = testkit::cgroup::named(&made.cgroup, 3);
        assert!(left.is_empty(), "cgroups remain: {left:?}");
        for pid in made.pids.iter().filter(|&&p| p > 0) {
            assert!(
                wait_until(Duration::from_secs(5), || !alive(*pid)),
                "pid {pid} of {} still runs",
                made.dir.display()
            );
        }
    }
    let entries: Vec<String> = std::fs::read_dir(&m.config().state_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("pool.") && !n.starts_with('.'))
        .collect();
    assert!(entries.is_empty(), "state entries remain: {entries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_gives_one_result_per_item_in_input_order() {
    let m = manager_with(|c| c.pool_size = 2);
    m.warm_pool().await;
    let lib = built("sandbox_app").await;
    let names = ["b-0", "b-1", "b-0", "bad id", "b-2", "b-3"];
    let items = names
        .iter()
        .map(|id| (id.to_string(), spec_of(lib.clone())))
        .collect();
    let mut seen = Vec::new();
    let created = m
        .batch_create(items, &opts(3, None), &mut |i, item| {
            seen.push((i, item.id.clone()))
        })
        .await;
    assert_eq!(
        kinds(&created),
        ["ok", "ok", "duplicate_id", "invalid_id", "ok", "ok"]
    );
    let ids: Vec<&str> = created.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, names, "results come back in input order");
    seen.sort();
    assert_eq!(
        seen.len(),
        names.len(),
        "progress is told of every item once"
    );
    let made: Vec<Made> = created
        .iter()
        .filter_map(|i| i.result.as_ref().ok())
        .map(Made::of)
        .collect();
    assert_eq!(m.ids(), ["b-0", "b-1", "b-2", "b-3"]);

    let some: Vec<String> = ["b-3", "nope", "b-0", "b-1", "b-2"]
        .map(String::from)
        .to_vec();
    let called = m
        .batch_call(
            some.clone(),
            "answer",
            Value::Null,
            None,
            &opts(2, None),
            &mut |_, _| {},
        )
        .await;
    assert_eq!(kinds(&called), ["ok", "not_found", "ok", "ok", "ok"]);
    assert_eq!(called[0].result.as_ref().unwrap(), &json!(41));

    // One version into many; then one that cannot load: each sandbox keeps its old one.
    let v42 = demo_lib_answering(42).await;
    let reloaded = m
        .batch_reload(
            some.clone(),
            ReloadSource::Library(v42),
            &opts(4, None),
            &mut |_, _| {},
        )
        .await;
    assert_eq!(kinds(&reloaded), ["ok", "not_found", "ok", "ok", "ok"]);
    let report = reloaded[0].result.as_ref().unwrap();
    assert_eq!((report.from_version, report.to_version), (1, 2));
    let wrong = built("wrong_abi_app").await;
    let refused = m
        .batch_reload(
            vec!["b-0".into(), "b-1".into()],
            ReloadSource::Library(wrong),
            &opts(2, None),
            &mut |_, _| {},
        )
        .await;
    assert_eq!(kinds(&refused), ["reload_refused", "reload_refused"]);
    for id in ["b-0", "b-1", "b-2", "b-3"] {
        assert_eq!(
            m.run(id, "answer", Value::Null, None).await.unwrap(),
            json!(42),
            "{id} serves the version it had"
        );
    }

    let mut all = m.ids();
    all.push("b-1".into());
    all.push("gone".into());
    let destroyed = m.batch_destroy(all, &opts(8, None), &mut |_, _| {}).await;
    assert_eq!(
        kinds(&destroyed),
        ["ok", "ok", "ok", "ok", "duplicate_id", "not_found"]
    );
    assert!(m.ids().is_empty());
    assert_nothing_left(&m, &made).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_batch_timeout_items_time_out_and_nothing_half_made_remains() {
    let m = manager_with(|c| {
        c.pool_size = 0;
        c.start_timeout = Duration::from_secs(2);
    });
    let (lib, hang) = (built("sandbox_app").await, built("hang_load_app").await);
    // One at a time: the first may finish, the second hangs past the deadline, the rest
    // never start.
    let items = vec![
        ("t-0".to_string(), spec_of(lib.clone())),
        ("t-1".to_string(), spec_of(hang)),
        ("t-2".to_string(), spec_of(lib.clone())),
        ("t-3".to_string(), spec_of(lib)),
    ];
    let started = Instant::now();
    let created = m
        .batch_create(
            items,
            &opts(1, Some(Duration::from_millis(1500))),
            &mut |_, _| {},
        )
        .await;
    let took = started.elapsed();
    let kinds = kinds(&created);
    assert!(kinds[0] == "ok" || kinds[0] == "timeout", "{kinds:?}");
    assert_eq!(kinds[1..], ["timeout", "timeout", "timeout"], "{created:?}");
    // The hanging load is waited for (up to the start timeout), never abandoned half-made.
    assert!(took < Duration::from_secs(10), "{took:?}");
    let ok: Vec<String> = created
        .iter()
        .filter(|i| i.result.is_ok())
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(m.ids(), ok, "only the items reported made exist");
    let made: Vec<Made> = created
        .iter()
        .filter_map(|i| i.result.as_ref().ok())
        .map(Made::of)
        .collect();
    m.batch_destroy(m.ids(), &BatchOptions::default(), &mut |_, _| {})
        .await;
    assert_nothing_left(&m, &made).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_starts_nothing_more_and_leaves_only_whole_sandboxes() {
    let m = manager_with(|c| c.pool_size = 0);
    let lib = built("sandbox_app").await;
    let items = (0..8)
        .map(|n| (format!("c-{n}"), spec_of(lib.clone())))
        .collect();
    let (cancel, rx) = tokio::sync::watch::channel(false);
    let options = BatchOptions {
        max_concurrency: 1,
        timeout: None,
        cancel: Some(rx),
    };
    let created = m
        .batch_create(items, &options, &mut |_, _| {
            let _ = cancel.send(true);
        })
        .await;
    let kinds = kinds(&created);
    assert_eq!(kinds[0], "ok", "{created:?}");
    assert!(
        kinds.iter().filter(|k| *k == "cancelled").count() >= 6,
        "{kinds:?}"
    );
    assert!(
        kinds.iter().all(|k| k == "ok" || k == "cancelled"),
        "{kinds:?}"
    );
    for summary in m.list().await {
        assert_eq!(summary.status, sandbox::Status::Running, "{summary:?}");
    }
    let made: Vec<Made> = created
        .iter()
        .filter_map(|i| i.result.as_ref().ok())
        .map(Made::of)
        .collect();
    assert_eq!(m.ids().len(), made.len());
    m.batch_destroy(m.ids(), &BatchOptions::default(), &mut |_, _| {})
        .await;
    assert_nothing_left(&m, &made).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_build_serves_many_creates_and_many_source_reloads() {
    let m = manager_with(|c| c.pool_size = 0);
    let broken = scratch();
    std::fs::write(
        broken.path().join("Cargo.toml"),
        "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n",
    )
    .unwrap();
    std::fs::create_dir(broken.path().join("src")).unwrap();
    std::fs::write(broken.path().join("src/lib.rs"), "this is not rust").unwrap();
    let from_crate = |dir: PathBuf| {
        in_test_cgroup(SandboxSpec::new(AppSource::Crate(dir)).with_isolation(Level::Standard))
    };
    let items = vec![
        ("s-0".to_string(), from_crate(demo_app())),
        ("s-1".to_string(), from_crate(broken.path().to_path_buf())),
        ("s-2".to_string(), from_crate(demo_app())),
    ];
    let created = m
        .batch_create(items, &BatchOptions::default(), &mut |_, _| {})
        .await;
    assert_eq!(kinds(&created), ["ok", "build_failed", "ok"], "{created:?}");
    let made: Vec<Made> = created
        .iter()
        .filter_map(|i| i.result.as_ref().ok())
        .map(Made::of)
        .collect();
    let ids = vec!["s-0".to_string(), "s-2".to_string()];
    let bad = m
        .batch_reload(
            ids.clone(),
            ReloadSource::Source {
                lib_rs: "not rust either".into(),
                crate_dir: None,
            },
            &BatchOptions::default(),
            &mut |_, _| {},
        )
        .await;
    assert_eq!(kinds(&bad), ["build_failed", "build_failed"]);
    let good = m
        .batch_reload(
            ids.clone(),
            ReloadSource::Source {
                lib_rs: demo_source_answering(43),
                crate_dir: None,
            },
            &BatchOptions::default(),
            &mut |_, _| {},
        )
        .await;
    assert_eq!(kinds(&good), ["ok", "ok"], "{good:?}");
    let compile: Vec<Option<u64>> = good
        .iter()
        .map(|i| i.result.as_ref().unwrap().compile_ms)
        .collect();
    assert!(
        compile[0].is_some() && compile[0] == compile[1],
        "{compile:?}"
    );
    let called = m
        .batch_call(
            ids.clone(),
            "answer",
            Value::Null,
            None,
            &BatchOptions::default(),
            &mut |_, _| {},
        )
        .await;
    for item in &called {
        assert_eq!(item.result.as_ref().unwrap(), &json!(43), "{}", item.id);
    }
    m.batch_destroy(ids, &BatchOptions::default(), &mut |_, _| {})
        .await;
    assert_nothing_left(&m, &made).await;
}
