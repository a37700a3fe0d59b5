//! Two planes: nothing the app writes is believed. A forging app (tests/apps/forger_app)
//! writes forged frames of every kind the protocol has on every descriptor it holds, from a
//! constructor before the app process answers `load` and in a flood from a call. Status,
//! versions, restart counts, crash state and the isolation report must stay what the host and
//! init observed; the only fields the app can set are the ones labelled as its own word.

use std::time::{Duration, Instant};

use e2e::manager::create_app;
use e2e::prelude::*;
use e2e::report::{first_entry, mechanisms};
use sandbox::{Level, Limits, Status};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_frames_change_nothing_the_host_observed() {
    let m = manager();
    let info = create_app(
        &m,
        "forger",
        "forger_app",
        Limits::default(),
        Level::Standard,
    )
    .await;
    let neighbour = hostile(&m, "neighbour", Limits::default(), Level::Standard).await;

    // The constructor forged answers to `load` and `init` before the real ones: at most the
    // app's own claims (labelled so) can be forged, never the isolation report.
    assert_eq!(info.status, Status::Running);
    assert!(
        info.app.claimed_by_app.contains(&"name".to_string())
            && info.app.claimed_by_app.contains(&"app_version".to_string()),
        "{:?}",
        info.app
    );
    let report = info.isolation.to_string();
    assert!(
        !report.contains("FORGED"),
        "a forged isolation entry: {report}"
    );
    for (mechanism, applied) in mechanisms(&info.isolation) {
        if ["seccomp", "no_new_privs", "capabilities"].contains(&mechanism.as_str()) {
            assert!(applied, "{mechanism} must be applied: {report}");
        }
    }
    let seccomp = first_entry(&info.isolation, "seccomp")["detail"].to_string();
    assert!(seccomp.contains("[kernel: Seccomp: 2]"), "{seccomp}");

    // The flood: 300 000 forged frames on every descriptor, and 4 MiB on stderr.
    let log = info.dir.join("runner.log");
    let log_before = std::fs::metadata(&log).map_or(0, |m| m.len());
    let flood_started = Instant::now();
    let flood = m
        .run(
            "forger",
            "flood",
            json!({"count": 100_000, "log_mb": 4}),
            Some(Duration::from_secs(120)),
        )
        .await;
    eprintln!("flood: {flood:?}");
    // Meanwhile and after, the neighbour answers promptly.
    let started = Instant::now();
    let answer = m
        .run(
            "neighbour",
            "answer",
            Value::Null,
            Some(Duration::from_secs(2)),
        )
        .await
        .expect("the neighbour answers");
    assert_eq!(answer, json!(1));
    assert!(started.elapsed() < Duration::from_secs(1));

    let after = m.info("forger").await.unwrap();
    assert_eq!(after.status, Status::Running, "{:?}", after.crash_reason);
    assert_eq!(after.crash_reason, None);
    assert_eq!(after.restart_count, 0, "forged frames restarted the runner");
    assert_eq!(after.app.version, 1);
    assert_eq!(
        after.isolation, info.isolation,
        "the isolation report changed"
    );
    let usage = m.usage("forger").await.unwrap();
    assert_eq!(
        usage.worker_restarts, 0,
        "forged worker restarts were counted"
    );
    assert_eq!(usage.restart_count, 0);
    let workers = m.workers("forger").await.unwrap();
    assert_eq!((workers.restarts, workers.crashed), (0, false));
    // Its own calls still work once it stops lying.
    assert_eq!(
        m.run("forger", "answer", Value::Null, None).await.unwrap(),
        json!(1)
    );
    // The log took at most its budget (64 KiB a second, within the file's 4 MiB) of the
    // frames written to stdout and the 4 MiB written to stderr.
    let grown = std::fs::metadata(&log).map_or(0, |m| m.len()) - log_before;
    let budget = (64 << 10) * (flood_started.elapsed().as_secs() + 2);
    assert!(
        grown <= budget.min(4 << 20),
        "the runner's log grew by {grown} bytes in {:?}",
        flood_started.elapsed()
    );
    drop(neighbour);
    m.destroy("forger").await.unwrap();
    m.destroy("neighbour").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_what_init_observed_not_a_frame() {
    let m = manager();
    let info = create_app(
        &m,
        "honest",
        "forger_app",
        Limits::default(),
        Level::Standard,
    )
    .await;
    // Init and the app process are two processes; init never mapped the app's library.
    assert_ne!(info.app_pid, 0);
    assert_ne!(info.app_pid, info.pid);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", info.pid)).unwrap_or_default();
    assert!(
        !maps.lines().any(|l| l.contains("/app/")),
        "init mapped the app: {maps}"
    );
    let app_maps = std::fs::read_to_string(format!("/proc/{}/maps", info.app_pid)).unwrap();
    assert!(app_maps.lines().any(|l| l.contains("/app/")), "{app_maps}");
    // Killing the app process is a crash the host learns from init, with the real signal.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(info.app_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = wait_until_async(Duration::from_secs(10), async || {
        m.info("honest")
            .await
            .is_ok_and(|i| i.restart_count == 1 && i.status == Status::Running)
    })
    .await;
    assert!(
        restarted,
        "no restart after the app died: {:?}",
        m.info("honest").await
    );
    assert_eq!(
        m.run("honest", "answer", Value::Null, None).await.unwrap(),
        json!(1)
    );
    m.destroy("honest").await.unwrap();
}
