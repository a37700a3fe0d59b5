//! Helpers shared by the end-to-end tests: a manager on a private state directory, the test
//! apps built once per test binary, and process checks.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use appbuild::Compiler;
use sandbox::{Manager, ManagerConfig};
use tempfile::TempDir;

pub mod serve;

/// The host binary under test.
pub const HOST: &str = env!("CARGO_BIN_EXE_e2e-host");

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The demo app crate.
pub fn demo_app() -> PathBuf {
    root().join("sandbox_app")
}

/// A test app crate under tests/apps.
pub fn test_app(name: &str) -> PathBuf {
    root().join("tests").join("apps").join(name)
}

/// A manager whose sandboxes live in a fresh temp dir (returned so the test can check it).
pub fn manager() -> (Manager, TempDir) {
    let state = scratch();
    let mut config = ManagerConfig::new(HOST);
    config.state_dir = state.path().join("sandboxes");
    config.compiler = compiler();
    (Manager::new(config).unwrap(), state)
}

/// The compiler the tests use: the workspace's shared apps target dir, release profile.
pub fn compiler() -> Compiler {
    Compiler {
        target_dir: root().join("target").join("apps"),
        shim_exe: Some(HOST.into()),
        ..Compiler::default()
    }
}

/// Builds an app crate once per test binary and keeps a private copy of the `.so`
/// (the target dir's file is overwritten by later builds).
pub async fn built(name: &str) -> PathBuf {
    let crate_dir = if name == "sandbox_app" {
        demo_app()
    } else {
        test_app(name)
    };
    cached(name.to_string(), async move {
        compiler().build(&crate_dir).await
    })
    .await
}

/// The demo app's `src/lib.rs` with `answer` changed to `n`.
pub fn demo_source_answering(n: i64) -> String {
    std::fs::read_to_string(demo_app().join("src/lib.rs"))
        .unwrap()
        .replace(
            "pub const ANSWER: i64 = 41;",
            &format!("pub const ANSWER: i64 = {n};"),
        )
}

/// Builds the demo app answering `n` (once per test binary and `n`).
pub async fn demo_lib_answering(n: i64) -> PathBuf {
    let source = demo_source_answering(n);
    cached(format!("answer-{n}"), async move {
        compiler().build_source(&demo_app(), &source).await
    })
    .await
}

/// Set: the test apps are not built but taken from `target/e2e-libs/<key>.so` as they are.
pub const PREBUILT_LIBS_ENV: &str = "SANDBOX_TEST_PREBUILT_LIBS";

/// Builds once per test process, then keeps a copy under `target/e2e-libs` (a build cache,
/// like the rest of `target/`): the target dir's own file is overwritten by later builds.
async fn cached(
    key: String,
    build: impl std::future::Future<Output = Result<appbuild::Built, appbuild::error::BuildError>>,
) -> PathBuf {
    static DONE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let dir = root().join("target").join("e2e-libs");
    let out = dir.join(format!("{key}.so"));
    // Prebuilt by the caller (scripts/cgroup-v2-test.sh: a guest without a build).
    if std::env::var_os(PREBUILT_LIBS_ENV).is_some() {
        assert!(
            out.is_file(),
            "${PREBUILT_LIBS_ENV} is set but {} is missing",
            out.display()
        );
        return out;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let _serial = LOCK.lock().await;
    if !DONE.lock().unwrap().contains(&key) {
        let lib = build.await.unwrap().lib;
        let tmp = dir.join(format!("{key}.{}.tmp", std::process::id()));
        std::fs::copy(lib, &tmp).unwrap();
        std::fs::rename(&tmp, &out).unwrap();
        DONE.lock().unwrap().push(key);
    }
    out
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond().await
}

/// Every process in the tree under `pid` (including it).
pub fn tree(pid: i32) -> Vec<i32> {
    sandbox::procfs::tree(pid).iter().map(|p| p.pid).collect()
}

/// A scratch directory outside `/tmp`: a sandbox's private `/tmp` would hide anything there.
pub fn scratch() -> TempDir {
    tempfile::Builder::new()
        .prefix("e2e-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// Env var naming a file to which skipped tests append their `SKIPPED:` line (one per test);
/// `scripts/cgroup-v2-test.sh` and `.ci/run` count them.
pub const SKIP_FILE_ENV: &str = "SANDBOX_TEST_SKIP_FILE";

/// Records that the calling test cannot run here and why: prints `SKIPPED: <test>: <reason>`
/// to stdout and appends the same line to `$SANDBOX_TEST_SKIP_FILE`. The caller then returns
/// (libtest counts it as passed; the scripts subtract the skips).
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("?");
    let line = format!("SKIPPED: {name}: {reason}\n");
    print!("{line}");
    if let Some(path) = std::env::var_os(SKIP_FILE_ENV).filter(|p| !p.is_empty()) {
        use std::io::Write;
        // O_APPEND: one write(2) per line, so parallel tests and processes do not interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Env var with the cgroup parent (`--cgroup-parent`) for the tests' sandboxes: a delegated
/// cgroup v2 subtree when not root. Unset: the detected default.
pub const CGROUP_PARENT_ENV: &str = "SANDBOX_TEST_CGROUP_PARENT";

/// `spec` with its cgroup parent from [`CGROUP_PARENT_ENV`].
pub fn in_test_cgroup(mut spec: sandbox::SandboxSpec) -> sandbox::SandboxSpec {
    spec.cgroup_parent = std::env::var_os(CGROUP_PARENT_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    spec
}

/// The cgroup version of the unified or legacy hierarchy this machine mounts.
pub fn cgroup_v2() -> bool {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    let rc = unsafe { libc::statfs(c"/sys/fs/cgroup".as_ptr(), st.as_mut_ptr()) };
    // SAFETY: statfs filled it (rc == 0).
    rc == 0 && unsafe { st.assume_init() }.f_type == libc::CGROUP2_SUPER_MAGIC
}

/// Destroys every sandbox of a manager when dropped, also when the test panics.
pub struct Cleanup(pub Manager);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let m = self.0.clone();
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

/// Creates sandbox `id` of the hostile test app with `limits` at `level`, in the tests'
/// cgroup parent.
pub async fn hostile(
    m: &Manager,
    id: &str,
    limits: sandbox::Limits,
    level: sandbox::Level,
) -> sandbox::SandboxInfo {
    let mut spec = in_test_cgroup(
        sandbox::SandboxSpec::new(sandbox::AppSource::Library(built("hostile_app").await))
            .with_isolation(level),
    );
    spec.limits = limits;
    m.create(id, spec)
        .await
        .unwrap_or_else(|e| panic!("create {id}: {e}"))
}

/// Whether the daemon listening on `socket` is process `pid`: its `ping` answers with that
/// pid. A bare connect is not enough: a killed daemon's exiting children can hold its old
/// listener for a moment, and a connect then reaches them instead of the new daemon.
pub fn answers_as(socket: &Path, pid: u32) -> bool {
    use std::io::{BufRead, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"{\"op\":\"ping\"}\n").is_err() {
        return false;
    }
    let mut line = String::new();
    if std::io::BufReader::new(stream)
        .read_line(&mut line)
        .is_err()
    {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v["ok"]["pid"].as_u64())
        == Some(u64::from(pid))
}
