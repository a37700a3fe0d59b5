//! Tenants that cannot hurt each other (issue 23): each sandbox's uid is unique on the
//! machine, across daemons; a sandbox the host calls crashed has nothing left running; a
//! limit the host cannot give is refused, never lowered in silence.

use std::collections::HashSet;
use std::time::Duration;

use e2e::manager::create_app;
use e2e::prelude::*;
use sandbox::{Level, Limits, SandboxError, Status};
use serde_json::Value;
use testkit::proc::uid_of;

/// Two daemons on one machine (here two managers in one process, each as a daemon would be)
/// used to derive uids from the daemon's pid plus a counter, and so handed out the same uid:
/// per-user kernel limits (inotify, user namespaces, message queues, `RLIMIT_NPROC`) were then
/// shared between their tenants. Every uid must be unique, with or without prepared runners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_never_hand_out_one_uid() {
    if !is_root() {
        skip("needs a root host (a uid of each sandbox's own)");
        return;
    }
    for pool in [0, 2] {
        let a = manager_with(|c| c.pool_size = pool);
        let b = manager_with(|c| c.pool_size = pool);
        a.warm_pool().await;
        b.warm_pool().await;
        let mut uids = HashSet::new();
        for i in 0..3 {
            for (m, name) in [(&a, "a"), (&b, "b")] {
                let id = format!("uid-{name}-{pool}-{i}");
                let info =
                    create_app(m, &id, "sandbox_app", Limits::default(), Level::Standard).await;
                let uid = uid_of(info.app_pid).expect("the app process's uid");
                assert!(uid >= sandbox::manager::SANDBOX_ID_BASE, "uid {uid}");
                assert!(
                    uids.insert(uid),
                    "uid {uid} handed out twice (pool {pool}): {uids:?}"
                );
            }
        }
    }
}

/// An app that makes its own workers die past the restart intensity gets the sandbox marked
/// `crashed`; its init and app process used to stay alive (and could burn CPU) while `usage`,
/// the detector and the metrics stopped reading it. Crashed in the books is stopped in the
/// kernel: no process of it remains, and an explicit restart brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_sandbox_has_nothing_left_running() {
    let m = manager();
    let info = create_app(
        &m,
        "crashed-1",
        "faulty_app",
        Limits::default(),
        Level::Standard,
    )
    .await;
    let work = work_dir(&info);
    std::fs::write(work.join("crashloop"), b"").unwrap();
    let crashed = wait_until_async(Duration::from_secs(15), async || {
        m.info("crashed-1")
            .await
            .is_ok_and(|i| i.status == Status::Crashed)
    })
    .await;
    assert!(crashed, "{:?}", m.info("crashed-1").await);
    let gone = wait_until(Duration::from_secs(5), || {
        !alive(info.pid) && !alive(info.app_pid)
    });
    assert!(
        gone,
        "crashed, but init {} or the app process {} still runs: {:?}",
        info.pid,
        info.app_pid,
        tree(info.pid)
    );
    // Its disk was a tmpfs of the runner's own mount namespace: gone with it, and with it
    // the trigger, so the restarted runner's workers live.
    m.restart("crashed-1").await.unwrap();
    assert_eq!(
        m.run("crashed-1", "answer", Value::Null, None)
            .await
            .unwrap(),
        serde_json::json!(1)
    );
    m.destroy("crashed-1").await.unwrap();
}

/// A prepared runner's hard limits are the daemon's: `--max-open-files 40000` on a pooled
/// create used to give the sandbox the daemon's 20 000 and succeed. Above the host's hard
/// limit, a create is refused with the limit named, pooled or not; at the limit it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_above_the_hosts_hard_limit_is_refused_not_lowered() {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a valid struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
    if now.rlim_max == libc::RLIM_INFINITY {
        skip("RLIMIT_NOFILE has no hard limit here");
        return;
    }
    for pool in [0, 1] {
        let m = manager_with(|c| c.pool_size = pool);
        m.warm_pool().await;
        let above = Limits {
            max_open_files: Some(now.rlim_max + 1),
            ..Limits::default()
        };
        let spec = in_test_cgroup(sandbox::SandboxSpec::new(sandbox::AppSource::Library(
            built("sandbox_app").await,
        )));
        let err = m
            .create(
                "nofile-above",
                sandbox::SandboxSpec {
                    limits: above,
                    ..spec.clone()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, SandboxError::InvalidLimits(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("--max-open-files") && text.contains(&now.rlim_max.to_string()),
            "{text}"
        );
        let at = Limits {
            max_open_files: Some(now.rlim_max),
            ..Limits::default()
        };
        let info = m
            .create("nofile-at", sandbox::SandboxSpec { limits: at, ..spec })
            .await
            .unwrap();
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", info.app_pid)).unwrap();
        let row = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        assert!(
            row.split_whitespace()
                .filter(|w| *w == now.rlim_max.to_string())
                .count()
                == 2,
            "pool {pool}: {row}"
        );
    }
}
