//! `host deps fetch --app DIR` (issue 21, item 3): a daemon with a cargo cache of its own
//! cannot build a crate whose dependency it has never seen (builds are offline) and says how
//! to fix it; after `deps fetch` it can. A crate whose dependencies would reach anything but
//! crates.io is refused before cargo runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use e2e::prelude::*;
use e2e::serve::client;
use testkit::ChildGuard;

/// A `host serve` whose cargo cache (`CARGO_HOME`) and apps target dir are its own.
struct PrivateDaemon {
    _child: ChildGuard,
    socket: PathBuf,
    log: PathBuf,
}

impl PrivateDaemon {
    fn start(dir: &Path) -> PrivateDaemon {
        let socket = dir.join("ctl/host.sock");
        let log = dir.join("daemon.log");
        std::fs::create_dir_all(dir.join("cargo-home")).unwrap();
        let child = Command::new(host())
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("CARGO_HOME", dir.join("cargo-home"))
            .env("SANDBOX_APPS_TARGET_DIR", dir.join("apps"))
            .env_remove("SANDBOX_HOST_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut child = ChildGuard::terminate(child, Duration::from_secs(15));
        let up = testkit::wait_until(Duration::from_secs(20), || {
            child.exited().is_some() || std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        assert!(
            up && child.exited().is_none(),
            "daemon did not come up:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        PrivateDaemon {
            _child: child,
            socket,
            log,
        }
    }

    fn host(&self, args: &[&str]) -> Output {
        client(&self.socket).args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.host(args);
        assert!(
            out.status.success(),
            "host {args:?}: {}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// A demo-like app at `dir` that also depends on `extra` (a `[dependencies]` line).
fn app_needing(dir: &Path, extra: &str) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"fetch_app\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n\
             sandbox_abi = {{ path = \"{}\" }}\n{extra}\n",
            root().join("sandbox_abi").display()
        ),
    )
    .unwrap();
    std::fs::copy(demo_app().join("src/lib.rs"), dir.join("src/lib.rs")).unwrap();
}

/// Whether crates.io's index answers (this test downloads a crate).
fn crates_io_reachable() -> bool {
    use std::net::ToSocketAddrs;
    let Ok(mut addrs) = ("index.crates.io", 443).to_socket_addrs() else {
        return false;
    };
    addrs.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
}

#[test]
fn deps_fetch_fills_the_daemons_cargo_cache_so_an_offline_build_succeeds() {
    if !crates_io_reachable() {
        skip("crates.io is not reachable from here");
        return;
    }
    let scratch = scratch();
    let d = PrivateDaemon::start(scratch.path());
    let app = scratch.path().join("fetch_app");
    app_needing(&app, "itoa = \"1\"");
    let app_arg = app.to_str().unwrap();

    let out = d.host(&["create", "f", "--app", app_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("fill the daemon's cache with `host deps fetch --app DIR`"),
        "{stderr}"
    );

    let said = d.ok(&["deps", "fetch", "--app", app_arg]);
    assert!(
        said.starts_with(&format!(
            "fetched the dependencies of {app_arg} into the daemon's cargo cache in "
        )),
        "{said}"
    );
    let cached = std::fs::read_dir(scratch.path().join("cargo-home/registry/cache"))
        .unwrap()
        .flatten()
        .flat_map(|index| std::fs::read_dir(index.path()).unwrap().flatten())
        .any(|c| c.file_name().to_string_lossy().starts_with("itoa-"));
    assert!(cached, "no itoa in the daemon's cargo cache");

    d.ok(&["create", "f", "--app", app_arg]);
    assert_eq!(d.ok(&["call", "f", "answer"]), "41");
    d.ok(&["destroy", "f"]);
}

#[test]
fn deps_fetch_refuses_a_crate_that_would_reach_beyond_crates_io() {
    let scratch = scratch();
    let d = PrivateDaemon::start(scratch.path());
    for (extra, named) in [
        (
            "x = { git = \"http://127.0.0.1:9/x\" }",
            "`dependencies.x.git`",
        ),
        (
            "x = { version = \"1\", registry-index = \"http://127.0.0.1:9/\" }",
            "`dependencies.x.registry-index`",
        ),
    ] {
        let app = scratch
            .path()
            .join(testkit::unique_id("fetch_bad").replace('-', "_"));
        app_needing(&app, extra);
        let out = d.host(&["deps", "fetch", "--app", app.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(named), "{extra}: {stderr}");
    }
    // Nothing was fetched.
    assert!(!scratch.path().join("cargo-home/registry").exists());
}
