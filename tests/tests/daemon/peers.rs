//! Peers of another uid: the daemon refuses a client of another uid, a client sends nothing
//! to a server of another uid, and a root daemon opens nothing for a client that the client
//! could not open itself.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::prelude::*;
use e2e::serve::Serve;
use serde_json::json;
use testkit::ChildGuard;
use testkit::proc::retry_busy;

/// A copy of `bin` in `dir` that any uid can run.
fn runnable_copy(bin: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(bin.file_name().unwrap());
    std::fs::copy(bin, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// `program` as uid/gid 65534, from `/`, with no input.
fn as_nobody(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.uid(65534)
        .gid(65534)
        .current_dir("/")
        .stdin(Stdio::null());
    cmd
}

/// Whether this test can run here: it runs a process as another uid, which needs root.
fn can_switch_uid() -> bool {
    if !is_root() {
        skip("needs root to run a process as another uid");
        return false;
    }
    true
}

#[test]
fn a_client_of_another_uid_is_refused() {
    if !can_switch_uid() {
        return;
    }
    // A scratch dir others may enter, so that only the daemon's own 0700 directory (and
    // then only its peer check) stands in the way; it also holds a copy of the binary that
    // uid 65534 can surely execute (retried while another test's fork holds the new copy
    // open for writing: ETXTBSY).
    let base = scratch_with_mode(0o755);
    let d = Serve::start_in(base.path(), &[]);
    let bin = runnable_copy(host(), base.path());
    let list = || {
        let mut cmd = as_nobody(&bin);
        cmd.args(["list", "--socket"]).arg(&d.socket);
        retry_busy(|| cmd.output())
    };

    // The directory is 0700: the kernel stops it before the daemon sees it.
    let out = list();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");

    // With the directory and socket opened up, SO_PEERCRED is what refuses it.
    let dir = d.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = list();
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("peer uid 65534 may not control this daemon"),
        "{stderr}"
    );
    assert!(d.log().contains("refused"), "{}", d.log());
    // Its own user still gets in.
    assert_eq!(d.json(&["list"]), json!([]));
}

#[test]
fn a_client_sends_nothing_to_a_server_of_another_uid() {
    if !can_switch_uid() {
        return;
    }
    let dir = scratch_with_mode(0o777);
    let server = runnable_copy(Path::new(env!("CARGO_BIN_EXE_e2e-fake-server")), dir.path());
    let socket = dir.path().join("host.sock");
    let report = dir.path().join("report");
    let mut fake = as_nobody(&server);
    fake.arg(&socket).arg(&report);
    let _fake = ChildGuard::new(retry_busy(|| fake.spawn()));
    assert!(wait_until(Duration::from_secs(10), || socket.exists()));
    let read_report = || std::fs::read_to_string(&report).unwrap_or_default();
    for args in [
        &["list"][..],
        &["operate", "demo", "--provider", "anthropic"],
    ] {
        let out = Command::new(host())
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .env("ANTHROPIC_API_KEY", "sk-secret-must-not-travel")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(
            err.contains("refusing to talk to") && err.contains("runs as uid 65534"),
            "{err}"
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || read_report()
            .contains("connections=2")),
        "{}",
        read_report()
    );
    assert_eq!(read_report().trim(), "connections=2 bytes=0");
}

#[test]
fn a_client_cannot_make_a_root_daemon_open_what_it_cannot_open_itself() {
    if !can_switch_uid() {
        return;
    }
    let dir = scratch_with_mode(0o777);
    let d = Serve::start_in(dir.path(), &[]);
    // Open the way to the socket, so only the files stand in the way.
    std::fs::set_permissions(
        d.socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let bin = runnable_copy(host(), dir.path());
    let private = tempfile::Builder::new()
        .prefix("e2e-private-crate-")
        .tempdir_in("/root")
        .unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(private.path().join("Cargo.toml"), "[package]\n").unwrap();
    let connected_before = d.log().matches("connected").count();
    let shadow = ["create", "s", "--lib", "/etc/shadow"];
    let krate = private.path().to_str().unwrap();
    for args in [&shadow[..], &["create", "c", "--app", krate]] {
        let mut cmd = as_nobody(&bin);
        cmd.args(args).arg("--socket").arg(&d.socket);
        let out = retry_busy(|| cmd.output());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "cannot open {} as uid 65534: Permission denied",
                args[3]
            )),
            "{err}"
        );
    }
    // It never got as far as the daemon.
    assert_eq!(d.log().matches("connected").count(), connected_before);
    assert_eq!(d.json(&["list"]), json!([]));
}
