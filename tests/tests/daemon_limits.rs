//! What hostile clients and dead daemons can make `host serve` hold, through the real
//! binary: libraries that are not files or are too large, long and unfinished request lines,
//! connection floods, a daemon killed with SIGKILL and the next one's sweep, a client that
//! checks who it talks to, and files a client cannot open itself.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tempfile::TempDir;

/// A `host serve` with its own socket, state dir and log; SIGTERM then SIGKILL on drop.
struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    state: PathBuf,
    log: PathBuf,
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

impl Daemon {
    fn start(dir: &Path, name: &str, extra: &[&str]) -> Daemon {
        let socket = dir.join("ctl").join("host.sock");
        let state = dir.join("state");
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(HOST)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .env_remove("SANDBOX_HOST_SOCKET")
            .env("RUST_LOG", "host=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let up = wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening"))
                || child.try_wait().unwrap().is_some()
        });
        assert!(
            up && child.try_wait().unwrap().is_none(),
            "daemon did not come up:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Daemon {
            child: Some(child),
            socket,
            state,
            log,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn host(&self, args: &[&str]) -> Output {
        Command::new(HOST)
            .args(args)
            .env("SANDBOX_HOST_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.host(&args);
        assert!(
            out.status.success(),
            "host {args:?}: {}\n--- log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident and peak resident memory in KiB (VmRSS, VmHWM).
    fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap()
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn crash(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let exited = wait_until(Duration::from_secs(15), || {
                child.try_wait().ok().flatten().is_some()
            });
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_device_and_a_huge_sparse_file_are_refused_as_libraries() {
    let dir = scratch();
    let d = Daemon::start(dir.path(), "lib", &[]);
    let out = d.host(&["create", "z", "--lib", "/dev/zero"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/dev/zero: not a regular file (a character device)"),
        "{err}"
    );
    let big = dir.path().join("big.so");
    File::create(&big).unwrap().set_len(2 << 30).unwrap();
    let started = Instant::now();
    let out = d.host(&["create", "big", "--lib", big.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("2147483648 bytes is more than the largest library accepted, 268435456"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "read, not refused"
    );
    assert_eq!(d.json(&["list"]), serde_json::json!([]));
    // Nothing staged is left behind.
    let staged = dir.path().join("state.staging");
    let left = std::fs::read_dir(&staged).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0);
}

/// Writes up to `bytes` of one unterminated line, until the daemon closes or `deadline`.
fn flood(socket: &Path, bytes: usize) -> std::thread::JoinHandle<()> {
    let socket = socket.to_owned();
    std::thread::spawn(move || {
        let Ok(mut s) = UnixStream::connect(&socket) else {
            return;
        };
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let chunk = vec![b'x'; 256 * 1024];
        let mut sent = 0;
        while sent < bytes {
            if s.write_all(&chunk).is_err() {
                return;
            }
            sent += chunk.len();
        }
    })
}

fn raise_fd_limit(n: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = n.min(if nix::unistd::geteuid().is_root() {
        n
    } else {
        hard
    });
    setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).unwrap();
}

#[test]
fn long_lines_floods_and_idle_connections_stay_bounded_and_neighbours_are_served() {
    let dir = scratch();
    let d = Daemon::start(dir.path(), "flood", &["--request-timeout", "3"]);
    let lib = block_on(built("sandbox_app"));
    d.json(&["create", "n", "--lib", lib.to_str().unwrap()]);
    assert_eq!(d.json(&["call", "n", "answer"]), 41);
    let (base, _) = d.rss_kib();

    // 48 clients each sending a 15 MB line without a newline.
    let floods: Vec<_> = (0..48).map(|_| flood(&d.socket, 15 << 20)).collect();
    assert_eq!(
        d.json(&["call", "n", "answer"]),
        41,
        "served during the flood"
    );
    for f in floods {
        f.join().unwrap();
    }
    let (_, peak_flood) = d.rss_kib();

    // 2000 idle connections: the longest idle ones are closed to make room.
    raise_fd_limit(4096);
    let idle: Vec<UnixStream> = (0..2000)
        .filter_map(|_| UnixStream::connect(&d.socket).ok())
        .collect();
    assert!(idle.len() >= 1000, "{} connected", idle.len());
    assert_eq!(
        d.json(&["call", "n", "answer"]),
        41,
        "served past 2000 idle"
    );
    drop(idle);

    // 256 connections each stuck in the middle of a request: the next one is refused
    // with a message, and the stuck ones are closed at their deadline.
    let stuck: Vec<UnixStream> = (0..256)
        .map(|_| {
            let mut s = UnixStream::connect(&d.socket).unwrap();
            s.write_all(b"{\"op\":").unwrap();
            s
        })
        .collect();
    // Busy once the daemon has read their first bytes: until their send queues are empty.
    let unread = |s: &UnixStream| {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ on a socket we own, into a live int.
        unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        n
    };
    assert!(wait_until(Duration::from_secs(10), || stuck
        .iter()
        .all(|s| unread(s) == 0)));
    let mut extra = UnixStream::connect(&d.socket).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(
        answer.contains("\"busy\"") && answer.contains("at most 256 connections"),
        "{answer}"
    );
    let mut first = stuck.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut said = String::new();
    let _ = first.read_to_string(&mut said);
    assert!(said.contains("not finished within 3 s"), "{said}");
    drop(first);
    assert!(
        wait_until(Duration::from_secs(10), || d
            .host(&["list", "--json"])
            .status
            .success()),
        "neighbours served again:\n{}",
        d.log()
    );
    assert_eq!(d.json(&["call", "n", "answer"]), 41);

    let (rss, peak) = d.rss_kib();
    eprintln!(
        "daemon VmRSS: {base} KiB before, {rss} KiB after; VmHWM {peak_flood} KiB after the \
         line flood, {peak} KiB at the end"
    );
    assert!(
        peak < base + 64 * 1024,
        "peak {peak} KiB vs {base} KiB before"
    );
    // The log stayed bounded too: refusals are rate-limited.
    let lines = d
        .log()
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN "))
        .count();
    assert!(lines < 500, "{lines} log lines");
}

/// The cgroup directories `pid` is in that the daemon `daemon` is not in.
fn own_cgroups(pid: i32, daemon: i32) -> Vec<PathBuf> {
    let read = |p: i32| -> Vec<(String, String)> {
        std::fs::read_to_string(format!("/proc/{p}/cgroup"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ':');
                it.next()?;
                Some((it.next()?.to_string(), it.next()?.to_string()))
            })
            .collect()
    };
    let theirs = read(daemon);
    let root = Path::new("/sys/fs/cgroup");
    read(pid)
        .into_iter()
        .filter(|e| !theirs.contains(e))
        .filter_map(|(ctrls, path)| {
            let mount = if ctrls.is_empty() {
                if root.join("cgroup.controllers").exists() {
                    root.to_path_buf()
                } else {
                    root.join("unified")
                }
            } else {
                root.join(ctrls.trim_start_matches("name="))
            };
            let dir = mount.join(path.trim_start_matches('/'));
            dir.is_dir().then_some(dir)
        })
        .collect()
}

#[test]
fn after_kill_9_the_next_daemon_leaves_nothing_of_the_dead_one() {
    let dir = scratch();
    // Without a pool, so that each sandbox's directory and cgroup carry its id and the counts
    // below are exact (prepared runners' `pool.*` directories are swept the same way).
    let mut first = Daemon::start(dir.path(), "first", &["--pool", "0"]);
    let lib = block_on(built("sandbox_app"));
    let (mut pids, mut dirs, mut cgroups) = (Vec::new(), Vec::new(), Vec::new());
    for id in ["dead-a", "dead-b"] {
        first.json(&["create", id, "--lib", lib.to_str().unwrap()]);
        first.json(&["workers", id, "--add", "2"]);
        let info = first.json(&["info", id]);
        let runner = info["pid"].as_i64().unwrap() as i32;
        pids.extend(tree(runner));
        dirs.push(PathBuf::from(info["dir"].as_str().unwrap()));
        cgroups.extend(own_cgroups(runner, first.pid()));
    }
    let dead_pid = first.pid();
    let state = first.state.clone();
    let store = state.with_file_name("state.libs");
    assert!(dirs.iter().all(|d| d.starts_with(&state) && d.is_dir()));
    assert!(std::fs::read_dir(&store).unwrap().count() > 0);
    first.crash();
    assert!(
        dirs.iter().all(|d| d.is_dir()),
        "a killed daemon leaves its dirs"
    );
    // A process that outlived its daemon in a sandbox's cgroup (say, one the app detached):
    // put one there by hand, in every hierarchy of the first sandbox.
    let mut survivor = Command::new("sleep").arg("60").spawn().unwrap();
    let survivor_pid = survivor.id() as i32;
    let first_cgroups: Vec<&PathBuf> = cgroups
        .iter()
        .filter(|c| c.to_string_lossy().contains("dead-a"))
        .collect();
    for c in &first_cgroups {
        std::fs::write(c.join("cgroup.procs"), survivor_pid.to_string()).unwrap();
    }

    let second = Daemon::start(dir.path(), "second", &["--pool", "0"]);
    let log = second.log();
    let line: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("recovered what dead hosts left"))
        .collect();
    assert_eq!(line.len(), 1, "{log}");
    eprintln!("{}", line[0]);
    assert!(line[0].contains("2 sandbox dirs"), "{}", line[0]);
    if !cgroups.is_empty() {
        assert!(
            line[0].contains("2 cgroups (1 processes killed)"),
            "{}",
            line[0]
        );
    }
    // Reaped by us, its parent: it must have been killed by the sweep.
    let status = survivor.wait().unwrap();
    if !first_cgroups.is_empty() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    } else {
        let _ = survivor.kill();
    }
    assert!(line[0].contains("0 errors"), "{}", line[0]);
    for d in &dirs {
        assert!(!d.exists(), "{} left", d.display());
    }
    for c in &cgroups {
        assert!(!c.exists(), "cgroup {} left", c.display());
    }
    assert!(
        wait_until(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p))),
        "processes left: {pids:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&store)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "store files left: {left:?}");
    // Nothing in any hierarchy still carries the dead daemon's pid.
    let marker = format!("-{dead_pid}-");
    for parent in cgroups.iter().filter_map(|c| c.parent()) {
        for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.contains(&marker), "{}", e.path().display());
        }
    }
    assert_eq!(second.json(&["list"]), serde_json::json!([]));
}

