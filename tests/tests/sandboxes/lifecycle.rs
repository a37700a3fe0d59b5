//! The sandbox lifecycle through the library: create, call, reload, rollback, destroy.

use std::time::Duration;

use e2e::manager::create_app;
use e2e::prelude::*;
use sandbox::{AppSource, Level, Limits, ReloadSource, SandboxError, SandboxSpec};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_41_then_source_reload_42_then_rollback_41() {
    let m = manager();
    let info = m
        .create("life-1", SandboxSpec::new(AppSource::Crate(demo_app())))
        .await
        .unwrap();
    assert_eq!(info.app.version, 1);
    assert_eq!(
        m.run("life-1", "answer", Value::Null, None).await.unwrap(),
        json!(41)
    );

    let source = ReloadSource::Source {
        lib_rs: demo_source_answering(42),
        crate_dir: None,
    };
    let report = m.reload("life-1", source).await.unwrap();
    assert_eq!(
        (
            report.status.as_str(),
            report.from_version,
            report.to_version
        ),
        ("reloaded", 1, 2)
    );
    assert!(report.compile_ms.is_some());
    assert_eq!(
        m.run("life-1", "answer", Value::Null, None).await.unwrap(),
        json!(42)
    );

    let back = m.rollback("life-1", 1).await.unwrap();
    assert_eq!((back.from_version, back.to_version), (2, 1));
    assert_eq!(
        m.run("life-1", "answer", Value::Null, None).await.unwrap(),
        json!(41)
    );
    let info = m.info("life-1").await.unwrap();
    assert_eq!(info.versions.len(), 2);
    assert_eq!(info.app.version, 1);

    m.destroy("life-1").await.unwrap();
    m.settled().await;
    // Prepared runners of the pool (`pool.*`) wait there for the next sandbox.
    let left: Vec<_> = std::fs::read_dir(m.state.path().join("sandboxes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("pool."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_binary_again_is_no_change_and_a_duplicate_id_is_refused() {
    let m = manager();
    let lib = built("sandbox_app").await;
    m.create("same-1", SandboxSpec::new(AppSource::Library(lib.clone())))
        .await
        .unwrap();
    let report = m
        .reload("same-1", ReloadSource::Library(lib.clone()))
        .await
        .unwrap();
    assert_eq!(report.status, "no_change");
    let dup = m
        .create("same-1", SandboxSpec::new(AppSource::Library(lib)))
        .await;
    assert!(
        matches!(dup, Err(SandboxError::AlreadyExists(_))),
        "{dup:?}"
    );
    let bad = m
        .create(
            "no/slash",
            SandboxSpec::new(AppSource::Library("/x".into())),
        )
        .await;
    assert!(matches!(bad, Err(SandboxError::InvalidId(_))));
    assert!(matches!(
        m.info("nope").await,
        Err(SandboxError::NotFound(_))
    ));
    m.destroy("same-1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_kept_by_the_app_survives_a_reload() {
    let m = manager();
    let v41 = built("sandbox_app").await;
    let v42 = demo_lib_answering(42).await;
    m.create("count-1", SandboxSpec::new(AppSource::Library(v41)))
        .await
        .unwrap();
    for _ in 0..3 {
        m.run("count-1", "answer", Value::Null, None).await.unwrap();
    }
    m.reload("count-1", ReloadSource::Library(v42))
        .await
        .unwrap();
    assert_eq!(
        m.run("count-1", "calls", Value::Null, None).await.unwrap(),
        json!(3)
    );
    assert_eq!(
        m.run("count-1", "answer", Value::Null, None).await.unwrap(),
        json!(42)
    );
    assert_eq!(
        m.run("count-1", "calls", Value::Null, None).await.unwrap(),
        json!(4)
    );
    m.destroy("count-1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_libraries_are_refused_and_the_old_version_keeps_serving() {
    let m = manager();
    m.create(
        "bad-1",
        SandboxSpec::new(AppSource::Library(built("sandbox_app").await)),
    )
    .await
    .unwrap();
    let garbage = m.state.path().join("garbage.so");
    std::fs::write(&garbage, b"definitely not an ELF file").unwrap();
    let cases = [
        (built("wrong_abi_app").await, "ABI version 999"),
        (garbage, "cannot load"),
        (built("no_entry_app").await, "no `sandbox_app_entry`"),
        (built("faulty_app").await, "restore_state panicked"),
    ];
    for (lib, why) in cases {
        let err = m
            .reload("bad-1", ReloadSource::Library(lib.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SandboxError::ReloadRefused(_)),
            "{lib:?}: {err:?}"
        );
        assert!(err.to_string().contains(why), "{lib:?}: {err}");
        assert_eq!(
            m.run("bad-1", "answer", Value::Null, None).await.unwrap(),
            json!(41)
        );
    }
    let info = m.info("bad-1").await.unwrap();
    assert_eq!((info.app.version, info.versions.len()), (1, 1));
    m.destroy("bad-1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_whose_load_hangs_times_out_and_the_old_version_serves() {
    let m = manager_with(|c| c.reload_timeout = Duration::from_millis(300));
    m.create(
        "hang-1",
        SandboxSpec::new(AppSource::Library(built("sandbox_app").await)),
    )
    .await
    .unwrap();
    let err = m
        .reload(
            "hang-1",
            ReloadSource::Library(built("hang_load_app").await),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("took longer"), "{err}");
    assert_eq!(
        m.run("hang-1", "answer", Value::Null, None).await.unwrap(),
        json!(41)
    );
    // The hung initialiser still holds the loader lock: the next reload is refused at once,
    // saying so, rather than hanging behind it; calls go on.
    let err = m
        .reload(
            "hang-1",
            ReloadSource::Library(demo_lib_answering(42).await),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("an earlier load has not ended"),
        "{err}"
    );
    assert_eq!(
        m.run("hang-1", "answer", Value::Null, None).await.unwrap(),
        json!(41)
    );
    m.destroy("hang-1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_a_stream_of_concurrent_calls_lose_no_call() {
    let m = manager();
    let libs = [built("sandbox_app").await, demo_lib_answering(42).await];
    m.create(
        "stream-1",
        SandboxSpec::new(AppSource::Library(libs[0].clone())),
    )
    .await
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (m, stop) = (m.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v = m
                    .run("stream-1", "answer", Value::Null, None)
                    .await
                    .expect("call lost");
                assert!(v == json!(41) || v == json!(42), "{v}");
                n += 1;
            }
            n
        }));
    }
    for i in 0..20 {
        let report = m
            .reload("stream-1", ReloadSource::Library(libs[(i + 1) % 2].clone()))
            .await
            .unwrap();
        assert_eq!(report.status, "reloaded");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in callers {
        total += c.await.unwrap();
    }
    assert!(total > 20, "only {total} calls ran");
    assert_eq!(
        m.run("stream-1", "answer", Value::Null, None)
            .await
            .unwrap(),
        json!(41)
    );
    let usage = m.usage("stream-1").await.unwrap();
    assert!(
        usage.mapped_app_copies <= 2,
        "{} copies mapped",
        usage.mapped_app_copies
    );
    m.destroy("stream-1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_leaves_no_process_and_no_directory() {
    let m = manager();
    let info = create_app(
        &m,
        "gone-1",
        "sandbox_app",
        Limits::default(),
        Level::Standard,
    )
    .await;
    m.spawn_workers("gone-1", 3).await.unwrap();
    let pids = tree(info.pid);
    assert_eq!(pids.len(), 6, "init + app process + 4 workers: {pids:?}");
    m.destroy("gone-1").await.unwrap();
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived destroy");
    }
    m.settled().await;
    assert!(!info.dir.exists());
    assert!(matches!(
        m.run("gone-1", "answer", Value::Null, None).await,
        Err(SandboxError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counts_real_processes_and_reports_versions() {
    let m = manager();
    let info = create_app(
        &m,
        "use-1",
        "sandbox_app",
        Limits::default(),
        Level::Standard,
    )
    .await;
    // Where the start spent its time, phase by phase; the runner's own phases lie within
    // the host's view of them.
    let t = info.startup;
    assert!(t.install_us > 0 && t.spawn_us > 0 && t.load_us > 0, "{t:?}");
    assert!(t.load_us + t.restrict_us <= t.ready_us, "{t:?}");
    // Create returns once the app answers; `workers` once its initial worker is started.
    assert_eq!(m.workers("use-1").await.unwrap().workers.len(), 1);
    let before = m.usage("use-1").await.unwrap();
    assert_eq!(before.processes, 3, "init + app process + 1 worker");
    assert_eq!(before.pid, info.pid);
    assert!(before.memory_bytes > 0 && before.threads >= 2 && before.open_fds >= 4);
    assert_eq!((before.app_version, before.mapped_app_copies), (1, 1));
    m.spawn_workers("use-1", 25).await.unwrap();
    let after = m.usage("use-1").await.unwrap();
    assert_eq!(after.processes, 28);
    m.destroy("use-1").await.unwrap();
}
