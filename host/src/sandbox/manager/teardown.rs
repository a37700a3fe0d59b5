//! Teardown: killing a sandbox's processes (cgroup first, then the tree) and removing what
//! it left.
use super::*;

/// Kills the sandbox's processes (cgroup first, then the runner's tree), waits until the
/// runner is reaped, removes the cgroup and the directory.
pub(super) async fn teardown(sb: &Sandbox) {
    let cgroup = sb.cgroup.lock().unwrap().take();
    let mut emptied = false;
    if let Some(cg) = &cgroup {
        let cg = Arc::clone(cg);
        emptied = matches!(
            tokio::task::spawn_blocking(move || cg.kill_all()).await,
            Ok(Ok(()))
        );
    }
    if let Some(live) = sb.live.write().await.take() {
        // An empty cgroup means the runner and everything it started are dead (no process
        // leaves a cgroup on its own): nothing to kill, and no number to kill by, since the
        // runner may be reaped already.
        if !emptied {
            stop_runner(Arc::clone(&live.process)).await;
        }
        let mut exit = live.exit.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|e| e.is_some())).await;
    }
    if let Some(cg) = cgroup.and_then(|cg| Arc::try_unwrap(cg).ok()) {
        let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
    }
    let _ = std::fs::remove_dir_all(&sb.dir);
    let store = sb.lib_store();
    let shas: std::collections::HashSet<String> = sb
        .versions
        .lock()
        .unwrap()
        .iter()
        .map(|v| v.sha256.clone())
        .collect();
    for sha in shas {
        library::release(&store, &sha);
    }
}

/// SIGKILLs a runner's whole tree.
pub(super) async fn stop_runner(runner: Arc<procfs::Process>) {
    let _ = tokio::task::spawn_blocking(move || kill_tree(&runner)).await;
}

/// Kills every process in the tree under the runner, then the runner itself. Repeats while the tree
/// changes, since a process may fork between the scan and the kill; the runner, a subreaper,
/// adopts orphans, so they stay visible.
///
/// Does nothing once the runner has exited: it may have been reaped, and its number may name
/// another process by now. (Without pidfds, on kernels before 5.3, it cannot tell.)
pub(super) fn kill_tree(runner: &procfs::Process) {
    if runner.exited() {
        return;
    }
    let pid = runner.pid();
    for _ in 0..50 {
        let tree = procfs::tree(pid);
        let others: Vec<i32> = tree
            .iter()
            .skip(1)
            .filter(|p| !p.zombie)
            .map(|p| p.pid)
            .collect();
        if others.is_empty() {
            break;
        }
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        for p in others {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    runner.kill();
}
