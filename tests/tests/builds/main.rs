//! The `builds` test binary: the build sandbox, with real cargo on the real kernel: an
//! attacking build script and library, a build that never ends, one that fills its target dir
//! (`disk`), a fork loop (`processes`), the bounded build cache (`cache`), the build's own
//! start cost.
//!
//! Why one binary of its own: these tests run cargo builds (minutes of CPU on this machine's
//! two cores) and one checks that no build-script process is left anywhere in the test
//! process's tree, which another test's build (a `host demo`, a reload from a crate) running
//! at the same time in the same process would upset.

mod cache;

/// No process of a build (its build script above all) is left in this process's tree.
fn assert_no_build_script_left() {
    assert!(
        !tree(std::process::id() as i32)
            .iter()
            .any(|&p| std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.starts_with("build-script"))),
        "a build script outlived its build"
    );
}
mod disk;
mod fetch;
mod processes;
mod reloads;

use std::io::Read;
use std::time::{Duration, Instant};

use e2e::prelude::*;

/// Held by the tests whose build scripts run long or check that no build-script process is
/// left in this process's tree: one such build at a time, so that one test's build scripts
/// are not taken for another's leftovers.
pub(crate) static BUILD_SCRIPTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn an_attacking_build_reaches_nothing() {
    let _one = BUILD_SCRIPTS.lock().await;
    let original = test_app("evil_build");
    let _ = std::fs::remove_file(original.join("pwned"));
    let _ = std::fs::remove_file(root().join("sandbox_abi/pwned"));
    // A TCP listener (an ephemeral port) and a Unix socket the build script tries to reach,
    // and the host file it tries to write, unique to this run: the build script reads them
    // from its crate's `src/lib.rs` (the plan line, rewritten here).
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let port = tcp.local_addr().unwrap().port();
    let tag = testkit::unique_id("sandbox-evil-build");
    let sock_path = format!("/tmp/{tag}.sock");
    let host_tmp_file = format!("/tmp/{tag}-wrote-this");
    let unix = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    unix.set_nonblocking(true).unwrap();
    let plan = format!("tcp={port} unix={sock_path} host_tmp={host_tmp_file}");
    let source = std::fs::read_to_string(original.join("src/lib.rs")).unwrap();
    let planned = source
        .lines()
        .map(|l| match l.strip_prefix("// probe-plan: ") {
            Some(_) => format!("// probe-plan: {plan}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(
        planned,
        source,
        "no probe-plan line in {}",
        original.display()
    );

    let err = compiler()
        .build_source(&original, &planned)
        .await
        .expect_err("include_str!(\"/etc/shadow\") must not compile");
    let diagnostics = err.to_string();
    eprintln!("{diagnostics}");
    // The build script read this run's plan.
    assert!(
        diagnostics.contains(&format!("probe plan: {plan}")),
        "{diagnostics}"
    );
    // The build script ran (its probes reported) and every probe failed. (Its write to /tmp
    // lands in the build's private /tmp: the host's /tmp is checked below.)
    for probe in [
        "shadow",
        "list_root",
        "tcp",
        &format!("unix {sock_path}"),
        "unix /run/sandbox-host/host.sock",
        "write_original_crate",
        "write_dependency",
        "read_other_crate",
    ] {
        let line = diagnostics
            .lines()
            .find(|l| l.contains(&format!("probe {probe}:")))
            .unwrap_or_else(|| panic!("probe {probe} did not report:\n{diagnostics}"));
        assert!(line.contains(": denied"), "probe {probe} succeeded: {line}");
    }
    // The library's include_str! failed for lack of the file, not for lack of permission only.
    assert!(diagnostics.contains("/etc/shadow"), "{diagnostics}");
    // Nothing was written, nothing reached the listeners.
    assert!(!std::path::Path::new(&host_tmp_file).exists());
    assert!(!original.join("pwned").exists());
    assert!(!root().join("sandbox_abi/pwned").exists());
    assert!(
        tcp.accept().is_err(),
        "a connection reached the TCP listener"
    );
    if let Ok((mut s, _)) = unix.accept() {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        panic!("a connection reached the Unix socket: {buf:?}");
    }
    let _ = std::fs::remove_file(&sock_path);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_that_never_ends_is_stopped_at_its_wall_time_limit() {
    let _one = BUILD_SCRIPTS.lock().await;
    let mut c = compiler();
    c.limits.wall = Duration::from_secs(4);
    let started = Instant::now();
    let err = c
        .build(&test_app("loop_build"))
        .await
        .expect_err("the build script never ends");
    let took = started.elapsed();
    assert!(
        err.to_string()
            .contains("wall-time limit of 4 s (--build-timeout)"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_no_build_script_left();
    // The compiler builds on afterwards.
    let built = compiler().build(&demo_app()).await.unwrap();
    assert!(built.lib.is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_reuses_the_cache_and_only_the_library_leaves() {
    let c = compiler();
    let first = c.build(&demo_app()).await.unwrap();
    let started = Instant::now();
    let source = demo_source_answering(77);
    let second = c.build_source(&demo_app(), &source).await.unwrap();
    let took = started.elapsed();
    eprintln!(
        "build {} ms, source rebuild {} ms (wall {took:?})",
        first.compile_ms, second.compile_ms
    );
    assert_ne!(first.lib, second.lib);
    // Back to the crate as it is on disk, whose lib.rs is older than the changed copy was:
    // rebuilt all the same (content decides, not the source's mtime).
    let third = c.build(&demo_app()).await.unwrap();
    assert_ne!(
        third.lib, second.lib,
        "the changed source's library was served again"
    );
    // Both libraries live outside the target dir the build can write.
    for lib in [&first.lib, &second.lib] {
        assert!(
            lib.components().any(|c| c.as_os_str() == "staged"),
            "{lib:?}"
        );
    }
}

#[test]
fn without_cargo_the_error_says_a_toolchain_is_needed() {
    let runtime = scratch();
    let out = std::process::Command::new(host())
        .args(["demo", "--provider", "mock"])
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("SANDBOX_APPS_TARGET_DIR", root().join("target/apps"))
        .env("PATH", "/usr/sbin:/sbin")
        .env_remove("CARGO")
        .output()
        .unwrap();
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "building an app needs a Rust toolchain (cargo); or pass a prebuilt library with --lib"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("No such file or directory"), "{stderr}");
}

/// The build sandbox's own start cost: `cargo --version` in the sandbox against the same
/// command outside. Printed, and bounded loosely (the machine is shared).
#[tokio::test(flavor = "multi_thread")]
async fn the_build_sandbox_starts_quickly() {
    let tc = appbuild::toolchain::Toolchain::find().unwrap();
    let cargo = tc.sysroot.join("bin/cargo");
    let dir = scratch();
    let mut plain = Vec::new();
    let mut boxed = Vec::new();
    for i in 0..7 {
        let t = Instant::now();
        let out = std::process::Command::new(&cargo)
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success());
        plain.push(t.elapsed());
        let root = dir.path().join(format!("root{i}"));
        let target = dir.path().join("target");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&target).unwrap();
        let job = appbuild::sandbox::Job {
            shim_exe: host().into(),
            mountpoint: root,
            target_dir: target,
            binds: Vec::new(),
            writable: Vec::new(),
            measure: Vec::new(),
            args: vec!["--version".into()],
            limits: Default::default(),
        };
        let out = appbuild::sandbox::run(job, &tc).await.unwrap();
        assert_eq!(
            out.code,
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("cargo "));
        boxed.push(out.elapsed);
    }
    plain.sort();
    boxed.sort();
    let (p, b) = (plain[3], boxed[3]);
    eprintln!(
        "cargo --version: plain p50 {p:?}, in the build sandbox p50 {b:?}: start cost {:?}",
        b.saturating_sub(p)
    );
    assert!(
        b < p + Duration::from_millis(500),
        "plain {p:?}, sandboxed {b:?}"
    );
}
