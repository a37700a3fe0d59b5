//! The host as an unprivileged user (uid 65534, run by these root tests): the library through
//! `e2e-attacks` and a daemon through the host binary, where a sandbox gets a user namespace
//! and, on cgroup v1, no cgroup.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::apps::block_on;
use e2e::prelude::*;
use e2e::report::errnos::{EAFNOSUPPORT, EAGAIN, ENOENT, EPERM};
use e2e::report::{NO_CAPS, errno, mechanism, stopped_by};
use sandbox::{Level, Limits};
use serde_json::{Value, json};
use testkit::ChildGuard;

use super::network::host_listeners;
use super::{answers, setuid_root_cat, world_readable_secret};

/// `program` run as uid/gid 65534 from `/`, with nothing of this environment but a `PATH`
/// and `XDG_RUNTIME_DIR` set to `runtime`.
fn as_nobody(program: &Path, runtime: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.uid(65534)
        .gid(65534)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("XDG_RUNTIME_DIR", runtime)
        .current_dir("/");
    cmd
}

/// Runs `e2e-attacks ARGS` as uid 65534 with a fresh 0777 runtime directory; returns its JSON
/// output.
fn attacks(args: &[&std::ffi::OsStr]) -> Value {
    let runtime = scratch_with_mode(0o777);
    let out = as_nobody(&e2e::bins::bin("e2e-attacks"), runtime.path())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "e2e-attacks failed ({}): {}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("e2e-attacks printed {stdout:?}: {e}"))
}

/// The hostile app, built as root (uid 65534 only reads the `.so`).
fn hostile_lib() -> PathBuf {
    block_on(built("hostile_app"))
}

/// Whether these tests can run here, saying why not: they run the host as uid 65534, which
/// needs root; with `v1_only`, the test is about a machine without cgroup v2 (where an
/// unprivileged host may have a delegated subtree).
fn can_run_as_nobody(v1_only: bool) -> bool {
    if v1_only && cgroup_v2() {
        skip("cgroup v2 here; the unprivileged host may have a delegated subtree");
        return false;
    }
    if !is_root() {
        skip("needs root (runs the host as uid 65534)");
        return false;
    }
    true
}

/// The line a user must see when `--max-memory 64M` is not enforced.
const NOT_ENFORCED: &str = "--max-memory 64 MiB is not enforced: no cgroup (";
const THE_FIX: &str = "run as root, or pass a delegated cgroup v2 subtree with --cgroup-parent";