/// A copy of `bin` in `dir` that any uid can run; retried while another test's fork holds
/// it open for writing (ETXTBSY).
fn runnable_copy(bin: &str, dir: &Path) -> PathBuf {
    let to = dir.join(Path::new(bin).file_name().unwrap());
    std::fs::copy(bin, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

fn output_retrying(cmd: &mut Command) -> Output {
    for _ in 0..100 {
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other.unwrap(),
        }
    }
    panic!("stayed busy");
}

fn spawn_retrying(cmd: &mut Command) -> Child {
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other.unwrap(),
        }
    }
    panic!("stayed busy");
}

fn open_scratch() -> TempDir {
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

#[test]
fn a_client_sends_nothing_to_a_server_of_another_uid() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a server as another uid");
        return;
    }
    let dir = open_scratch();
    let server = runnable_copy(env!("CARGO_BIN_EXE_e2e-fake-server"), dir.path());
    let socket = dir.path().join("host.sock");
    let report = dir.path().join("report");
    let mut fake = spawn_retrying(
        Command::new(&server)
            .arg(&socket)
            .arg(&report)
            .uid(65534)
            .gid(65534)
            .current_dir("/")
            .stdin(Stdio::null()),
    );
    let _kill = KillOnDrop(&mut fake);
    assert!(wait_until(Duration::from_secs(10), || socket.exists()));
    let read_report = || std::fs::read_to_string(&report).unwrap_or_default();
    for args in [
        &["list"][..],
        &["operate", "demo", "--provider", "anthropic"],
    ] {
        let out = Command::new(HOST)
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

struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_client_cannot_make_a_root_daemon_open_what_it_cannot_open_itself() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = open_scratch();
    let d = Daemon::start(dir.path(), "fds", &[]);
    // Open the way to the socket, so only the files stand in the way.
    std::fs::set_permissions(
        d.socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let bin = runnable_copy(HOST, dir.path());
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
        let out = output_retrying(
            Command::new(&bin)
                .args(args)
                .arg("--socket")
                .arg(&d.socket)
                .uid(65534)
                .gid(65534)
                .current_dir("/")
                .stdin(Stdio::null()),
        );
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
    assert_eq!(d.json(&["list"]), serde_json::json!([]));
}
