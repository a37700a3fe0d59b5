//! The stories with the offline mock model, configuration errors, limits too small to
//! start, a closed stdout, and what a machine without cgroup v2 or a memory cgroup says.

use std::path::Path;
use std::process::{Command, Output};

use e2e::prelude::*;
use serde_json::{Value, json};

use super::{assert_clean, assert_no_sandbox_dir, run, stdout, succeeded};

#[test]
fn demo_with_the_default_mock_prints_the_story_and_passes() {
    let dir = scratch();
    let out = run(&["demo"], &[], dir.path());
    let text = succeeded(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "[demo] provider=mock (offline: set ANTHROPIC_API_KEY or BEAMLENS_DEMO_PROVIDER to use a model)"
    );
    assert!(
        lines[1].starts_with("[demo] sandbox created: demo-1 (pid "),
        "{text}"
    );
    assert!(
        lines[2].starts_with("[demo] hot reload: ok (v1 -> v2, built in "),
        "{text}"
    );
    assert_eq!(
        &lines[3..],
        [
            "[demo] run result: 42",
            "[operator] state=healthy summary=\"sandbox stable\"",
            "[operator] notifications=0",
            "[demo] sandbox destroyed"
        ]
    );
    assert_clean(dir.path(), &out);
}

#[test]
fn anomaly_with_25_workers_is_noticed_by_the_mock_and_passes() {
    let dir = scratch();
    let out = run(&["anomaly", "--load", "25"], &[], dir.path());
    let text = succeeded(&out);
    let tail: Vec<&str> = text.lines().skip(3).collect();
    assert_eq!(
        tail,
        [
            "[demo] run result: 42",
            "[demo] process load injected: 25 extra workers",
            "[operator] state=warning summary=\"process count elevated\"",
            "[operator] notifications=1",
            "[demo] sandbox destroyed"
        ]
    );
    assert_clean(dir.path(), &out);
}

#[test]
fn anomaly_with_the_coordinator_ties_the_spike_to_the_workers_added() {
    let dir = scratch();
    let out = run(
        &["anomaly", "--load", "25", "--coordinator"],
        &[],
        dir.path(),
    );
    let text = succeeded(&out);
    let tail: Vec<&str> = text.lines().skip(5).collect();
    assert_eq!(tail.len(), 7, "{text}");
    assert_eq!(
        tail[0],
        "[operator] state=warning summary=\"process count elevated\""
    );
    assert_eq!(
        tail[2],
        "[coordinator] insight: causal, grounded, confidence 0.90, state=warning, sandboxes \
         demo-1: \"process_spike in demo-1 was caused by 25 workers added to demo-1\""
    );
    // The figures it rests on: the kernel's process count (init, the app process, its worker
    // and the 25 added) and the host's record of the workers it started.
    assert!(
        tail[3].starts_with("[coordinator]   observed processes=28 (snapshot "),
        "{text}"
    );
    assert!(
        tail[4].starts_with("[coordinator]   observed members.0.events.")
            && tail[4].contains(".count=25 (snapshot "),
        "{text}"
    );
    assert_eq!(tail[5], "[coordinator] insights=1 grounded=1");
    assert_eq!(tail[6], "[demo] sandbox destroyed");
    assert_clean(dir.path(), &out);

    // --json: the coordinator's report, its insight grounded.
    let out = run(
        &["anomaly", "--load", "25", "--coordinator", "--json"],
        &[],
        dir.path(),
    );
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let insights = report["coordinator"]["insights"].as_array().unwrap();
    assert_eq!(insights.len(), 1, "{report}");
    assert_eq!(insights[0]["grounded"], true);
    assert_eq!(insights[0]["correlation"], "causal");
    assert_clean(dir.path(), &out);
}

#[test]
fn anomaly_without_load_is_healthy_and_passes_with_json_output() {
    let dir = scratch();
    let out = run(&["anomaly", "--load", "0", "--json"], &[], dir.path());
    let report: Value = serde_json::from_str(succeeded(&out).trim()).unwrap();
    assert_eq!(report["run_result"], json!(42));
    assert_eq!(report["operator"]["state"], "healthy");
    assert_eq!(report["operator"]["notifications"], 0);
    assert_eq!(report["guardrail"]["ok"], true);
    assert!(report["timings"]["compile_ms"].is_u64());
    super::assert_kernel_evidence_once(&report["sandbox"]["isolation"]);
    assert_clean(dir.path(), &out);
}