#[test]
fn attacks_from_a_sandbox_of_an_unprivileged_host_are_contained() {
    if !can_run_as_nobody(false) {
        return;
    }
    let lib = hostile_lib();
    let (secrets, secret) = world_readable_secret();
    let outside = scratch_with_mode(0o777);
    let (listener, udp) = host_listeners();
    let suid = secrets.path().join("suid-cat");
    setuid_root_cat(&suid);
    // A Unix socket outside /tmp that uid 65534 itself could connect to.
    let unix_path = outside.path().join("listener.sock");
    let unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    unix.set_nonblocking(true).unwrap();
    std::fs::set_permissions(&unix_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let plan = json!({
        "secret": secret,
        "outside_dir": outside.path(),
        "tcp": listener.local_addr().unwrap().port(),
        "udp": udp.local_addr().unwrap().port(),
        "suid": suid,
        "unix": unix_path,
    });
    let out = attacks(&[
        "attacks".as_ref(),
        lib.as_os_str(),
        plan.to_string().as_ref(),
    ]);
    assert_eq!(out["uid"], 65534, "{out}");
    let iso = &out["isolation"];
    let r = &out["results"];

    // No cgroup for an unprivileged host without a delegated subtree (v1, or a v2 cgroup it
    // does not own): reported, with the reason.
    let (cgroup, why) = mechanism(iso, "cgroup");
    assert!(!cgroup && !why.is_empty(), "{iso}");
    assert_eq!(out["usage"]["source"], "proc", "{out}");
    stopped_by(iso, "user_ns", "an unprivileged host's namespaces");

    stopped_by(iso, "root", "reading and writing outside");
    stopped_by(iso, "ids", "an unprivileged host's ids");
    for unreachable in [
        &r["read_secret"]["read"],
        &r["read_shadow"]["read"],
        &r["write_outside"],
        &r["write_sandbox_dir"],
        &r["connect_unix"],
    ] {
        assert_eq!(errno(unreachable), ENOENT, "{unreachable}: {r}");
    }
    assert!(!r.to_string().contains("the host's secret"));
    assert!(!outside.path().join("pwned-by-nobody").exists());
    assert!(
        unix.accept().is_err(),
        "the sandbox reached a host Unix socket"
    );
    assert_eq!(r["write_own"]["ok"], true, "control: {r}");
    assert_eq!(out["own_file_written"], "written from inside the sandbox");

    stopped_by(iso, "net_ns", "reaching the host's network");
    stopped_by(iso, "seccomp", "creating an AF_INET socket");
    for proto in ["tcp", "udp"] {
        assert_eq!(
            errno(&r["net"][proto]),
            EAFNOSUPPORT,
            "seccomp refuses AF_INET ({proto}): {r}"
        );
    }
    assert_eq!(r["net"]["interfaces"], json!(["lo"]), "{r}");
    assert!(listener.accept().is_err());
    assert!(udp.recv(&mut [0u8; 64]).is_err());

    stopped_by(iso, "seccomp", "ptrace");
    for field in ["attach_errno", "vm_readv_errno", "child_attach_errno"] {
        assert_eq!(r["ptrace"][field], EPERM, "{field}: {r}");
    }

    // In the user namespace the sandbox is uid 65534 with no capabilities and no_new_privs:
    // what it execs gets nothing, and it cannot become root.
    stopped_by(iso, "no_new_privs", "privilege gain through exec");
    stopped_by(iso, "capabilities", "privilege gain");
    assert_eq!(r["exec"]["failed"], Value::Null, "{r}");
    assert_eq!(r["exec"]["NoNewPrivs"], "1", "{r}");
    assert_eq!(r["exec"]["Uid"], "65534 65534 65534 65534", "{r}");
    assert_eq!(r["exec"]["CapEff"], NO_CAPS, "{r}");
    assert_eq!(r["exec"]["CapPrm"], NO_CAPS, "{r}");
    assert_eq!(r["become_root"]["failed"], "setuid", "{r}");
    // A setuid-root program the host made is not in the sandbox's root.
    assert_eq!(r["suid_exec"]["failed"], "exec", "{r}");
    assert_eq!(errno(&r["suid_exec"]), ENOENT, "{r}");

    // Without a cgroup, a fork bomb is held by the process rlimit of the sandbox's own user
    // namespace, and the sandbox is still served and destroyable.
    let bomb = &r["fork_bomb"];
    eprintln!(
        "fork bomb in an unprivileged host's sandbox: {}",
        bomb["result"]
    );
    let rlimits = stopped_by(&bomb["isolation"], "rlimits", "a fork bomb");
    assert!(rlimits.contains("nproc=32"), "{rlimits}");
    assert_eq!(
        errno(&bomb["result"]),
        EAGAIN,
        "RLIMIT_NPROC refuses fork: {bomb}"
    );
    let forked = bomb["result"]["forked"].as_u64().unwrap();
    assert!(forked > 0 && forked < 32, "{bomb}");
    for (field, want) in [
        ("answers_after", true),
        ("destroyed", true),
        ("dir_left", false),
        ("runner_alive", false),
    ] {
        assert_eq!(bomb[field], want, "{field}: {bomb}");
    }

    // Without a cgroup, the pid namespace takes the daemon down with the runner.
    stopped_by(iso, "pid_ns", "a daemon outliving its sandbox");
    let d = &r["daemon"];
    assert!(d["host_pid"].is_i64(), "daemon not found: {d}");
    assert_eq!(d["alive_before_destroy"], true, "{d}");
    assert_eq!(
        d["alive_after_destroy"], false,
        "daemon outlived destroy: {d}"
    );
    assert_eq!(out["sandbox_dir_left"], false, "{out}");
}

#[test]
fn strict_refuses_to_start_when_a_mechanism_is_missing() {
    if !can_run_as_nobody(false) {
        return;
    }
    let lib = hostile_lib();
    // As uid 65534 on cgroup v1 no cgroup can be created: `strict` must refuse, name the
    // mechanism and leave nothing behind.
    let out = attacks(&["strict".as_ref(), lib.as_os_str()]);
    assert_eq!(
        out["created"], false,
        "strict started without a cgroup: {out}"
    );
    assert_eq!(out["isolation_error"], true, "{out}");
    let error = out["error"].as_str().unwrap();
    assert!(
        error.contains("strict isolation: cgroup is not available"),
        "{error}"
    );
    assert_eq!(
        (&out["sandboxes_left"], &out["state_entries_left"]),
        (&json!(0), &json!(0)),
        "{out}"
    );

    // As root everything is available here, and `strict` starts with every required
    // mechanism applied.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let m = manager();
        let info = hostile(&m, "strict-root", Limits::default(), Level::Strict).await;
        for entry in info.isolation["mechanisms"].as_array().unwrap() {
            assert!(
                entry["applied"] == true || entry["required"] == false,
                "strict started with {entry} missing"
            );
        }
        answers(&m, "strict-root").await;
        m.destroy("strict-root").await.unwrap();
    });
}

#[test]
fn an_unenforced_memory_limit_of_an_unprivileged_host_is_warned_about() {
    // On cgroup v1 (this machine) uid 65534 gets no cgroup: --max-memory is not enforced,
    // and the sandbox says so, once, with the fix.
    if !can_run_as_nobody(true) {
        return;
    }
    let lib = hostile_lib();
    let out = attacks(&["limits".as_ref(), lib.as_os_str()]);
    assert_eq!(out["created"], true, "{out}");
    let warnings = out["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"));
    let limits: Vec<&str> = warnings
        .iter()
        .filter_map(|w| w.as_str())
        .filter(|w| w.starts_with(NOT_ENFORCED))
        .collect();
    assert_eq!(limits.len(), 1, "{out}");
    assert!(
        limits[0].ends_with(&format!("; {THE_FIX}")),
        "{}",
        limits[0]
    );
    // And that the sandbox shares the user's per-user kernel limits: said, not hidden.
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str() == Some(sandbox::manager::SHARED_UID_WARNING)),
        "{out}"
    );
    assert_eq!(warnings.len(), 2, "{out}");
}

