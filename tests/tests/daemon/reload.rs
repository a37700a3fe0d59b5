//! The edit -> rebuild -> reload loop through the real binary: scripts/rebuild-and-reload.sh
//! and `reload --watch`, a broken edit keeping the old version.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::prelude::*;
use e2e::serve::Serve;
use serde_json::json;
use testkit::ChildGuard;

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
fn run_script(d: &Serve, id: &str, app: &Path) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(script())
        .arg(id)
        .arg(app)
        .current_dir("/")
        .env("HOST_BIN", host())
        .env("SANDBOX_HOST_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, started.elapsed())
}

/// Sets the copy's answer to `value` and runs the script, which must succeed and print a
/// line starting with `expected`; returns the line.
fn edit_and_reload(d: &Serve, app: &Path, value: &str, expected: &str) -> String {
    set_answer(app, value);
    let (out, took) = run_script(d, "loop", app);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "script failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with(expected), "{stdout}");
    eprintln!("answer {value}: {stdout} (test saw {took:?})");
    stdout
}

#[test]
fn edit_rebuild_reload_through_the_script_and_a_broken_edit_keeps_the_old_version() {
    let d = Serve::start(&[]);
    let created = d.ok(&["create", "loop"]);
    assert!(created.starts_with("created loop: pid "), "{created}");
    assert_eq!(d.call_answer("loop"), json!(41));

    let work = scratch();
    let app = copy_demo_crate(work.path(), "sandbox_app_script_test");
    // The first build of the copy.
    edit_and_reload(&d, &app, "43", "reloaded loop: v1 -> v2 in ");
    assert_eq!(d.call_answer("loop"), json!(43));

    // A one-line change, now that the copy has been built once: the figure to watch.
    edit_and_reload(&d, &app, "44", "reloaded loop: v2 -> v3 in ");
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
    for said in ["error[E0308]", "mismatched types", "keeps its old version"] {
        assert!(stderr.contains(said), "{said}: {stderr}");
    }
    assert_eq!(d.call_answer("loop"), json!(43));
    let info = d.json(&["info", "loop"]);
    assert_eq!(info["app"]["version"], json!(2));
    assert_eq!(info["versions"].as_array().unwrap().len(), 3);

    // Back to the source of the serving version: same library, nothing to reload.
    edit_and_reload(&d, &app, "43", "unchanged loop: still v2 in ");
}

#[test]
fn reload_watch_rebuilds_on_save_and_survives_a_broken_build() {
    let d = Serve::start(&[]);
    let work = scratch();
    let app = copy_demo_crate(work.path(), "sandbox_app_watch_test");
    let app_str = app.to_str().unwrap();
    d.ok(&["create", "watched", "--app", app_str]);
    assert_eq!(d.call_answer("watched"), json!(41));

    let out_path = work.path().join("watch.out");
    let err_path = work.path().join("watch.err");
    let watch = ChildGuard::new(
        d.cmd()
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
