//! Namespaces on the real kernel: a child cloned with the planned flags, set up by
//! `ChildSetup::run_in_child`, inspected from the parent through `/proc/<pid>`.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use common::{in_subprocess, root, spawn_waiting};
use isolation::namespaces::{self, ChildOptions, ChildSetup, plan};
use isolation::{Level, Limits, Mechanism, Rlimits};

fn ns_link(pid: &str, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .display()
        .to_string()
}

fn status_field(pid: i32, key: &str) -> String {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// Directories outside /tmp (the child gets a private /tmp).
fn work_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (base, app, private) = common::work_dirs("isolation-ns-");
    fs::write(app.join("lib.so"), b"not really").unwrap();
    (base, app, private)
}

/// Checks shared by the root and non-root runs; returns the child's netns link.
fn check_child(pid: i32, app: &Path, private: &Path, marker: &str) -> String {
    let p = pid.to_string();
    for ns in ["pid", "mnt", "ipc", "uts", "net"] {
        assert_ne!(
            ns_link(&p, ns),
            ns_link("self", ns),
            "{ns} namespace not new"
        );
    }
    // pid 1 inside.
    let nspid = status_field(pid, "NSpid:");
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "NSpid {nspid}");
    // The child's /proc shows only its own namespace: just pid 1.
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mut pids: Vec<String> = fs::read_dir(root.join("proc"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    pids.sort();
    assert_eq!(pids, ["1"]);
    // Private /tmp: a tmpfs without the host's marker; writes do not reach the host.
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new(format!("/proc/{pid}/root/tmp")).unwrap();
    // SAFETY: valid path and out-pointer.
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    assert_eq!(st.f_type, libc::TMPFS_MAGIC, "/tmp is not a tmpfs");
    assert!(!root.join("tmp").join(marker).exists(), "host /tmp visible");
    // Network: only lo.
    let dev = fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{dev}");
    // The app dir is read-only, the private dir is the cwd and writable.
    let inside_app = root.join(app.strip_prefix("/").unwrap());
    assert!(inside_app.join("lib.so").exists());
    let err = fs::write(inside_app.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert_eq!(fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), private);
    // no_new_privs, no capabilities, core=0.
    assert_eq!(status_field(pid, "NoNewPrivs:"), "1");
    assert_eq!(status_field(pid, "CapEff:"), "0000000000000000");
    assert_eq!(status_field(pid, "CapBnd:"), "0000000000000000");
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
    ns_link(&p, "net")
}

fn options(app: &Path, private: &Path) -> ChildOptions {
    ChildOptions {
        app_dir: Some(app.to_path_buf()),
        private_tmp: true,
        tmp_size: Some(16 << 20),
        workdir: Some(private.to_path_buf()),
        keep_visible: vec![private.to_path_buf()],
        no_new_privs: true,
        drop_capabilities: true,
        root: None,
        switch_ids: None,
    }
}

fn run_sandbox_child(is_root: bool) -> (String, Vec<isolation::ReportEntry>) {
    let (_base, app, private) = work_dirs();
    let marker = common::unique_id("marker");
    let host_tmp = std::env::temp_dir().join(&marker);
    fs::write(&host_tmp, b"host").unwrap();

    let ns = plan(Level::Strict, false, is_root).unwrap();
    let mut setup = ChildSetup::new(&ns, &options(&app, &private)).unwrap();
    let entries = setup.report_entries().to_vec();
    let rl = Rlimits::from_limits(
        &Limits {
            max_open_files: Some(64),
            ..Limits::default()
        },
        is_root,
    );
    // SAFETY: the closure only runs the crate's async-signal-safe child functions.
    let child = unsafe {
        spawn_waiting(setup.flags(), || {
            setup.run_in_child()?;
            rl.apply_in_child()
        })
    };
    let pid = child.pid;
    setup.parent_after_clone(pid).unwrap();
    child.wait_ready().unwrap();
    let net = check_child(pid, &app, &private, &marker);
    let status = child.finish();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}"
    );
    fs::remove_file(host_tmp).unwrap();
    (net, entries)
}

