//! cgroups on the real kernel: create, limits written, a child entering before exec, usage
//! counters, kill_all (including processes forked inside), remove.
//!
//! Needs root (v1) or a delegated v2 subtree; otherwise each test prints why it is skipped.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{cs, reap, spawn_exec, unique_id};
use isolation::cgroups::{CgroupSystem, CgroupVersion};
use isolation::namespaces::{ChildError, ChildStep};
use isolation::{Cgroup, CgroupEntry, Limits};

/// The detected system, under `$SANDBOX_TEST_CGROUP_PARENT` when set (a delegated v2 subtree
/// for a non-root run). `None` (the test is skipped) only when not root and nothing usable is
/// delegated; as root, or with a parent given, no cgroups is a failure.
fn system() -> Option<CgroupSystem> {
    let parent = common::cgroup_parent();
    match CgroupSystem::detect(parent.as_deref()) {
        Ok(s) => Some(s),
        Err(e) if !common::root() && parent.is_none() => {
            common::skip(&format!("no usable cgroups here: {e}"));
            None
        }
        Err(e) => panic!("no cgroups as root or under {parent:?}: {e}"),
    }
}

fn create(sys: &CgroupSystem, tag: &str, limits: &Limits) -> Option<Cgroup> {
    match sys.create(&unique_id(tag), limits) {
        Ok(c) => Some(c),
        Err(e) if !common::root() && common::cgroup_parent().is_none() => {
            common::skip(&format!("not root and cgroup creation failed: {e}"));
            None
        }
        Err(e) => panic!("cgroup create failed: {e}"),
    }
}

fn enter(entry: &CgroupEntry) -> Result<(), ChildError> {
    // SAFETY: called in the fork-like child only; raw writes.
    unsafe { entry.enter_from_child() }.map_err(|errno| ChildError {
        step: ChildStep::CgroupEnter,
        errno,
        index: 0,
    })
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap().trim().to_string()
}

#[test]
fn lifecycle_limits_enter_usage_kill_remove() {
    let Some(sys) = system() else { return };
    let limits = Limits {
        max_memory: Some(64 << 20),
        max_processes: Some(16),
        cpu: Some(0.5),
        ..Limits::default()
    };
    let Some(cg) = create(&sys, "life", &limits) else {
        return;
    };
    eprintln!("{}", cg.describe());
    assert!(cg.report_entry().applied, "{}", cg.report_entry().detail);

    // Limits are in the files.
    let paths = cg.paths();
    let find = |f: &str| {
        paths
            .iter()
            .map(|p| p.join(f))
            .find(|p| p.exists())
            .unwrap()
    };
    match sys.version() {
        CgroupVersion::V1 => {
            assert_eq!(
                read(&find("memory.limit_in_bytes")),
                (64u64 << 20).to_string()
            );
            assert_eq!(read(&find("pids.max")), "16");
            assert_eq!(read(&find("cpu.cfs_quota_us")), "50000");
            assert_eq!(read(&find("cpu.cfs_period_us")), "100000");
        }
        CgroupVersion::V2 => {
            assert_eq!(read(&find("memory.max")), (64u64 << 20).to_string());
            assert_eq!(read(&find("pids.max")), "16");
            assert_eq!(read(&find("cpu.max")), "50000 100000");
        }
    }

    // A child enters before exec; the shell forks two more inside.
    let argv = [cs("/bin/sh"), cs("-c"), cs("sleep 30 & sleep 30 & wait")];
    let argv: Vec<&std::ffi::CStr> = argv.iter().map(|c| c.as_c_str()).collect();
    let entry = cg.open_entry().unwrap();
    // SAFETY: `enter` only makes raw write(2) calls.
    let pid = unsafe { spawn_exec(0, &argv, || enter(&entry)) };
    wait_for("3 processes in the cgroup", || {
        cg.usage().unwrap().procs.len() == 3
    });
    let u = cg.usage().unwrap();
    eprintln!("usage: {u:?}");
    assert!(u.procs.contains(&pid), "{u:?}");
    assert_eq!(u.pids, Some(3));
    assert!(u.memory_bytes.unwrap() > 0, "{u:?}");
    assert!(u.cpu_time_us.is_some(), "{u:?}");
    assert_eq!(u.oom_kills.unwrap_or(0), 0);

    cg.kill_all().unwrap();
    let status = reap(pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "{status:#x}"
    );
    assert!(cg.usage().unwrap().procs.is_empty());
    cg.remove().unwrap();
    for p in &paths {
        assert!(!p.exists(), "{} still exists", p.display());
    }
}

