use std::fs;
use std::sync::Arc;

use super::super::testing::FakeCgroupFs;
use super::super::{CgroupSystem, CgroupUsage, CgroupVersion};
use super::*;

fn fake_root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    fs::write(
        r.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma",
    )
    .unwrap();
    fs::write(r.join("cgroup.subtree_control"), "cpu memory pids").unwrap();
    fs::write(r.join("cgroup.procs"), "1\n").unwrap();
    let scope = r.join("user.slice/app.scope");
    fs::create_dir_all(&scope).unwrap();
    fs::write(scope.join("cgroup.controllers"), "cpu memory pids").unwrap();
    fs::write(scope.join("cgroup.subtree_control"), "").unwrap();
    fs::write(scope.join("cgroup.procs"), "100\n200\n").unwrap();
    d
}

fn limits() -> Limits {
    Limits {
        max_memory: Some(256 << 20),
        max_processes: Some(64),
        cpu: Some(0.5),
        ..Limits::default()
    }
}

/// Pid 100 is "this host", 200 its child; 300 (ppid 1) belongs to someone else.
const HOST_100: Owner = Owner {
    me: 100,
    ppid_of: |p| match p {
        200 => Some(100),
        300 => Some(1),
        _ => None,
    },
};

/// A v2 system on the fake hierarchy at `root`, with this process as `owner`.
fn v2_owned_by(
    owner: &Owner,
    root: &Path,
    self_cgroup: &str,
    parent: Option<&Path>,
) -> CgroupSystem {
    let fs = Arc::new(FakeCgroupFs::v2(root));
    CgroupSystem::v2_with_owner(root, self_cgroup, parent, fs, owner).unwrap()
}

/// [`v2_owned_by`] with [`HOST_100`] as this host.
fn v2(root: &Path, self_cgroup: &str, parent: Option<&Path>) -> CgroupSystem {
    v2_owned_by(&HOST_100, root, self_cgroup, parent)
}

#[test]
fn prepares_delegated_subtree_and_moves_host_to_leaf() {
    let root = fake_root();
    let sys = v2(root.path(), "0::/user.slice/app.scope\n", None);
    assert_eq!(sys.version(), CgroupVersion::V2);
    let scope = root.path().join("user.slice/app.scope");
    // The fake file holds what was written: all three controllers in one write.
    assert_eq!(
        fs::read_to_string(scope.join("cgroup.subtree_control")).unwrap(),
        "+memory +pids +cpu"
    );
    // The host and its child were written (one per write) into the leaf.
    assert_eq!(
        fs::read_to_string(scope.join("host/cgroup.procs")).unwrap(),
        "100\n200\n"
    );
    assert_eq!(fs::read_to_string(scope.join("cgroup.procs")).unwrap(), "");
    assert!(
        sys.describe()
            .contains("moved the host (2 process(es)) into"),
        "{}",
        sys.describe()
    );
}

#[test]
fn processes_the_host_does_not_own_are_never_moved() {
    // A terminal's session scope: the host (100), its child (200) and the shell (300).
    let root = fake_root();
    let scope = root.path().join("user.slice/app.scope");
    fs::write(scope.join("cgroup.procs"), "100\n200\n300\n").unwrap();
    let sys = v2(root.path(), "0::/user.slice/app.scope\n", None);
    // Nothing moved, no leaf made, no controller enabled.
    assert_eq!(
        fs::read_to_string(scope.join("cgroup.procs")).unwrap(),
        "100\n200\n300\n"
    );
    assert!(!scope.join(HOST_LEAF).exists());
    assert_eq!(
        fs::read_to_string(scope.join("cgroup.subtree_control")).unwrap(),
        ""
    );
    let d = sys.describe();
    assert!(
        d.contains("no controllers")
            && d.contains("1 process(es) this host did not start")
            && d.contains("Delegate=yes")
            && d.contains("--cgroup-parent"),
        "{d}"
    );
    // Sandboxes still get a cgroup (kill, accounting), with the limits reported missing.
    let cg = sys.create("f", &limits()).unwrap();
    assert_eq!(cg.missing().len(), 3, "{:?}", cg.missing());
    let e = cg.report_entry();
    assert!(
        !e.applied && e.detail.contains("did not start"),
        "{}",
        e.detail
    );
    cg.remove().unwrap();
    // A --cgroup-parent elsewhere works without touching the scope.
    let sys = v2(
        root.path(),
        "0::/user.slice/app.scope\n",
        Some(Path::new("/user.slice/sandboxes")),
    );
    assert!(
        sys.describe().contains("memory+pids+cpu"),
        "{}",
        sys.describe()
    );
    assert_eq!(
        fs::read_to_string(scope.join("cgroup.procs")).unwrap(),
        "100\n200\n300\n"
    );
}

