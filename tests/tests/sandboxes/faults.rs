//! Faulty apps: panics, crashes, killed and crash-looping workers, a dying host.

use std::io::BufRead;
use std::time::Duration;

use e2e::prelude::*;
use sandbox::{AppSource, Level, SandboxError, SandboxSpec, Status};
use serde_json::{Value, json};
use testkit::ChildGuard;

async fn faulty(m: &sandbox::Manager, id: &str) -> sandbox::SandboxInfo {
    faulty_at(m, id, Level::Standard).await
}

async fn faulty_at(m: &sandbox::Manager, id: &str, level: Level) -> sandbox::SandboxInfo {
    let spec =
        SandboxSpec::new(AppSource::Library(built("faulty_app").await)).with_isolation(level);
    m.create(id, spec).await.unwrap()
}

/// What a failed call must have been.
type Expected = fn(&SandboxError) -> bool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_call_is_an_error_and_the_sandbox_keeps_serving() {
    let m = manager();
    faulty(&m, "panic-1").await;
    let cases: [(&str, Expected); 4] = [
        (
            "panic",
            |e| matches!(e, SandboxError::AppPanicked(msg) if msg == "deliberate panic"),
        ),
        (
            "fail",
            |e| matches!(e, SandboxError::AppError(msg) if msg == "deliberate failure"),
        ),
        ("bad_json", |e| e.to_string().contains("invalid JSON")),
        ("missing", |e| matches!(e, SandboxError::UnknownFunction(_))),
    ];
    for (function, expected) in cases {
        let err = m
            .run("panic-1", function, Value::Null, None)
            .await
            .unwrap_err();
        assert!(expected(&err), "{function}: {err:?} ({err})");
    }
    assert_eq!(
        m.run("panic-1", "answer", Value::Null, None).await.unwrap(),
        json!(1)
    );
    m.destroy("panic-1").await.unwrap();
}