#[test]
fn an_unprivileged_create_prints_the_limit_nothing_enforces() {
    // The line a user sees: `host create --max-memory` against a daemon of uid 65534 on this
    // cgroup v1 machine, where nothing can enforce it.
    if !can_run_as_nobody(true) {
        return;
    }
    let lib = hostile_lib();
    let runtime = scratch_with_mode(0o777);
    let socket = runtime.path().join("host.sock");
    let state = runtime.path().join("sandboxes");
    let (_serve, nobody) = serve_as_nobody(
        runtime.path(),
        &socket,
        &["--state-dir".as_ref(), state.as_os_str()],
        true,
    );
    let out = nobody(&[
        "create".as_ref(),
        "warned".as_ref(),
        "--lib".as_ref(),
        lib.as_os_str(),
        "--max-memory".as_ref(),
        "64M".as_ref(),
        "--max-processes".as_ref(),
        "16".as_ref(),
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains(NOT_ENFORCED))
        .unwrap_or_else(|| panic!("no warning line in {stderr:?}"));
    assert!(warning.starts_with("host: warning: "), "{warning}");
    assert!(warning.ends_with(THE_FIX), "{warning}");
    // The process limit is enforced (RLIMIT_NPROC, counted in the sandbox's own user
    // namespace: the attacks test above forks into it), so no warning says otherwise.
    assert!(
        !stderr.contains("--max-processes 16 is not enforced"),
        "{stderr}"
    );
    // `info` marks each limit next to it: the one nothing enforces, what enforces the others,
    // and the capped disk that applies without being asked for.
    let info = nobody(&["info".as_ref(), "warned".as_ref()])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    for line in [
        "    --max-memory 64 MiB: NOT ENFORCED: no cgroup (",
        "    --max-processes 16: RLIMIT_NPROC in the sandbox's own user namespace",
        "    --max-disk 64 MiB (default): the size of the tmpfs of /work and /tmp",
    ] {
        assert!(
            info.lines().any(|l| l.starts_with(line)),
            "no {line:?} in:\n{info}"
        );
    }
    let _ = nobody(&["destroy".as_ref(), "warned".as_ref()]).output();
}

#[test]
fn an_unprivileged_daemon_removes_its_state_dir_on_a_clean_shutdown() {
    // A non-root daemon with no XDG_RUNTIME_DIR keeps its sandboxes under
    // /var/tmp/sandbox-host-UID (README, "Isolation"); a clean shutdown leaves none of it.
    if !can_run_as_nobody(false) {
        return;
    }
    let lib = hostile_lib();
    let own = Path::new("/var/tmp/sandbox-host-65534");
    // Whatever an earlier run of this very test left (uid 65534's only; nothing else here
    // runs a daemon as uid 65534 without XDG_RUNTIME_DIR).
    let _ = std::fs::remove_dir_all(own);
    let runtime = scratch_with_mode(0o777);
    let socket = runtime.path().join("host.sock");
    let (mut serve, nobody) = serve_as_nobody(runtime.path(), &socket, &[], false);
    let out = nobody(&[
        "create".as_ref(),
        "kept".as_ref(),
        "--lib".as_ref(),
        lib.as_os_str(),
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(own.join("sandboxes").is_dir(), "no state dir at {own:?}");
    let status = serve.stop_with(libc::SIGTERM, Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let left: Vec<_> = walk(own);
    assert!(!own.exists(), "a clean shutdown left {left:?}");
}

/// `host serve` as uid 65534 on `socket` (with `serve_args`), started and answering;
/// `xdg`: whether the daemon and its clients see `XDG_RUNTIME_DIR` (`runtime`).
fn serve_as_nobody(
    runtime: &Path,
    socket: &Path,
    serve_args: &[&std::ffi::OsStr],
    xdg: bool,
) -> (ChildGuard, impl Fn(&[&std::ffi::OsStr]) -> Command + use<>) {
    let (runtime, answering) = (runtime.to_path_buf(), socket.to_path_buf());
    let socket = answering.clone();
    let nobody = move |args: &[&std::ffi::OsStr]| {
        let mut c = as_nobody(host(), &runtime);
        if !xdg {
            c.env_remove("XDG_RUNTIME_DIR");
        }
        c.args(args).arg("--socket").arg(&socket);
        c
    };
    let serve = ChildGuard::terminate(
        nobody(&[&["serve".as_ref()], serve_args].concat())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        Duration::from_secs(15),
    );
    assert!(
        wait_until(Duration::from_secs(10), || answering.exists()),
        "the daemon made no socket"
    );
    (serve, nobody)
}

/// Every path under `dir` (empty when it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&e.path()));
        }
    }
    out
}