#[test]
fn the_real_owner_is_this_process_and_its_children() {
    let me = Owner::this_process();
    assert!(me.owns(std::process::id() as i32));
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    assert!(me.owns(child.id() as i32));
    assert!(!me.owns(1), "pid 1 is nobody's child");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn restarted_host_inside_leaf_uses_the_parent() {
    let root = fake_root();
    let scope = root.path().join("user.slice/app.scope");
    fs::write(scope.join("cgroup.subtree_control"), "memory pids cpu").unwrap();
    fs::write(scope.join("cgroup.procs"), "").unwrap();
    let sys = v2_owned_by(
        &Owner::this_process(),
        root.path(),
        "0::/user.slice/app.scope/host\n",
        None,
    );
    let cg = sys.create("a", &Limits::default()).unwrap();
    assert_eq!(cg.paths(), vec![scope.join("sandbox-a")]);
    cg.remove().unwrap();
}

#[test]
fn creates_sandbox_with_limits_usage_kill_remove() {
    let root = fake_root();
    let sys = v2(root.path(), "0::/user.slice/app.scope\n", None);
    let cg = sys.create("demo-1", &limits()).unwrap();
    let dir = root.path().join("user.slice/app.scope/sandbox-demo-1");
    assert_eq!(cg.paths(), vec![dir.clone()]);
    let rd = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(rd("memory.max"), (256u64 << 20).to_string());
    assert_eq!(rd("memory.swap.max"), "0");
    assert_eq!(rd("pids.max"), "64");
    assert_eq!(rd("cpu.max"), "50000 100000");
    assert_eq!(cg.open_entry().unwrap().files.len(), 1);
    assert!(cg.missing().is_empty());
    let e = cg.report_entry();
    assert!(
        e.applied && e.detail.starts_with("v2 memory+pids+cpu at "),
        "{}",
        e.detail
    );

    // Parent-side add_pid goes through the files opened for a spawn.
    cg.open_entry().unwrap().add_pid(4242).unwrap();
    assert_eq!(rd("cgroup.procs"), "4242");

    fs::write(dir.join("cgroup.procs"), "4242\n4243\n").unwrap();
    let usage = CgroupUsage {
        memory_bytes: Some(1234567),
        memory_peak_bytes: Some(2345678),
        pids: Some(3),
        cpu_time_us: Some(777),
        oom_kills: Some(1),
        pids_limit_hits: Some(4),
        procs: vec![4242, 4243],
    };
    assert_eq!(cg.usage().unwrap(), usage);

    // kill_all uses cgroup.kill (which empties the fake's cgroup.procs).
    cg.kill_all().unwrap();
    assert_eq!(rd("cgroup.kill"), "1");
    assert_eq!(rd("cgroup.procs"), "");

    cg.remove().unwrap();
    assert!(!dir.exists());
}

#[test]
fn missing_controllers_are_reported_not_fatal() {
    let root = fake_root();
    let scope = root.path().join("user.slice/app.scope");
    fs::write(scope.join("cgroup.controllers"), "memory").unwrap();
    fs::write(scope.join("cgroup.procs"), "").unwrap();
    let sys = v2(root.path(), "0::/user.slice/app.scope\n", None);
    assert!(
        sys.describe().contains("pids+cpu not delegated"),
        "{}",
        sys.describe()
    );
    let cg = sys.create("b", &limits()).unwrap();
    assert_eq!(cg.missing().len(), 2, "{:?}", cg.missing());
    let e = cg.report_entry();
    assert!(
        !e.applied && e.detail.contains("NOT applied: max_processes"),
        "{}",
        e.detail
    );
    drop(cg); // Drop removes it.
    assert!(!scope.join("sandbox-b").exists());
}

#[test]
fn parent_override_is_created_and_used() {
    let root = fake_root();
    let sys = v2_owned_by(
        &Owner::this_process(),
        root.path(),
        "0::/whatever\n",
        Some(Path::new("/sandboxes.slice")),
    );
    let cg = sys.create("c", &Limits::default()).unwrap();
    assert_eq!(
        cg.paths(),
        vec![root.path().join("sandboxes.slice/sandbox-c")]
    );
    // Root-cgroup rule: the root's processes were not moved, the override had none.
    assert!(!root.path().join("host").exists());
    cg.remove().unwrap();
    // An absolute path under the mount works too.
    let abs = root.path().join("sandboxes.slice");
    let sys2 = v2_owned_by(&Owner::this_process(), root.path(), "0::/x\n", Some(&abs));
    let cg2 = sys2.create("d", &Limits::default()).unwrap();
    assert_eq!(cg2.paths(), vec![abs.join("sandbox-d")]);
}

#[test]
fn leftover_sandbox_dir_is_recreated() {
    let root = fake_root();
    let sys = v2(root.path(), "0::/user.slice/app.scope\n", None);
    let first = sys.create("e", &limits()).unwrap();
    std::mem::forget(first); // A crashed host leaves the directory behind.
    let again = sys.create("e", &limits()).unwrap();
    again.remove().unwrap();
    // A leftover that still holds a process is not taken over.
    let busy = sys.create("g", &limits()).unwrap();
    let dir = busy.paths().remove(0);
    fs::write(dir.join("cgroup.procs"), "4242\n").unwrap();
    std::mem::forget(busy);
    let e = sys.create("g", &limits()).unwrap_err();
    assert!(matches!(e, CgroupError::Leftover { .. }), "{e}");
    assert!(
        e.to_string()
            .ends_with("exists and cannot be removed: Device or resource busy (os error 16)"),
        "{e}"
    );
}

#[test]
fn a_cgroup_made_without_limits_gets_its_tenants_later() {
    // A prepared runner's cgroup: made with no limit, the tenant's written at its take.
    let root = fake_root();
    let sys = v2(root.path(), "0::/user.slice/app.scope\n", None);
    let mut cg = sys.create("pool-1", &Limits::default()).unwrap();
    let dir = root.path().join("user.slice/app.scope/sandbox-pool-1");
    assert!(!cg.report_entry().detail.contains("pids.max"));
    sys.apply_limits(&mut cg, &limits()).unwrap();
    assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "64");
    assert_eq!(
        fs::read_to_string(dir.join("memory.max")).unwrap(),
        (256u64 << 20).to_string()
    );
    let entry = cg.report_entry();
    assert!(
        entry.applied && entry.detail.contains("pids.max=64"),
        "{}",
        entry.detail
    );
    cg.remove().unwrap();
}