#[test]
fn root_child_gets_namespaces_mounts_and_shared_netns() {
    if !root() {
        common::skip("needs root (the non-root path is tested by nonroot_child_*)");
        return;
    }
    let host_net = ns_link("self", "net");
    let shared = namespaces::shared_netns().unwrap();
    // Creating the shared netns did not move the host.
    assert_eq!(ns_link("self", "net"), host_net);
    let shared_link = fs::read_link(format!("/proc/self/fd/{}", shared.as_raw_fd()))
        .unwrap()
        .display()
        .to_string();
    assert_ne!(shared_link, host_net);

    let (child_net, entries) = run_sandbox_child(true);
    assert_eq!(
        child_net, shared_link,
        "child did not join the shared netns"
    );
    let get = |m| entries.iter().find(|e| e.mechanism == m).unwrap();
    assert!(get(Mechanism::PidNs).applied);
    assert!(get(Mechanism::NetNs).applied && get(Mechanism::NetNs).detail.contains("shared"));
    assert!(!get(Mechanism::UserNs).applied && !get(Mechanism::UserNs).required);
    assert!(
        get(Mechanism::MountNs).detail.contains("tmpfs /tmp"),
        "{:?}",
        get(Mechanism::MountNs)
    );
    assert!(get(Mechanism::Capabilities).applied);
}

#[test]
fn root_child_with_user_namespace_handshake() {
    if !root() {
        common::skip("needs root (an identity map as root)");
        return;
    }
    // The non-root flag set (user + own netns), exercised as root with an identity map.
    let (child_net, entries) = run_sandbox_child(false);
    assert_ne!(child_net, ns_link("self", "net"));
    let user = entries
        .iter()
        .find(|e| e.mechanism == Mechanism::UserNs)
        .unwrap();
    assert!(user.applied, "{user:?}");
}

#[test]
fn nonroot_child_with_user_namespace() {
    // As uid 65534 in a subprocess, when we are root; as ourselves otherwise.
    let uid = root().then_some(65534);
    if !in_subprocess("nonroot_child_with_user_namespace", uid) {
        return;
    }
    assert!(!root());
    let (_, entries) = run_sandbox_child(false);
    let user = entries
        .iter()
        .find(|e| e.mechanism == Mechanism::UserNs)
        .unwrap();
    assert!(user.applied, "{user:?}");
    let net = entries
        .iter()
        .find(|e| e.mechanism == Mechanism::NetNs)
        .unwrap();
    assert!(net.applied && net.detail.contains("own empty"), "{net:?}");
}

#[test]
fn child_in_tmp_is_refused_under_strict_and_reported_under_standard() {
    let ns = plan(Level::Strict, false, root()).unwrap();
    let opts = ChildOptions {
        private_tmp: true,
        keep_visible: vec![std::env::temp_dir().join("x")],
        ..ChildOptions::default()
    };
    assert!(ChildSetup::new(&ns, &opts).is_err());
    let ns = plan(Level::Standard, false, root()).unwrap();
    let s = ChildSetup::new(&ns, &opts).unwrap();
    let m = s
        .report_entries()
        .iter()
        .find(|e| e.mechanism == Mechanism::MountNs)
        .unwrap();
    assert!(m.detail.contains("/tmp NOT private"), "{m:?}");
}

#[test]
fn probe_and_failed_handshake() {
    assert!(namespaces::probe(0).is_ok());
    if !root() {
        common::skip("the failed-handshake half needs root");
        return;
    }
    // A child whose parent fails the handshake gets UserNsWait, not a half-set-up sandbox.
    let ns = plan(Level::Standard, false, false).unwrap();
    let setup = ChildSetup::new(&ns, &ChildOptions::default()).unwrap();
    // SAFETY: only the crate's child function runs in the child.
    let child = unsafe { spawn_waiting(setup.flags(), || setup.run_in_child()) };
    drop(setup); // parent side never writes the maps
    let err = child.wait_ready().unwrap_err();
    assert!(err.contains("UserNsWait"), "{err}");
    let status = common::reap(child.pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 1);
    std::mem::forget(child);
}
