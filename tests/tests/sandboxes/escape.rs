//! Escapes from a `standard` sandbox of a root host, tried by the hostile app: host paths and
//! Unix sockets outside its own root, the host's uid 0, the library store other sandboxes map,
//! socket families and syscalls the filter must refuse, and the disk cap. Every attempt must
//! fail, and the mechanism that stops it must be reported as applied.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::prelude::*;
use e2e::report::errnos::{ENOENT, ENOSPC, ENOSYS, EPERM};
use e2e::report::{errno, stopped_by};
use sandbox::{AppSource, Level, Limits, Manager, SandboxInfo, SandboxSpec};
use serde_json::{Value, json};

async fn call(m: &Manager, id: &str, function: &str, args: Value) -> Value {
    m.run(id, function, args, Some(Duration::from_secs(60)))
        .await
        .unwrap_or_else(|e| panic!("{id}: {function}: {e}"))
}

/// The detail of mechanism `name`, which must be applied: it is what stops these escapes.
fn applied(info: &SandboxInfo, name: &str) -> String {
    stopped_by(&info.isolation, name, "an escape")
}

/// Skips (visibly, and counted as skipped by the scripts) where the test needs a root host.
macro_rules! require_root {
    () => {
        if !is_root() {
            skip("needs a root host (the uid switch and the shared store are a root host's)");
            return;
        }
    };
}

/// Listens on a Unix socket at `path` (the parent directory is created) until dropped.
struct Listener(PathBuf, UnixListener);

