//! Shutdown and restart: SIGTERM and SIGINT leave nothing behind, a second daemon is refused,
//! a stale socket is replaced, and after SIGKILL the next daemon sweeps what the dead one left.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::apps::block_on;
use e2e::prelude::*;
use e2e::serve::Serve;
use serde_json::{Value, json};
use testkit::ChildGuard;
use testkit::cgroup::own_cgroups;

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

/// What a daemon's sandboxes hold on the machine.
struct Held {
    /// Every process of their trees.
    pids: Vec<i32>,
    /// Their directories.
    dirs: Vec<PathBuf>,
    /// The cgroups their runners are in that the daemon is not in.
    cgroups: Vec<PathBuf>,
    /// The cgroups their isolation reports name.
    reported: Vec<PathBuf>,
}

/// Creates sandboxes `ids` of the demo app in daemon `d`, each with two more workers.
fn hold(d: &Serve, ids: &[&str]) -> Held {
    let lib = block_on(built("sandbox_app"));
    let mut held = Held {
        pids: Vec::new(),
        dirs: Vec::new(),
        cgroups: Vec::new(),
        reported: Vec::new(),
    };
    for id in ids {
        d.json(&["create", id, "--lib", lib.to_str().unwrap()]);
        d.json(&["workers", id, "--add", "2"]);
        let info = d.json(&["info", id]);
        let runner = info["pid"].as_i64().unwrap() as i32;
        held.pids.extend(tree(runner));
        held.dirs.push(PathBuf::from(info["dir"].as_str().unwrap()));
        reported_cgroups(&info["isolation"], &mut held.reported);
        held.cgroups.extend(own_cgroups(runner, d.pid()));
    }
    held
}

/// Creates sandboxes, stops the daemon with `signal`, and checks nothing is left: no
/// process, sandbox directory, cgroup, socket or lock file.
fn shutdown_leaves_nothing(signal: libc::c_int, ids: &[&str]) {
    let mut d = Serve::start(&[]);
    let Held {
        pids,
        dirs,
        mut cgroups,
        reported,
    } = hold(&d, ids);
    cgroups.extend(reported);
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
        !::daemon::lock_path(&d.socket).exists(),
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
    shutdown_leaves_nothing(libc::SIGTERM, &["term-a", "term-b"]);
}

#[test]
fn sigint_does_the_same() {
    shutdown_leaves_nothing(libc::SIGINT, &["int-a"]);
}

#[test]
fn a_second_daemon_is_refused_and_a_stale_socket_is_replaced() {
    let dir = scratch();
    let mut first = Serve::start_in(dir.path(), &[]);
    let socket = first.socket.clone();
    let perms = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(perms(socket.parent().unwrap()), 0o700);
    assert_eq!(perms(&socket), 0o600);

    let second = Serve::refused(Some(dir.path()), &[]);
    assert!(!second.status.success(), "{}", second.status);
    let said = String::from_utf8_lossy(&second.stderr);
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
    let third = Serve::start_in(dir.path(), &[]);
    assert_eq!(third.json(&["list"]), json!([]));
    assert!(third.log().contains("stale socket"), "{}", third.log());
}

#[test]
fn after_kill_9_the_next_daemon_leaves_nothing_of_the_dead_one() {
    let dir = scratch();
    // Without a pool, so that each sandbox's directory and cgroup carry its id and the counts
    // below are exact (prepared runners' `pool.*` directories are swept the same way).
    let mut first = Serve::start_in(dir.path(), &["--pool", "0"]);
    let Held {
        pids,
        dirs,
        cgroups,
        ..
    } = hold(&first, &["dead-a", "dead-b"]);
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
    // Its runners die with it (PDEATHSIG, then their pid namespaces), but a signal is
    // obeyed some time after it is sent: the sweep below must find only the survivor put
    // there by hand, not sandboxes still dying (it would kill and count them too).
    assert!(
        wait_until(Duration::from_secs(10), || pids.iter().all(|p| !alive(*p))),
        "a killed daemon's sandboxes outlived it: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    // A process that outlived its daemon in a sandbox's cgroup (say, one the app detached):
    // put one there by hand, in every hierarchy of the first sandbox.
    let mut survivor = ChildGuard::new(Command::new("sleep").arg("60").spawn().unwrap());
    let survivor_pid = survivor.pid();
    let first_cgroups: Vec<&PathBuf> = cgroups
        .iter()
        .filter(|c| c.to_string_lossy().contains("dead-a"))
        .collect();
    for c in &first_cgroups {
        std::fs::write(c.join("cgroup.procs"), survivor_pid.to_string()).unwrap();
    }

    let second = Serve::start_in(dir.path(), &["--pool", "0"]);
    let log = second.log();
    let line: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("recovered what dead hosts left"))
        .collect();
    assert_eq!(line.len(), 1, "{log}");
    eprintln!("{}", line[0]);
    assert!(line[0].contains("2 sandbox dirs"), "{}", line[0]);
    // The dead daemon's cgroups sit under the tests' shared cgroup parent, where any daemon
    // that starts sweeps what dead hosts left: another test's daemon starting meanwhile may
    // have swept one or both of them first, or killed the survivor and left the cgroup to
    // this one (both seen in CI: "1 cgroups (0 processes killed)", "2 cgroups (0 processes
    // killed)"), so the counts are not this daemon's to promise. What must hold either way
    // is checked below: the cgroups are gone and the survivor in them was killed.
    // Reaped by us, its parent: it must have been killed by the sweep.
    let status = survivor.child().wait().unwrap();
    if !first_cgroups.is_empty() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    } else {
        let _ = survivor.child().kill();
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
