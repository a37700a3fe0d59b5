//! The test apps (the demo app and the crates under tests/apps), built once per test process
//! and kept under `target/e2e-libs`, and the compiler the tests use.

use std::path::{Path, PathBuf};

use appbuild::Compiler;

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

/// The compiler the tests use: the workspace's shared apps target dir, release profile.
pub fn compiler() -> Compiler {
    Compiler {
        target_dir: root().join("target").join("apps"),
        shim_exe: Some(crate::bins::host().into()),
        ..Compiler::default()
    }
}

/// Builds an app crate (`sandbox_app` or one under tests/apps) once per test process and
/// keeps a private copy of the `.so` (the target dir's file is overwritten by later builds).
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
    let original = std::fs::read_to_string(demo_app().join("src/lib.rs")).unwrap();
    let changed = original.replace(
        "pub const ANSWER: i64 = 41;",
        &format!("pub const ANSWER: i64 = {n};"),
    );
    assert!(
        n == 41 || changed != original,
        "no `pub const ANSWER: i64 = 41;` in the demo app"
    );
    changed
}

/// Writes the demo app's source answering `n` to `dir/lib-N.rs` and returns its path.
pub fn demo_source_file(dir: &Path, n: i64) -> PathBuf {
    let path = dir.join(format!("lib-{n}.rs"));
    std::fs::write(&path, demo_source_answering(n)).unwrap();
    path
}

/// Builds the demo app answering `n` (once per test process and `n`).
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

/// Runs `f` on a fresh single-threaded runtime (for the tests that are not async).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
