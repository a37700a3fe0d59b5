//! Regressions of fixed defects: a restart that cannot start its runner, a reload the host
//! gave up on, an app's own child processes, a destroy racing an automatic restart.

use std::time::{Duration, Instant};

use e2e::manager::create_app;
use e2e::prelude::*;
use sandbox::{Level, Limits, Manager, ReloadSource, SandboxError, SandboxInfo, Status};
use serde_json::{Value, json};
use testkit::proc::{processes_of, uid_of};

async fn create(m: &Manager, id: &str, app: &str) -> SandboxInfo {
    create_app(m, id, app, Limits::default(), Level::Standard).await
}

/// A restart whose runner cannot start (its library copy is gone) used to return its error
/// with the sandbox left `restarting`; it ends `crashed`, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_cannot_start_the_runner_ends_crashed() {
    let m = manager();
    let id = "restart-fails";
    let info = create(&m, id, "faulty_app").await;
    // The copy in the sandbox's app dir is a hard link of the store's file: removing it makes
    // the next load fail, and nothing else.
    std::fs::remove_file(&info.app.path).unwrap();
    let err = m.restart(id).await.unwrap_err();
    // At once: `restart` itself ends the `restarting` (it used to return leaving it, with no
    // reason).
    let after = m.info(id).await.unwrap();
    assert_eq!(
        after.status,
        Status::Crashed,
        "restart failed ({err}) and left {after:?}"
    );
    let reason = after.crash_reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("restart failed: "),
        "crash reason {reason:?} (restart error: {err})"
    );
    // The failed runner's own watcher then counts its death as a crash and retries; however
    // that goes, the sandbox ends crashed, not restarting.
    let ended = wait_until_async(Duration::from_secs(10), async || {
        m.info(id).await.is_ok_and(|i| i.status == Status::Crashed)
    })
    .await;
    assert!(ended, "{:?}", m.info(id).await);
    m.destroy(id).await.unwrap();
}

/// A reload to the slow-restoring app whose state hand-over takes `restore_ms` against a
/// 300 ms reload timeout: whether the app process refuses the swap itself (`restore_ms` under
/// the host's own deadline, the timeout + 1 s) or the host gives up first, the old version
/// (the demo app, answering 41) serves afterwards, and the host says so — never the new
/// code (answering 2) while the host records version 1.
async fn a_reload_past_its_timeout_leaves_the_old_version(id: &str, restore_ms: u64) {
    let timeout = Duration::from_millis(300);
    let host_gives_up = Duration::from_millis(restore_ms) > timeout + Duration::from_secs(1);
    let m = manager_with(|c| c.reload_timeout = timeout);
    let new = built("slow_state_app").await;
    let before = create(&m, id, "sandbox_app").await;
    assert_eq!(
        m.run(id, "answer", Value::Null, None).await.unwrap(),
        json!(41)
    );
    std::fs::write(work_dir(&before).join("restore_ms"), restore_ms.to_string()).unwrap();

    let started = Instant::now();
    let err = m
        .reload(id, ReloadSource::Library(new))
        .await
        .expect_err("a reload past its timeout succeeded");
    if host_gives_up {
        assert!(matches!(err, SandboxError::Timeout { .. }), "{err:?}");
        // The host restarts the sandbox on the version it records.
        let restarted = wait_until_async(Duration::from_secs(10), async || {
            m.info(id)
                .await
                .is_ok_and(|i| i.status == Status::Running && i.pid != before.pid)
        })
        .await;
        assert!(
            restarted,
            "the host gave up on the reload but did not restart the sandbox: {:?}",
            m.info(id).await
        );
    } else {
        assert!(matches!(err, SandboxError::ReloadRefused(_)), "{err:?}");
    }

    // Until well past the moment the slow hand-over ends (when a late swap would happen),
    // every answer is the old version's and the host says version 1.
    let window = started + Duration::from_millis(restore_ms + 1000);
    let give_up = window + Duration::from_secs(10);
    let mut answered = 0;
    while (Instant::now() < window || answered == 0) && Instant::now() < give_up {
        let said = m.info(id).await.unwrap().app.version;
        match m.run(id, "answer", Value::Null, None).await {
            Ok(answer) => {
                let says = m.info(id).await.unwrap().app.version;
                assert_eq!(
                    (said, answer.clone(), says),
                    (1, json!(41), 1),
                    "after the failed reload ({err}) the host says version {said}/{says} \
                     and the sandbox answers {answer}"
                );
                answered += 1;
            }
            // Only while the host restarts it.
            Err(e) => assert!(host_gives_up, "a call after a refused reload: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered > 0, "no call answered after the reload");
    let info = m.info(id).await.unwrap();
    assert_eq!(info.app.version, 1, "{info:?}");
    assert_eq!(
        info.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1],
        "the refused version is in the history"
    );
    m.destroy(id).await.unwrap();
}

/// The app process refuses to swap in a version whose state hand-over ended past the
/// reload's deadline (it used to swap, and answer the reload as done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_state_hand_over_ends_past_its_deadline_is_refused() {
    a_reload_past_its_timeout_leaves_the_old_version("late-restore", 800).await;
}

/// The host gives up on a reload, then restarts the sandbox on the old version: the app
/// process finishing its hand-over later must not swap the new code in under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_the_host_gave_up_on_never_serves_the_new_version() {
    a_reload_past_its_timeout_leaves_the_old_version("abandoned-restore", 3000).await;
}

