//! Teardown, in two halves: killing a sandbox's processes (on the caller's clock: `destroy`
//! returns when they are dead), then removing what it left (cgroup, directory, library
//! links) in the background.
use super::*;

/// Kills every process of the sandbox and waits until the runner is reaped.
///
/// A runner that is the init of its own pid namespace is simply killed: the kernel kills
/// every other process of the namespace and reports init's exit only once they are all
/// reaped (`zap_pid_ns_processes`), so its reaped exit means the whole sandbox is dead, with
/// no cgroup to walk. Otherwise (or if that did not finish in time) the cgroup is emptied,
/// then the runner's tree is killed.
pub(super) async fn kill_processes(sb: &Sandbox) {
    let live = sb.live.write().await.take();
    if let Some(live) = &live
        && sb.pid_ns.load(Ordering::Acquire)
    {
        live.process.kill();
        if reaped(live, Duration::from_secs(2)).await {
            return;
        }
    }
    let mut emptied = false;
    if let Some(cg) = sb.cgroup() {
        emptied = matches!(
            tokio::task::spawn_blocking(move || cg.kill_all()).await,
            Ok(Ok(()))
        );
    }
    if let Some(live) = live {
        // An empty cgroup means the runner and everything it started are dead (no process
        // leaves a cgroup on its own): nothing to kill, and no number to kill by, since the
        // runner may be reaped already.
        if !emptied {
            stop_runner(Arc::clone(&live.process)).await;
        }
        reaped(&live, Duration::from_secs(2)).await;
    }
}

/// Waits up to `within` until the runner's watcher has reaped it.
async fn reaped(live: &Live, within: Duration) -> bool {
    let mut exit = live.exit.clone();
    tokio::time::timeout(within, exit.wait_for(|e| e.is_some()))
        .await
        .is_ok()
}

/// Starts removing what the dead sandbox left: its cgroup (a v1 `rmdir` is retried while
/// the kernel still offlines it), its directory and its links into the library store.
pub(super) fn cleanup(sb: &Sandbox) -> tokio::task::JoinHandle<()> {
    let cgroup = sb.cgroup.lock().unwrap().take();
    let dir = sb.dir.clone();
    let store = sb.lib_store();
    let linked = !sb.versions.lock().unwrap().is_empty();
    tokio::task::spawn_blocking(move || {
        if let Some(cg) = cgroup.and_then(|cg| Arc::try_unwrap(cg).ok()) {
            // Empty already, unless a process escaped the kill above: then this kills it.
            let _ = cg.kill_all();
            let _ = cg.remove();
        }
        let _ = std::fs::remove_dir_all(&dir);
        if linked {
            library::release(&store);
        }
    })
}

impl Manager {
    /// After a (re)start that a destroy overtook, once its runner is dead: the destroy's
    /// cleanup may have emptied the sandbox's directory while that runner still wrote into
    /// it (its log), and a file made between the walk and the `rmdir` keeps the directory.
    /// Removes it again, as part of that destroy (`settled` waits for it). A reload that a
    /// destroy overtook after it linked its version in calls this too.
    pub(super) fn clean_after_raced_start(&self, sb: &Sandbox) {
        let dir = sb.dir.clone();
        let handle = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&dir);
        });
        self.inner.cleanups.lock().unwrap().push(handle);
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