impl Listener {
    fn at(path: PathBuf) -> Listener {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        l.set_nonblocking(true).unwrap();
        Listener(path, l)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_host_path_or_unix_socket_is_reachable() {
    require_root!();
    let m = manager();
    let info = hostile(&m, "walls", Limits::default(), Level::Standard).await;
    applied(&info, "root");
    let tag = format!("e2e-escape-{}", std::process::id());
    let home = std::env::var_os("HOME").map_or(PathBuf::from("/root"), PathBuf::from);
    let var_tmp = scratch();
    // Unix sockets the test listens on, where a daemon, D-Bus or docker.sock would be.
    let listeners = [
        Listener::at(PathBuf::from(format!("/run/{tag}/host.sock"))),
        Listener::at(var_tmp.path().join("host.sock")),
        Listener::at(home.join(format!(".{tag}.sock"))),
    ];
    for l in &listeners {
        // Control: the host itself can connect.
        assert!(std::os::unix::net::UnixStream::connect(&l.0).is_ok());
        let _ = l.1.accept();
    }
    let mut probes: Vec<PathBuf> = listeners.iter().map(|l| l.0.clone()).collect();
    // The daemon's default socket path, whether or not a daemon listens there now.
    probes.push("/run/sandbox-host/host.sock".into());
    for path in &probes {
        let r = call(&m, "walls", "connect_unix", json!({ "path": path })).await;
        assert_eq!(
            errno(&r),
            ENOENT,
            "{} reached from the sandbox: {r}",
            path.display()
        );
    }
    for l in &listeners {
        assert!(l.1.accept().is_err(), "{} was reached", l.0.display());
    }
    let _ = std::fs::remove_dir(format!("/run/{tag}"));
    // Host paths: secrets, home directories, runtime and state directories, the sandbox's own
    // host directory and the library store beside it.
    let store = info.dir.parent().unwrap().with_extension("libs");
    for path in [
        Path::new("/etc/shadow"),
        Path::new("/etc/passwd"),
        Path::new("/root/.bashrc"),
        Path::new("/home"),
        Path::new("/run/sandbox-host"),
        Path::new("/var/log"),
        Path::new("/sys/fs/cgroup"),
        &info.dir.join("runner.log"),
        &store,
    ] {
        let r = call(&m, "walls", "read_file", json!({ "path": path })).await;
        assert_eq!(errno(&r["read"]), ENOENT, "{}: {r}", path.display());
    }
    m.destroy("walls").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_never_runs_as_the_hosts_root_and_cannot_touch_the_store() {
    require_root!();
    let m = manager();
    let a = hostile(&m, "ids-a", Limits::default(), Level::Standard).await;
    let b = hostile(&m, "ids-b", Limits::default(), Level::Standard).await;
    applied(&a, "ids");
    let me = call(&m, "ids-a", "whoami", Value::Null).await;
    assert_ne!(me["uid"], 0, "{me}");
    assert_ne!(me["euid"], 0, "{me}");
    assert_ne!(me["gid"], 0, "{me}");
    assert_eq!(me["groups"], 0, "supplementary groups cleared: {me}");
    // The kernel's word, not the app's.
    let status = std::fs::read_to_string(format!("/proc/{}/status", a.pid)).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        !uid_line.split_whitespace().skip(1).any(|u| u == "0"),
        "{uid_line}"
    );
    let other = call(&m, "ids-b", "whoami", Value::Null).await;
    assert_ne!(me["uid"], other["uid"], "each sandbox has an id of its own");

    // Both sandboxes map the same stored library (one inode). Neither may change it.
    let lib = format!(
        "/app/{}",
        Path::new(&a.app.path)
            .file_name()
            .unwrap()
            .to_string_lossy()
    );
    let r = call(&m, "ids-a", "tamper", json!({ "path": lib })).await;
    for op in ["write", "chmod", "rename", "unlink"] {
        assert_ne!(r[op], 0, "{op} of the stored library worked: {r}");
    }
    assert_eq!(
        call(&m, "ids-b", "answer", Value::Null).await,
        json!(1),
        "the neighbour still serves its library"
    );
    // A sandbox at level none runs as the host's uid: it links into the store of `none`
    // sandboxes, so tampering with it changes no isolated sandbox's library.
    let n = hostile(&m, "ids-none", Limits::default(), Level::None).await;
    let r = call(&m, "ids-none", "tamper", json!({ "path": n.app.path })).await;
    eprintln!("tampering at level none: {r}");
    assert_eq!(r["write"], 0, "a none app writes what it links: {r}");
    let stored = std::fs::read(&b.app.path).unwrap();
    assert_eq!(
        sha256_hex(&stored),
        b.app.sha256,
        "the neighbour's library changed"
    );
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&b.app.path).unwrap());
    assert_eq!(mode & 0o777, 0o444, "the neighbour's library was chmodded");
    for id in ["ids-a", "ids-b", "ids-none"] {
        m.destroy(id).await.unwrap();
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_refuses_foreign_socket_families_and_unknown_syscalls() {
    let m = manager();
    let info = hostile(&m, "filter", Limits::default(), Level::Standard).await;
    let seccomp = applied(&info, "seccomp");
    assert!(seccomp.contains("allow-list"), "{seccomp}");
    for (name, family, kind) in [
        ("AF_VSOCK", libc::AF_VSOCK, libc::SOCK_STREAM),
        ("AF_NETLINK", libc::AF_NETLINK, libc::SOCK_RAW),
        ("AF_PACKET", libc::AF_PACKET, libc::SOCK_RAW),
        ("AF_ALG", libc::AF_ALG, libc::SOCK_SEQPACKET),
        (
            "AF_INET without --network",
            libc::AF_INET,
            libc::SOCK_STREAM,
        ),
    ] {
        let r = call(
            &m,
            "filter",
            "open_socket",
            json!({"family": family, "type": kind}),
        )
        .await;
        assert_eq!(r["ok"], false, "{name} socket was created: {r}");
    }
    let unix = call(
        &m,
        "filter",
        "open_socket",
        json!({"family": libc::AF_UNIX, "type": libc::SOCK_STREAM}),
    )
    .await;
    assert_eq!(unix["ok"], true, "control: AF_UNIX is allowed: {unix}");
    for (name, nr) in [
        ("kcmp", libc::SYS_kcmp),
        ("memfd_secret", 447),
        ("a number above the table", 1000),
    ] {
        let r = call(&m, "filter", "raw_syscall", json!({ "nr": nr })).await;
        assert!(
            [ENOSYS, EPERM].contains(&errno(&r)),
            "{name} must fail with ENOSYS or EPERM: {r}"
        );
    }
    m.destroy("filter").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_stops_at_its_cap_and_the_host_loses_nothing() {
    let m = manager();
    let cap: u64 = 16 << 20;
    let limits = Limits {
        max_disk: Some(cap),
        ..Limits::default()
    };
    let info = hostile(&m, "disk", limits, Level::Standard).await;
    let disk = applied(&info, "disk");
    assert!(disk.contains("16 MiB"), "{disk}");
    // What the host's filesystem holds for this sandbox (its state dir and the store beside
    // it): the only host-backed places the old layout let it write (its work dir lived
    // there). Free space is no measure on a machine where other builds write meanwhile.
    let host_bytes = || dir_bytes(m.state.path());
    let before = host_bytes();
    let r = call(
        &m,
        "disk",
        "fill_disk",
        json!({"dir": "/work", "max_mb": 256}),
    )
    .await;
    assert_eq!(errno(&r), ENOSPC, "{r}");
    let written = r["written"].as_u64().unwrap();
    assert!(
        written <= cap && written > cap / 2,
        "wrote {written} of {cap}: {r}"
    );
    // /tmp is the same disk: it is full too.
    let r = call(
        &m,
        "disk",
        "fill_disk",
        json!({"dir": "/tmp", "max_mb": 256}),
    )
    .await;
    assert!(r["written"].as_u64().unwrap() < 1 << 20, "{r}");
    let usage = m.usage("disk").await.unwrap();
    assert!(usage.disk_bytes.unwrap() >= written, "{usage:?}");
    let after = host_bytes();
    assert!(
        after.saturating_sub(before) < 1 << 20,
        "the sandbox's host directories grew by {} bytes",
        after.saturating_sub(before)
    );
    m.destroy("disk").await.unwrap();

    // Inodes: 60 000 small files stop at the cap (16 MiB -> 4096 inodes).
    let info = hostile(&m, "files", limits_disk(cap), Level::Standard).await;
    let r = call(
        &m,
        "files",
        "many_files",
        json!({"dir": "/work", "count": 60_000}),
    )
    .await;
    assert_eq!(errno(&r), ENOSPC, "{r}");
    let created = r["created"].as_u64().unwrap();
    assert!(created < 4096, "created {created} files: {r}");
    let usage = m.usage("files").await.unwrap();
    assert!(usage.disk_files.unwrap() >= created, "{usage:?}");
    drop(info);
    m.destroy("files").await.unwrap();
}

/// Bytes allocated under `dir` (recursively, by blocks, without following symlinks).
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn limits_disk(bytes: u64) -> Limits {
    Limits {
        max_disk: Some(bytes),
        ..Limits::default()
    }
}

/// A host binary and state directory under /tmp get the same `standard` isolation as
/// anywhere else: the sandbox's root is built from host paths before `/tmp` is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_under_tmp_gets_full_standard_isolation() {
    let lib = built("hostile_app").await;
    let tmp = tempfile::Builder::new()
        .prefix("e2e-under-tmp-")
        .tempdir_in("/tmp")
        .unwrap();
    let exe = tmp.path().join("host");
    std::fs::copy(host(), &exe).unwrap();
    let app = tmp.path().join("hostile.so");
    std::fs::copy(&lib, &app).unwrap();
    let m = manager_with(|c| {
        c.runner_exe = exe.clone();
        c.state_dir = tmp.path().join("sandboxes");
    });
    let info = m
        .create(
            "under-tmp",
            in_test_cgroup(SandboxSpec::new(AppSource::Library(app))),
        )
        .await
        .unwrap_or_else(|e| panic!("sandbox from /tmp: {e}"));
    for m in ["root", "mount_ns", "disk", "ids", "landlock", "seccomp"] {
        applied(&info, m);
    }
    assert!(!info.isolation.to_string().contains("NOT private"));
    assert_eq!(call(&m, "under-tmp", "answer", Value::Null).await, json!(1));
    // The host's /tmp (where this very binary lives) is not the sandbox's.
    let r = call(&m, "under-tmp", "read_file", json!({ "path": exe })).await;
    assert_eq!(errno(&r["read"]), ENOENT, "{r}");
    m.destroy("under-tmp").await.unwrap();
}

/// The descriptors of process `pid` (from `/proc/PID/fd`).
fn fds_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether fd `a` of process `pa` and fd `b` of `pb` are one open file (`kcmp(KCMP_FILE)`);
/// `Err(errno)` when the kernel will not say.
fn same_file(pa: i32, a: i32, pb: i32, b: i32) -> Result<bool, i32> {
    const KCMP_FILE: libc::c_int = 0;
    // SAFETY: kcmp only reads the two processes' descriptor tables.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pa, pb, KCMP_FILE, a, b) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r == 0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_descriptor_of_the_host_reaches_a_sandbox() {
    require_root!();
    // Descriptors the host holds beside its own sandboxes': a leak would carry some along.
    let scratch = scratch();
    let _held: Vec<std::fs::File> = (0..64)
        .map(|i| std::fs::File::create(scratch.path().join(format!("held-{i}"))).unwrap())
        .collect();
    let m = manager();
    let me = std::process::id() as i32;
    for (id, level) in [
        ("fds-standard-1", Level::Standard),
        ("fds-standard-2", Level::Standard),
        ("fds-none", Level::None),
    ] {
        let info = hostile(&m, id, Limits::default(), level).await;
        let ours = fds_of(me);
        let procs = sandbox::procfs::tree(info.pid);
        assert!(
            procs.len() >= 2,
            "{id}: init and the app process: {procs:?}"
        );
        for p in &procs {
            let theirs = fds_of(p.pid);
            assert!(!theirs.is_empty(), "{id}: no fd listed for {}", p.pid);
            for &b in &theirs {
                for &a in &ours {
                    match same_file(me, a, p.pid, b) {
                        Ok(false) => {}
                        Ok(true) => {
                            let target = std::fs::read_link(format!("/proc/{me}/fd/{a}"));
                            panic!(
                                "{id}: pid {} holds the host's fd {a} ({target:?}) as {b}",
                                p.pid
                            )
                        }
                        // The fd closed between the listing and the comparison.
                        Err(libc::EBADF) => {}
                        Err(errno) => {
                            m.destroy(id).await.unwrap();
                            skip(&format!("kcmp(KCMP_FILE) refused: errno {errno}"));
                            return;
                        }
                    }
                }
            }
        }
        m.destroy(id).await.unwrap();
    }
}