/// The app's own child processes are its own to wait for: nothing else in its process reaps
/// them (the runner's reaper, `waitpid(-1)`, used to share the app's process, so
/// `Command::output` failed with ECHILD).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_can_wait_for_its_own_children() {
    let m = manager();
    let id = "children";
    create(&m, id, "faulty_app").await;
    for i in 0..20 {
        match m.run(id, "child", Value::Null, None).await {
            Ok(v) => assert_eq!(v, json!("ok"), "call {i}"),
            Err(e) => panic!("call {i}: {e:?}"),
        }
    }
    m.destroy(id).await.unwrap();
}

/// A destroy racing the automatic restart after the app process was killed used to leave the
/// restarted runner behind (without a cgroup, its directory gone) for as long as anything
/// still held the sandbox: here a reload from a crate, whose build holds it for a while. Every
/// process of the sandbox runs as the sandbox's own uid (a root host gives each its own), so
/// after the destroy no process may have it, and that must not wait for the reload to end.
/// The rounds destroy at once, once the old init is reaped (the host is about to restart it),
/// once the sandbox is `restarting`, or once the restarted runner exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroy_racing_an_automatic_restart_leaves_no_process() {
    if !is_root() {
        skip("needs a root host (a uid of the sandbox's own)");
        return;
    }
    let m = manager();
    let mut hit = [0; 4];
    for round in 0..24 {
        let id = format!("race-{round}");
        let info = create(&m, &id, "faulty_app").await;
        let uid = uid_of(info.app_pid).unwrap();
        assert!(uid >= sandbox::manager::SANDBOX_ID_BASE, "uid {uid}");
        let before = tree(info.pid);
        assert!(before.contains(&info.app_pid), "{before:?}");
        // Holds the sandbox through its build (and fails in the end: the sandbox is gone).
        let mut holder = {
            let m = m.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let reload = m.reload(&id, ReloadSource::Crate(test_app("faulty_app")));
                // Not found: it started after the destroy, and held nothing.
                !matches!(reload.await, Err(SandboxError::NotFound(_)))
            })
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(info.app_pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let way = round % 4;
        while way > 0 && Instant::now() < deadline {
            let i = m.info(&id).await.unwrap();
            let started = match way {
                1 => i.status == Status::Restarting,
                2 => processes_of(uid).iter().any(|p| !before.contains(p)),
                // The old init reaped: the host is about to start the new one.
                _ => !std::path::Path::new(&format!("/proc/{}", info.pid)).exists(),
            };
            if started {
                hit[way] += 1;
                break;
            }
            if i.status == Status::Running && i.pid != info.pid && i.pid != 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        if way == 0 {
            hit[0] += 1;
        }
        m.destroy(&id).await.unwrap();
        // Every process of the sandbox, the restarted runner included, goes with the destroy,
        // whatever still holds the sandbox: the reload is still building (or has just failed
        // because of this very destroy), so nothing here waits for it to let go. (Before,
        // this also compared when the reload ended; a destroy that kills the restart makes
        // the reload fail at once, so that order says nothing any more.)
        let clean = wait_until_async(Duration::from_secs(5), async || {
            processes_of(uid).is_empty()
        })
        .await;
        let left = processes_of(uid);
        for &pid in &left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // The directory goes in the background (a v1 cgroup's rmdir may be retried a while).
        // A restart still in flight when the destroy came removes it again when it ends (its
        // runner may have created the log after the destroy's walk), and `settled` waits for
        // that; so does a reload that linked its version in after the walk, once it has
        // failed, which the holder's end says.
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut holder).await;
        m.settled().await;
        let kept: Vec<_> = std::fs::read_dir(&info.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            clean && !info.dir.exists(),
            "round {round}: after destroy, processes {left:?} of the sandbox's uid {uid} are \
             alive; its dir exists: {} (holding {kept:?})",
            info.dir.exists()
        );
        for pid in before {
            assert!(!alive(pid), "round {round}: pid {pid} outlived the destroy");
        }
        assert!(m.info(&id).await.is_err());
    }
    println!("destroyed at once / restarting / restarted runner seen / old init reaped: {hit:?}");
}