#[test]
fn a_missing_key_exits_2_before_any_sandbox_exists() {
    let dir = scratch();
    let out = run(
        &["anomaly"],
        &[("BEAMLENS_DEMO_PROVIDER", "anthropic")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(text.contains("ANTHROPIC_API_KEY not set. Set it or choose BEAMLENS_DEMO_PROVIDER=google-ai (gemini-ai), ollama, or mock"), "{text}");
    assert!(!text.contains("sandbox created"), "{text}");
    assert_no_sandbox_dir(dir.path());
    let out = run(&["demo", "--provider", "bard"], &[], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains(
        "Unknown provider: bard. Use anthropic, openai, google-ai, gemini-ai, ollama, or mock"
    ));
    let out = run(&["demo", "--sandbox-id", "no/such id"], &[], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("[demo] config error: invalid --sandbox-id"),
        "{}",
        stdout(&out)
    );
    assert_no_sandbox_dir(dir.path());
}

/// Runs the binary with stdout a pipe whose reader is already gone, so every write to
/// stdout fails with EPIPE (as with `host info ID | head -3` once `head` has exited).
fn host_with_closed_stdout(args: &[&str], runtime_dir: &Path) -> Output {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just returned these two descriptors; each is owned once.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    Command::new(host())
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime_dir)
        .env_remove("BEAMLENS_DEMO_PROVIDER")
        .stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_is_no_panic() {
    let dir = scratch();
    // No daemon: the JSON error goes to the closed stdout, the status stays 3.
    let socket = dir.path().join("none.sock");
    let out = host_with_closed_stdout(
        &["list", "--json", "--socket", socket.to_str().unwrap()],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    // A configuration error of the demo, reported as JSON: still exit 2.
    let out = host_with_closed_stdout(&["demo", "--json", "--provider", "bard"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
}

/// Whether sandboxes here get a cgroup with a memory controller (root on cgroup v1 with the
/// memory hierarchy, as on this project's CI).
fn memory_cgroup_available() -> bool {
    is_root() && Path::new("/sys/fs/cgroup/memory").is_dir()
}

#[test]
fn a_sandbox_killed_by_its_memory_limit_says_out_of_memory() {
    if !memory_cgroup_available() {
        skip("no memory cgroup (not root, or no cgroup v1 memory hierarchy)");
        return;
    }
    let dir = scratch();
    let out = run(&["demo", "--max-memory", "1M"], &[], dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[demo] error: sandbox create error: sandbox failed to start: runner exited during start: out of memory: limit 1 MiB"),
        "{text}"
    );
    assert_clean(dir.path(), &out);
}

#[test]
fn limits_too_small_to_start_are_refused_with_the_floor_named() {
    let dir = scratch();
    for (args, message) in [
        (
            &["demo", "--max-memory", "10"][..],
            "--max-memory 10 bytes is below the floor of 1 MiB",
        ),
        (
            &["anomaly", "--max-processes", "1"][..],
            "--max-processes 1 is below the floor of 4",
        ),
        (
            &["demo", "--cpu", "0"][..],
            "--cpu 0 is not a positive fraction",
        ),
    ] {
        let out = run(args, &[], dir.path());
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.contains(&format!("[demo] config error: {message}")),
            "{args:?}: {text}"
        );
        assert!(!text.contains("sandbox created"), "{text}");
    }
    assert_no_sandbox_dir(dir.path());
}

#[test]
fn a_cgroup_parent_without_cgroup_v2_is_a_clear_error_and_no_sandbox() {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        skip("/sys/fs/cgroup is cgroup v2 here");
        return;
    }
    let dir = scratch();
    let out = run(&["demo", "--cgroup-parent", "sys"], &[], dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("--cgroup-parent sys needs a delegated cgroup v2 subtree: this machine has no cgroup v2 hierarchy"),
        "{text}"
    );
    assert!(!text.contains("sandbox created"), "{text}");
    assert_clean(dir.path(), &out);
}