#[test]
fn pids_limit_is_enforced() {
    let Some(sys) = system() else { return };
    let limits = Limits {
        max_processes: Some(3),
        ..Limits::default()
    };
    let Some(cg) = create(&sys, "pids", &limits) else {
        return;
    };
    let script = "exec 2>/dev/null; for i in 1 2 3 4 5 6; do sleep 30 & done; wait";
    let argv = [cs("/bin/sh"), cs("-c"), cs(script)];
    let argv: Vec<&std::ffi::CStr> = argv.iter().map(|c| c.as_c_str()).collect();
    let entry = cg.open_entry().unwrap();
    // SAFETY: `enter` only makes raw write(2) calls.
    let pid = unsafe { spawn_exec(0, &argv, || enter(&entry)) };
    wait_for("pids.current to reach the limit", || {
        cg.usage().unwrap().pids == Some(3)
    });
    std::thread::sleep(Duration::from_millis(100));
    let u = cg.usage().unwrap();
    assert_eq!(u.pids, Some(3), "{u:?}");
    assert!(u.procs.len() <= 3, "{u:?}");
    cg.kill_all().unwrap();
    reap(pid);
    cg.remove().unwrap();
}

#[test]
fn memory_limit_oom_kills_and_is_counted() {
    let Some(sys) = system() else { return };
    let limits = Limits {
        max_memory: Some(16 << 20),
        ..Limits::default()
    };
    let Some(cg) = create(&sys, "oom", &limits) else {
        return;
    };
    // `tail` keeps the (endless, newline-free) last line in memory.
    let argv = [cs("/usr/bin/tail"), cs("/dev/zero")];
    let argv: Vec<&std::ffi::CStr> = argv.iter().map(|c| c.as_c_str()).collect();
    let entry = cg.open_entry().unwrap();
    // SAFETY: `enter` only makes raw write(2) calls.
    let pid = unsafe { spawn_exec(0, &argv, || enter(&entry)) };
    let status = reap(pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "{status:#x}"
    );
    let u = cg.usage().unwrap();
    eprintln!("after OOM: {u:?}");
    assert!(u.oom_kills.unwrap_or(0) >= 1, "{u:?}");
    assert!(u.memory_peak_bytes.unwrap_or(0) >= 15 << 20, "{u:?}");
    cg.remove().unwrap();
}

#[test]
fn parent_side_add_pid_and_drop_cleans_up() {
    let Some(sys) = system() else { return };
    let Some(cg) = create(&sys, "drop", &Limits::default()) else {
        return;
    };
    let argv = [cs("/bin/sleep"), cs("30")];
    let argv: Vec<&std::ffi::CStr> = argv.iter().map(|c| c.as_c_str()).collect();
    // SAFETY: nothing runs in the child before execve.
    let pid = unsafe { spawn_exec(0, &argv, || Ok(())) };
    cg.open_entry().unwrap().add_pid(pid).unwrap();
    assert_eq!(cg.usage().unwrap().procs, vec![pid]);
    let paths = cg.paths();
    drop(cg); // kill + remove
    let status = reap(pid);
    assert!(libc::WIFSIGNALED(status), "{status:#x}");
    for p in &paths {
        assert!(!p.exists(), "{} still exists", p.display());
    }
}

#[test]
fn shared_system_is_detected_once() {
    if system().is_none() {
        return;
    }
    let parent = common::cgroup_parent();
    let a = CgroupSystem::shared(parent.as_deref()).unwrap();
    let b = CgroupSystem::shared(parent.as_deref()).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    eprintln!("{}", a.describe());
}

#[test]
fn v2_kill_and_remove_on_the_unified_hierarchy() {
    // On a hybrid machine the v2 hierarchy has no memory/pids/cpu, but cgroup.procs,
    // cgroup.kill, cpu.stat and rmdir are all real: exercise the v2 code path on it.
    let unified = Path::new("/sys/fs/cgroup/unified");
    let c = std::ffi::CString::new("/sys/fs/cgroup/unified").unwrap();
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    let is_v2 =
        unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type == libc::CGROUP2_SUPER_MAGIC;
    let sys = if common::root() && is_v2 {
        CgroupSystem::v2_at(unified, "0::/\n", None).unwrap()
    } else if let Ok(sys) = CgroupSystem::detect(common::cgroup_parent().as_deref()) {
        if sys.version() != CgroupVersion::V2 {
            common::skip("no writable v2 hierarchy");
            return;
        }
        sys
    } else {
        common::skip("no writable v2 hierarchy");
        return;
    };
    eprintln!("{}", sys.describe());
    let Some(cg) = create(
        &sys,
        "v2",
        &Limits {
            max_memory: Some(64 << 20),
            ..Limits::default()
        },
    ) else {
        return;
    };
    eprintln!("{}", cg.describe());
    let argv = [cs("/bin/sh"), cs("-c"), cs("sleep 30 & sleep 30 & wait")];
    let argv: Vec<&std::ffi::CStr> = argv.iter().map(|c| c.as_c_str()).collect();
    let entry = cg.open_entry().unwrap();
    // SAFETY: `enter` only makes raw write(2) calls.
    let pid = unsafe { spawn_exec(0, &argv, || enter(&entry)) };
    wait_for("3 processes in the v2 cgroup", || {
        cg.usage().unwrap().procs.len() == 3
    });
    let u = cg.usage().unwrap();
    eprintln!("usage: {u:?}");
    assert!(u.cpu_time_us.is_some(), "{u:?}");
    cg.kill_all().unwrap();
    let status = reap(pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "{status:#x}"
    );
    let paths = cg.paths();
    cg.remove().unwrap();
    assert!(!paths[0].exists());
}
