//! `host serve` and its thin clients, through the real binary: the control socket, the
//! edit -> rebuild -> reload loop (scripts/rebuild-and-reload.sh and `reload --watch`), JSON
//! output, peer checks, shutdown and concurrent clients.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tempfile::TempDir;

/// A `host serve` on a private socket and runtime directory. Dropping it stops the daemon
/// (SIGTERM, then SIGKILL), also when a test panics.
struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    _dir: Option<TempDir>,
}

fn scratch(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
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

/// Waits for a child to exit, up to `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Daemon {
    /// A daemon in a fresh temp directory.
    fn start() -> Daemon {
        let dir = scratch("e2e-daemon-");
        let mut d = Daemon::start_at(&dir.path().join("ctl").join("host.sock"), dir.path());
        d._dir = Some(dir);
        d
    }

    /// A daemon on `socket`, with its runtime directory and log under `dir`.
    fn start_at(socket: &Path, dir: &Path) -> Daemon {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("daemon-{n}.log"));
        let mut child = spawn_serve(socket, &log);
        let pid = child.id();
        let up = wait_until(Duration::from_secs(20), || {
            answers_as(socket, pid) || child.try_wait().unwrap().is_some()
        });
        let status = child.try_wait().unwrap();
        assert!(
            up && status.is_none(),
            "daemon did not come up ({status:?}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Daemon {
            child: Some(child),
            socket: socket.to_owned(),
            log,
            _dir: None,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Runs `host ARGS --socket SOCKET`.
    fn host(&self, args: &[&str]) -> Output {
        host_cmd(&self.socket).args(args).output().unwrap()
    }

    /// Runs a client command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.host(args);
        assert!(
            out.status.success(),
            "host {args:?} failed ({}):\n{}\n--- daemon log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Runs a client command with `--json` that must succeed; returns the parsed value.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.ok(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    fn call_answer(&self, id: &str) -> Value {
        self.json(&["call", id, "answer"])
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` and waits for the daemon to exit.
    fn stop_with(&mut self, signal: Signal) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        match wait_exit(&mut child, Duration::from_secs(20)) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon ignored {signal}:\n{}", self.log());
            }
        }
    }

    /// SIGKILLs the daemon, as a crash would.
    fn crash(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            if wait_exit(&mut child, Duration::from_secs(15)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn spawn_serve(socket: &Path, log: &Path) -> Child {
    Command::new(HOST)
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .env_remove("SANDBOX_HOST_SOCKET")
        .env("RUST_LOG", "host=debug,info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn host_cmd(socket: &Path) -> Command {
    let mut cmd = Command::new(HOST);
    cmd.env("SANDBOX_HOST_SOCKET", socket).stdin(Stdio::null());
    // The client forwards provider variables to `operate`; keep the tests' environment out.
    for (key, _) in std::env::vars() {
        if proto::operate::FORWARDED_ENV
            .iter()
            .any(|p| key.starts_with(p))
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A child process killed when dropped (a `reload --watch`).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A copy of the demo app crate in `dir/app`, buildable from there: the relative
/// `sandbox_abi` path made absolute and an empty `[workspace]` table added. The package is
/// renamed to `name`, one per test: in the shared apps target dir a cdylib's artifact is
/// named after its package, and cargo fingerprints a workspace-root crate by name and
/// version, not by path, so two same-named copies built there would share one artifact and
/// one freshness record (and one copy could be served the other's library).
fn copy_demo_crate(dir: &Path, name: &str) -> PathBuf {
    let app = dir.join("app");
    std::fs::create_dir_all(app.join("src")).unwrap();
    std::fs::copy(demo_app().join("src/lib.rs"), app.join("src/lib.rs")).unwrap();
    let abi = root().join("sandbox_abi");
    let manifest = std::fs::read_to_string(demo_app().join("Cargo.toml"))
        .unwrap()
        .replace(
            "path = \"../sandbox_abi\"",
            &format!("path = \"{}\"", abi.display()),
        )
        .replace("name = \"sandbox_app\"", &format!("name = \"{name}\""));
    assert!(manifest.contains(&abi.display().to_string()));
    std::fs::write(app.join("Cargo.toml"), format!("{manifest}\n[workspace]\n")).unwrap();
    app
}

/// Rewrites the answer constant of a crate copy (with a fresh mtime).
fn set_answer(app: &Path, value: &str) {
    let path = app.join("src/lib.rs");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("pub const ANSWER: i64 = ").unwrap();
    let end = start + text[start..].find(';').unwrap();
    let new = format!(
        "{}pub const ANSWER: i64 = {value}{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&path, new).unwrap();
}

fn script() -> PathBuf {
    root().join("scripts").join("rebuild-and-reload.sh")
}

/// Runs the rebuild-and-reload script from `/`, finding the binary through `HOST_BIN`.
fn run_script(d: &Daemon, id: &str, app: &Path) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(script())
        .arg(id)
        .arg(app)
        .current_dir("/")
        .env("HOST_BIN", HOST)
        .env("SANDBOX_HOST_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, started.elapsed())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn has_fields(value: &Value, fields: &[&str]) {
    for field in fields {
        assert!(value.get(field).is_some(), "no {field:?} in {value}");
    }
}

#[test]
fn edit_rebuild_reload_through_the_script_and_a_broken_edit_keeps_the_old_version() {
    let d = Daemon::start();
    let created = d.ok(&["create", "loop"]);
    assert!(created.starts_with("created loop: pid "), "{created}");
    assert_eq!(d.call_answer("loop"), json!(41));

    let work = scratch("e2e-edit-");
    let app = copy_demo_crate(work.path(), "sandbox_app_script_test");
    set_answer(&app, "43");
    let (out, took) = run_script(&d, "loop", &app);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "script failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("reloaded loop: v1 -> v2 in "),
        "{stdout}"
    );
    eprintln!("first build of the copy: {stdout} (test saw {took:?})");
    assert_eq!(d.call_answer("loop"), json!(43));

    // A one-line change, now that the copy has been built once: the figure to watch.
    set_answer(&app, "44");
    let (out, took) = run_script(&d, "loop", &app);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("reloaded loop: v2 -> v3 in "),
        "{stdout}"
    );
    eprintln!("one-line change: {stdout} (test saw {took:?})");
    assert_eq!(d.call_answer("loop"), json!(44));
    assert_eq!(d.json(&["rollback", "loop", "2"])["to_version"], json!(2));
    assert_eq!(d.call_answer("loop"), json!(43));

    set_answer(&app, "\"forty-three\"");
    let (out, _) = run_script(&d, "loop", &app);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a broken build reloaded: {}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("error[E0308]"), "{stderr}");
    assert!(stderr.contains("mismatched types"), "{stderr}");
    assert!(stderr.contains("keeps its old version"), "{stderr}");
    assert_eq!(d.call_answer("loop"), json!(43));
    let info = d.json(&["info", "loop"]);
    assert_eq!(info["app"]["version"], json!(2));
    assert_eq!(info["versions"].as_array().unwrap().len(), 3);

    // Back to the source of the serving version: same library, nothing to reload.
    set_answer(&app, "43");
    let (out, _) = run_script(&d, "loop", &app);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("unchanged loop: still v2 in "),
        "{stdout}"
    );
}

#[test]
fn reload_watch_rebuilds_on_save_and_survives_a_broken_build() {
    let d = Daemon::start();
    let work = scratch("e2e-watch-");
    let app = copy_demo_crate(work.path(), "sandbox_app_watch_test");
    let app_str = app.to_str().unwrap();
    d.ok(&["create", "watched", "--app", app_str]);
    assert_eq!(d.call_answer("watched"), json!(41));

    let out_path = work.path().join("watch.out");
    let err_path = work.path().join("watch.err");
    let watch = Killed(
        host_cmd(&d.socket)
            .args(["reload", "watched", "--watch", app_str])
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let watching = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&err_path).is_ok_and(|e| e.contains("watching"))
    });
    assert!(watching, "{}", std::fs::read_to_string(&err_path).unwrap());

    set_answer(&app, "\"broken\"");
    let failed = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&err_path).is_ok_and(|e| e.contains("mismatched types"))
    });
    assert!(failed, "{}", std::fs::read_to_string(&err_path).unwrap());
    assert_eq!(d.call_answer("watched"), json!(41));

    set_answer(&app, "44");
    let reloaded = wait_until(Duration::from_secs(60), || {
        d.call_answer("watched") == json!(44)
    });
    assert!(
        reloaded,
        "watch did not reload: {}\n{}",
        std::fs::read_to_string(&out_path).unwrap(),
        std::fs::read_to_string(&err_path).unwrap()
    );
    // The daemon has swapped; the watcher prints its line once the answer reaches it.
    let printed = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&out_path).is_ok_and(|out| {
            out.lines()
                .any(|l| l.starts_with("reloaded watched: v1 -> v2 in "))
        })
    });
    assert!(printed, "{}", std::fs::read_to_string(&out_path).unwrap());
    drop(watch);
}

#[test]
fn every_command_answers_json_with_the_documented_fields() {
    let d = Daemon::start();
    let lib41 = block_on(built("sandbox_app"));
    let lib42 = block_on(demo_lib_answering(42));

    let info = d.json(&[
        "create",
        "shapes",
        "--lib",
        lib41.to_str().unwrap(),
        "--max-open-files",
        "256",
        "--address-space",
        "4G",
    ]);
    has_fields(
        &info,
        &[
            "id",
            "status",
            "pid",
            "created_at",
            "restart_count",
            "app",
            "versions",
            "limits",
            "isolation",
            "startup",
        ],
    );
    has_fields(&info["app"], &["path", "version", "sha256"]);
    // Where the start spent its time, measured phase by phase.
    assert!(info["startup"]["spawn_us"].as_u64().unwrap() > 0, "{info}");
    assert!(info["startup"]["ready_us"].as_u64().unwrap() > 0, "{info}");
    assert_eq!(info["status"], json!("running"));
    assert_eq!(info["limits"]["max_open_files"], json!(256));
    assert_eq!(info["limits"]["address_space"], json!(4u64 << 30));
    assert_eq!(info["versions"].as_array().unwrap().len(), 1);

    let list = d.json(&["list"]);
    assert_eq!(list[0]["id"], json!("shapes"));

    assert_eq!(d.call_answer("shapes"), json!(41));
    assert_eq!(d.ok(&["call", "shapes", "answer"]), "41");
    assert_eq!(
        d.json(&["call", "shapes", "calls", "{}", "--timeout", "2000"]),
        json!(2)
    );

    let usage = d.json(&["usage", "shapes"]);
    has_fields(
        &usage,
        &[
            "sandbox_id",
            "pid",
            "processes",
            "threads",
            "memory_bytes",
            "cpu_time_ms",
            "cpu_percent",
            "open_fds",
            "uptime_ms",
            "restart_count",
            "app_version",
        ],
    );
    assert_eq!(usage["sandbox_id"], json!("shapes"));
    assert!(usage["processes"].as_u64().unwrap() >= 2, "{usage}");
    assert!(usage["memory_bytes"].as_u64().unwrap() > 0, "{usage}");

    let reload = d.json(&["reload", "shapes", "--lib", lib42.to_str().unwrap()]);
    has_fields(
        &reload,
        &[
            "status",
            "from_version",
            "to_version",
            "load_us",
            "compile_ms",
        ],
    );
    assert_eq!(reload["status"], json!("reloaded"));
    assert_eq!(
        (reload["from_version"].clone(), reload["to_version"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(d.call_answer("shapes"), json!(42));
    let again = d.json(&["reload", "shapes", "--lib", lib42.to_str().unwrap()]);
    assert_eq!(again["status"], json!("no_change"));

    let back = d.json(&["rollback", "shapes", "1"]);
    assert_eq!(
        (back["from_version"].clone(), back["to_version"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(d.call_answer("shapes"), json!(41));
    let human = d.ok(&["rollback", "shapes", "2"]);
    assert!(
        human.starts_with("rolled back shapes: v1 -> v2 (swap "),
        "{human}"
    );

    let workers = d.json(&["workers", "shapes"]);
    assert_eq!(workers["workers"].as_array().unwrap().len(), 1, "{workers}");
    let workers = d.json(&["workers", "shapes", "--add", "2"]);
    assert_eq!(workers["workers"].as_array().unwrap().len(), 3, "{workers}");
    assert!(
        d.ok(&["workers", "shapes"])
            .starts_with("shapes: 3 worker(s)")
    );

    let restarted = d.json(&["restart", "shapes"]);
    assert_eq!(restarted["restart_count"], json!(1));
    assert_ne!(restarted["pid"], info["pid"]);
    assert_eq!(d.call_answer("shapes"), json!(42));

    assert!(
        d.ok(&["info", "shapes"])
            .contains("  started in ms: install "),
        "the human info shows the startup phases"
    );
    for human in [
        d.ok(&["info", "shapes"]),
        d.ok(&["usage", "shapes"]),
        d.ok(&["list"]),
    ] {
        assert!(human.contains("shapes"), "{human}");
    }

    assert_eq!(
        d.json(&["destroy", "shapes"]),
        json!({"destroyed": "shapes"})
    );
    // Failures: non-zero, one line on stderr, the error as JSON on stdout with --json.
    let out = d.host(&["info", "shapes", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["kind"], json!("not_found"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "host: sandbox shapes not found");
    let out = d.host(&["call", "nope", "answer", "{not json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
    let out = d.host(&[
        "create",
        "bad id!",
        "--lib",
        lib41.to_str().unwrap(),
        "--json",
    ]);
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["kind"], json!("invalid_id"));
}

#[test]
fn no_daemon_says_how_to_start_one() {
    let dir = scratch("e2e-nodaemon-");
    let socket = dir.path().join("host.sock");
    let out = host_cmd(&socket).args(["list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no daemon at"), "{stderr}");
    assert!(
        stderr.contains(&format!("host serve --socket {}", socket.display())),
        "{stderr}"
    );
}

#[test]
fn bad_requests_never_crash_the_daemon() {
    let d = Daemon::start();
    let stream = UnixStream::connect(&d.socket).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut ask = |line: &str| -> Value {
        writer.write_all(line.as_bytes()).unwrap();
        writer.write_all(b"\n").unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    };
    assert_eq!(ask("not json")["error"]["kind"], json!("bad_request"));
    assert_eq!(
        ask(r#"{"op":"explode"}"#)["error"]["kind"],
        json!("bad_request")
    );
    assert_eq!(
        ask(r#"{"op":"info"}"#)["error"]["kind"],
        json!("bad_request")
    );
    assert_eq!(
        ask(r#"{"op":"create","id":"x","spec":{"app":{"crate":"relative/dir"}}}"#)["error"]["kind"],
        json!("bad_request")
    );
    assert_eq!(
        ask(r#"{"op":"call","id":"missing","function":"answer"}"#)["error"]["kind"],
        json!("not_found")
    );
    let hello = ask(r#"{"op":"ping"}"#);
    assert_eq!(hello["ok"]["pid"], json!(d.pid()));

    // A client that hangs up mid-line, and one that sends an endless line.
    let mut half = UnixStream::connect(&d.socket).unwrap();
    half.write_all(br#"{"op":"pi"#).unwrap();
    drop(half);
    let mut flood = UnixStream::connect(&d.socket).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..20 {
        if flood.write_all(&chunk).is_err() {
            break;
        }
    }
    drop(flood);
    assert_eq!(ask(r#"{"op":"list"}"#), json!({"ok": []}));
    assert_eq!(d.json(&["list"]), json!([]));
}

/// Cgroup paths named in a sandbox's isolation report.
fn reported_cgroups(value: &Value, out: &mut Vec<PathBuf>) {
    match value {
        Value::String(s) => {
            for word in s.split_whitespace() {
                if word.starts_with("/sys/fs/cgroup/") {
                    out.push(PathBuf::from(word.trim_end_matches([',', ';', ')'])));
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| reported_cgroups(v, out)),
        Value::Object(map) => map.values().for_each(|v| reported_cgroups(v, out)),
        _ => {}
    }
}

/// The `/proc/PID/cgroup` lines of a process: (controllers, path).
fn cgroups_of(pid: i32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// The cgroup directories a runner is in that its daemon is not in: the sandbox's own.
fn own_cgroups(runner: i32, daemon: i32) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let daemon = cgroups_of(daemon);
    cgroups_of(runner)
        .into_iter()
        .filter(|entry| !daemon.contains(entry))
        .filter_map(|(controllers, path)| {
            let mount = if controllers.is_empty() {
                if root.join("cgroup.controllers").exists() {
                    root.to_path_buf()
                } else {
                    root.join("unified")
                }
            } else {
                root.join(controllers.trim_start_matches("name="))
            };
            let dir = mount.join(path.trim_start_matches('/'));
            dir.is_dir().then_some(dir)
        })
        .collect()
}

/// Creates sandboxes, stops the daemon with `signal`, and checks nothing is left: no
/// process, sandbox directory, cgroup, socket or lock file.
fn shutdown_leaves_nothing(signal: Signal, ids: &[&str]) {
    let mut d = Daemon::start();
    let lib = block_on(built("sandbox_app"));
    let mut pids = Vec::new();
    let mut dirs = Vec::new();
    let mut cgroups = Vec::new();
    for id in ids {
        d.json(&["create", id, "--lib", lib.to_str().unwrap()]);
        d.ok(&["workers", id, "--add", "2"]);
        let info = d.json(&["info", id]);
        let runner = info["pid"].as_i64().unwrap() as i32;
        pids.extend(tree(runner));
        dirs.push(PathBuf::from(info["dir"].as_str().unwrap()));
        reported_cgroups(&info["isolation"], &mut cgroups);
        cgroups.extend(own_cgroups(runner, d.pid()));
    }
    assert!(pids.len() >= 3 * ids.len(), "{pids:?}");
    assert!(dirs.iter().all(|dir| dir.is_dir()), "{dirs:?}");

    let status = d.stop_with(signal);
    assert!(status.success(), "{status}:\n{}", d.log());
    assert!(
        wait_until(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p))),
        "left running: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    assert!(!d.socket.exists(), "socket left behind");
    assert!(
        !daemon::lock_path(&d.socket).exists(),
        "lock file left behind"
    );
    for dir in &dirs {
        assert!(
            !dir.exists(),
            "sandbox directory {} left behind",
            dir.display()
        );
    }
    for cgroup in &cgroups {
        assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
    }
    assert!(d.log().contains("shutting down"), "{}", d.log());
}

#[test]
fn sigterm_destroys_every_sandbox_and_removes_the_socket() {
    shutdown_leaves_nothing(Signal::SIGTERM, &["term-a", "term-b"]);
}

#[test]
fn sigint_does_the_same() {
    shutdown_leaves_nothing(Signal::SIGINT, &["int-a"]);
}

#[test]
fn a_second_daemon_is_refused_and_a_stale_socket_is_replaced() {
    let dir = scratch("e2e-twice-");
    let socket = dir.path().join("ctl").join("host.sock");
    let mut first = Daemon::start_at(&socket, dir.path());
    let perms = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(perms(socket.parent().unwrap()), 0o700);
    assert_eq!(perms(&socket), 0o600);

    let log = dir.path().join("second.log");
    let mut second = spawn_serve(&socket, &log);
    let status = wait_exit(&mut second, Duration::from_secs(20)).expect("second daemon runs");
    assert!(!status.success());
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains(&format!(
            "another daemon (pid {}) is already serving",
            first.pid()
        )),
        "{said}"
    );
    assert_eq!(first.json(&["list"]), json!([]));

    first.crash();
    assert!(socket.exists(), "a killed daemon leaves its socket");
    let third = Daemon::start_at(&socket, dir.path());
    assert_eq!(third.json(&["list"]), json!([]));
    assert!(third.log().contains("stale socket"), "{}", third.log());
}

#[test]
fn a_client_of_another_uid_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    // A scratch dir others may enter, so that only the daemon's own 0700 directory (and
    // then only its peer check) stands in the way; it also holds a copy of the binary that
    // uid 65534 can surely execute.
    let base = scratch("e2e-nobody-");
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start_at(&base.path().join("ctl").join("host.sock"), base.path());
    let bin = base.path().join("host");
    std::fs::copy(HOST, &bin).unwrap();
    let as_nobody = || {
        let mut cmd = Command::new(&bin);
        cmd.args(["list", "--socket"])
            .arg(&d.socket)
            .uid(65534)
            .gid(65534)
            .current_dir("/")
            .stdin(Stdio::null());
        // Another test thread may fork while the copy is still open for writing; the
        // child holds the fd until its exec, and meanwhile exec of the copy is ETXTBSY.
        for _ in 0..100 {
            match cmd.output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => return other.unwrap(),
            }
        }
        panic!("{} stayed busy", bin.display());
    };

    // The directory is 0700: the kernel stops it before the daemon sees it.
    let out = as_nobody();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");

    // With the directory and socket opened up, SO_PEERCRED is what refuses it.
    let dir = d.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
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

/// A raw connection to the control socket.
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(socket: &Path) -> Conn {
        let writer = UnixStream::connect(socket).unwrap();
        Conn {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
        }
    }

    /// Sends one request; returns the answer's value, which must be a success.
    fn ok(&mut self, request: &Value) -> Value {
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        self.reader.read_line(&mut answer).unwrap();
        let mut answer: Value = serde_json::from_str(&answer).unwrap();
        match answer.get_mut("ok") {
            Some(value) => value.take(),
            None => panic!("{request} failed: {answer}"),
        }
    }
}

#[test]
fn two_clients_calling_and_reloading_at_once_lose_nothing() {
    let d = Daemon::start();
    let lib41 = block_on(built("sandbox_app"));
    let lib43 = block_on(demo_lib_answering(43));
    d.ok(&["create", "busy", "--lib", lib41.to_str().unwrap()]);
    const ROUNDS: usize = 30;

    // Each client keeps one connection open and fires requests back to back (so reloads
    // overlap), and goes through the binary every few rounds.
    // Each client keeps one connection open and fires requests back to back, switching
    // libraries every round (so nearly every reload swaps, and the two clients' reloads
    // overlap), and goes through the binary every few rounds.
    let client = |first: usize| {
        let libs = [&lib41, &lib43];
        let mut conn = Conn::open(&d.socket);
        let call = json!({"op": "call", "id": "busy", "function": "answer"});
        let mut answers = Vec::new();
        let mut reloads = Vec::new();
        for round in 0..ROUNDS {
            let lib = libs[(first + round) % 2];
            if round % 8 == 0 {
                answers.push(d.call_answer("busy"));
                reloads.push(d.json(&["reload", "busy", "--lib", lib.to_str().unwrap()]));
            } else {
                answers.push(conn.ok(&call));
                let reload = json!({"op": "reload", "id": "busy", "source": {"library": lib}});
                reloads.push(conn.ok(&reload));
            }
            answers.push(conn.ok(&call));
        }
        (answers, reloads)
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| client(1));
        let b = s.spawn(|| client(0));
        (a.join().unwrap(), b.join().unwrap())
    });

    let answers: Vec<&Value> = a.0.iter().chain(&b.0).collect();
    assert_eq!(answers.len(), 4 * ROUNDS);
    assert!(
        answers.iter().all(|v| **v == json!(41) || **v == json!(43)),
        "{answers:?}"
    );
    let reports: Vec<&Value> = a.1.iter().chain(&b.1).collect();
    assert_eq!(reports.len(), 2 * ROUNDS);
    let new_versions: Vec<u64> = reports
        .iter()
        .filter(|r| r["status"] == json!("reloaded"))
        .map(|r| r["to_version"].as_u64().unwrap())
        .collect();
    let unique: BTreeSet<u64> = new_versions.iter().copied().collect();
    assert_eq!(
        unique.len(),
        new_versions.len(),
        "a version number twice: {new_versions:?}"
    );

    let info = d.json(&["info", "busy"]);
    let versions: Vec<u64> = info["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=1 + new_versions.len() as u64).collect();
    let mut sorted = versions.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "history: {versions:?}");
    let current = info["app"]["version"].as_u64().unwrap();
    assert_eq!(
        Some(current),
        new_versions.iter().copied().max().or(Some(1))
    );
    let want = if info["app"]["sha256"] == info["versions"][0]["sha256"] {
        json!(41)
    } else {
        json!(43)
    };
    assert_eq!(d.call_answer("busy"), want);
}

#[test]
fn operate_reports_a_calm_sandbox_healthy_and_a_spiking_one_warning() {
    let d = Daemon::start();
    d.ok(&["create", "op-1"]);
    // The client's provider variables travel with the request; none are set, so: the mock.
    let calm = d.ok(&["operate", "op-1", "--provider", "mock"]);
    assert_eq!(
        calm,
        "[operator] state=healthy summary=\"sandbox stable\"\n[operator] notifications=0"
    );
    d.ok(&["workers", "op-1", "--add", "20"]);
    let spiking = d.json(&[
        "operate",
        "op-1",
        "--skill",
        "anomaly",
        "--provider",
        "mock",
    ]);
    assert_eq!(spiking["state"], "warning");
    assert_eq!(spiking["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(spiking["summary"], "process count elevated");
    // A missing key is a clear error, and the daemon keeps serving.
    let out = d.host(&["operate", "op-1", "--provider", "anthropic"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ANTHROPIC_API_KEY not set"),
        "{out:?}"
    );
    d.ok(&["destroy", "op-1"]);
}
