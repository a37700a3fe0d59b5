//! Managers on private state directories, sandboxes of the test apps, and what the host can
//! see of a sandbox from outside.

use std::ops::Deref;
use std::path::PathBuf;

use sandbox::{Manager, ManagerConfig, SandboxInfo, SandboxSpec};
use tempfile::TempDir;

use crate::apps::{built, compiler};
use crate::bins::host;

/// A manager whose sandboxes live in a fresh scratch directory. Dropping it destroys every
/// sandbox it still has (also when the test panics), then removes the directory.
#[derive(Debug)]
pub struct Managed {
    /// The manager (also reached through `Deref`).
    pub manager: Manager,
    /// The scratch directory: the state directory is its `sandboxes`.
    pub state: TempDir,
}

impl Deref for Managed {
    type Target = Manager;
    fn deref(&self) -> &Manager {
        &self.manager
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        let m = self.manager.clone();
        // A fresh runtime on a fresh thread: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime")
                .block_on(m.destroy_all());
        })
        .join();
    }
}

/// A manager on the host binary with the tests' compiler, in a fresh scratch directory.
pub fn manager() -> Managed {
    manager_with(|_| {})
}

/// [`manager`] with `tweak` applied to the configuration (timeouts, pool size, runner).
pub fn manager_with(tweak: impl FnOnce(&mut ManagerConfig)) -> Managed {
    let state = testkit::scratch();
    let mut config = ManagerConfig::new(host());
    config.state_dir = state.path().join("sandboxes");
    config.compiler = compiler();
    tweak(&mut config);
    Managed {
        manager: Manager::new(config).unwrap(),
        state,
    }
}

/// `spec` with its cgroup parent from `$SANDBOX_TEST_CGROUP_PARENT` (a delegated cgroup v2
/// subtree when not root; unset: the detected default).
pub fn in_test_cgroup(mut spec: SandboxSpec) -> SandboxSpec {
    spec.cgroup_parent = testkit::cgroup::cgroup_parent();
    spec
}

/// Creates sandbox `id` of the test app `app` at `level`, in the tests' cgroup parent.
pub async fn create_app(
    m: &Manager,
    id: &str,
    app: &str,
    limits: sandbox::Limits,
    level: sandbox::Level,
) -> SandboxInfo {
    let mut spec = in_test_cgroup(
        SandboxSpec::new(sandbox::AppSource::Library(built(app).await)).with_isolation(level),
    );
    spec.limits = limits;
    m.create(id, spec)
        .await
        .unwrap_or_else(|e| panic!("create {id} ({app}): {e}"))
}

/// Creates sandbox `id` of the hostile test app with `limits` at `level`, in the tests'
/// cgroup parent.
pub async fn hostile(
    m: &Manager,
    id: &str,
    limits: sandbox::Limits,
    level: sandbox::Level,
) -> SandboxInfo {
    create_app(m, id, "hostile_app", limits, level).await
}

/// The sandbox's working directory as the host can reach it: through the app process's root
/// (`/proc/PID/root/work`; init is not dumpable) when the sandbox has a root of its own, else
/// its host directory.
pub fn work_dir(info: &SandboxInfo) -> PathBuf {
    let own_root = info.isolation["mechanisms"].as_array().is_some_and(|m| {
        m.iter()
            .any(|e| e["mechanism"] == "root" && e["applied"] == true)
    });
    if own_root {
        PathBuf::from(format!("/proc/{}/root/work", info.app_pid))
    } else {
        info.dir.join("work")
    }
}

/// The host pid of the process that the pid namespace of `runner` numbers `ns_pid`.
///
/// Found from the host side by scanning `/proc`: a process in the same pid namespace as the
/// runner whose innermost pid (last `NSpid` field) is `ns_pid`. It does not rely on the
/// process still being in the runner's tree, so a process that escaped the tree is found too.
pub fn host_pid_in_sandbox(runner: i32, ns_pid: i32) -> Option<i32> {
    let ns_of = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let runner_ns = ns_of(runner)?;
    let innermost = |pid: i32| -> Option<i32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        testkit::proc::status_field(&status, "NSpid")
            .split_whitespace()
            .last()?
            .parse()
            .ok()
    };
    testkit::proc::all_pids()
        .into_iter()
        .find(|&pid| innermost(pid) == Some(ns_pid) && ns_of(pid).as_ref() == Some(&runner_ns))
}

/// The name a sandbox's cgroups carry: its directory's name with dots made dashes.
pub fn cgroup_name(info: &SandboxInfo) -> String {
    info.dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "-")
}