async fn crash_with(call: &str, signal: &str, level: Level) {
    let m = manager();
    let id = format!("crash-{call}");
    let before = faulty_at(&m, &id, level).await;
    let err = m.run(&id, call, Value::Null, None).await.unwrap_err();
    match &err {
        SandboxError::Crashed {
            signal: Some(s), ..
        } => assert_eq!(s, signal, "{err}"),
        other => panic!("expected a crash with {signal}, got {other:?}"),
    }
    let restarted = wait_until_async(Duration::from_secs(5), async || {
        m.info(&id)
            .await
            .is_ok_and(|i| i.status == Status::Running && i.pid != before.pid)
    })
    .await;
    assert!(restarted, "sandbox was not restarted");
    assert_eq!(
        m.run(&id, "answer", Value::Null, None).await.unwrap(),
        json!(1)
    );
    assert_eq!(m.info(&id).await.unwrap().restart_count, 1);
    assert!(!alive(before.pid));
    m.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segfaulting_call_is_a_crash_with_sigsegv_and_the_sandbox_restarts() {
    crash_with("segfault", "SIGSEGV", Level::Standard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborting_call_is_a_crash_with_sigabrt_and_the_sandbox_restarts() {
    // At the default level the runner is pid 1 of its own pid namespace, where the kernel
    // ignores a signal it sends itself; the crash must still read as SIGABRT.
    crash_with("abort", "SIGABRT", Level::Standard).await;
    crash_with("abort", "SIGABRT", Level::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_times_out_without_blocking_other_requests() {
    let m = manager();
    faulty(&m, "slow-1").await;
    let slow = {
        let m = m.clone();
        tokio::spawn(async move {
            m.run("slow-1", "sleep", json!(1500), Some(Duration::from_secs(5)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    assert_eq!(
        m.run("slow-1", "answer", Value::Null, None).await.unwrap(),
        json!(1)
    );
    m.usage("slow-1").await.unwrap();
    m.workers("slow-1").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "requests waited behind a slow call"
    );
    let err = m
        .run(
            "slow-1",
            "sleep",
            json!(2000),
            Some(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::Timeout { .. }), "{err:?}");
    assert_eq!(slow.await.unwrap().unwrap(), json!(1500));
    m.destroy("slow-1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_restarted() {
    let m = manager();
    faulty(&m, "worker-1").await;
    let before = m.workers("worker-1").await.unwrap();
    let victim = before.workers[0].pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = wait_until_async(Duration::from_secs(5), async || {
        m.workers("worker-1").await.is_ok_and(|l| {
            l.workers.len() == 1 && l.workers[0].pid != victim && l.workers[0].restarts == 1
        })
    })
    .await;
    assert!(restarted, "{:?}", m.workers("worker-1").await);
    assert_eq!(m.usage("worker-1").await.unwrap().worker_restarts, 1);
    m.destroy("worker-1").await.unwrap();
}

/// A worker dies with the *thread* that started it (`PR_SET_PDEATHSIG`), and the runner's
/// serving threads come and go with the load: workers asked for while a call is in flight
/// are started for a serving thread that retires afterwards (it finishes when two others are
/// idle), and they must outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_outlive_the_runner_threads_that_started_them() {
    let m = manager();
    faulty(&m, "threads-1").await;
    let call = {
        let m = m.clone();
        tokio::spawn(async move {
            m.run(
                "threads-1",
                "sleep",
                json!(50),
                Some(Duration::from_secs(5)),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Starting 30 processes takes longer than the call has left.
    let added = m.spawn_workers("threads-1", 30).await.unwrap();
    assert_eq!(call.await.unwrap().unwrap(), json!(50));
    let pids: Vec<i32> = added.workers.iter().map(|w| w.pid).collect();
    // Let the serving thread retire and any killed worker be noticed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = m.workers("threads-1").await.unwrap();
    assert_eq!(after.workers.len(), 31, "{after:?}");
    assert_eq!(
        after.restarts, 0,
        "a worker died with its thread: {after:?}"
    );
    assert_eq!(
        after.workers.iter().map(|w| w.pid).collect::<Vec<_>>(),
        pids,
        "workers were replaced"
    );
    assert_eq!(m.usage("threads-1").await.unwrap().worker_restarts, 0);
    m.destroy("threads-1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_worker_marks_the_sandbox_crashed() {
    let m = manager();
    let info = faulty(&m, "loop-1").await;
    let work = work_dir(&info);
    std::fs::write(work.join("crashloop"), b"").unwrap();
    let crashed = wait_until_async(Duration::from_secs(10), async || {
        m.info("loop-1")
            .await
            .is_ok_and(|i| i.status == Status::Crashed)
    })
    .await;
    assert!(crashed, "{:?}", m.info("loop-1").await);
    let err = m
        .run("loop-1", "answer", Value::Null, None)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::Crashed { .. }), "{err:?}");
    // An explicit restart brings it back. Crashed, it was stopped: its disk (a tmpfs of its
    // runner's mount namespace) went with it, and the trigger with the disk.
    assert!(
        !work.join("crashloop").exists(),
        "a crashed sandbox kept running"
    );
    m.restart("loop-1").await.unwrap();
    assert_eq!(
        m.run("loop-1", "answer", Value::Null, None).await.unwrap(),
        json!(1)
    );
    m.destroy("loop-1").await.unwrap();
}

#[test]
fn killing_the_host_kills_its_runners_within_a_second() {
    let lib = e2e::apps::block_on(built("sandbox_app"));
    let state = scratch();
    // Killed however the test ends, so a failed assertion leaks no process.
    let mut holder = ChildGuard::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_e2e-holder"))
            .arg(&lib)
            // Not the scratch directory itself: the store beside the state directory
            // (`sandboxes.libs`) must be inside it too, since a killed host removes nothing.
            .arg(state.path().join("sandboxes"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(holder.child().stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let runner: i32 = line
        .trim()
        .strip_prefix("runner ")
        .unwrap()
        .parse()
        .unwrap();
    let workers = tree(runner);
    assert!(workers.len() >= 2 && alive(runner));
    let holder_pid = holder.pid();
    assert!(
        holder
            .stop_with(libc::SIGKILL, Duration::from_secs(5))
            .is_some()
    );
    wait_until(Duration::from_secs(1), || {
        workers.iter().all(|&p| !alive(p))
    });
    for pid in workers {
        assert!(!alive(pid), "pid {pid} outlived its host");
    }
    // A killed host cannot remove its sandboxes' cgroups; do it for it, retrying while the
    // kernel still counts the just-killed processes in them (rmdir is EBUSY until then).
    let prefix = format!("sandbox-held-{holder_pid}-");
    let removed = wait_until(Duration::from_secs(5), || {
        testkit::cgroup::named(&prefix, 4)
            .iter()
            .all(|dir| std::fs::remove_dir(dir).is_ok())
    });
    assert!(
        removed,
        "cgroups of the killed host are left: {:?}",
        testkit::cgroup::named(&prefix, 4)
    );
}
