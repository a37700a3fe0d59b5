//! The `demo` test binary: `host demo` and `host anomaly` through the real binary, the
//! product's main job: output lines, exit codes, configuration errors, the guardrail against
//! a lying model and what misbehaving providers get (stand-ins on 127.0.0.1), and cleanup.
//!
//! Why one binary of its own: each test runs the one-shot CLI flow whole (build the demo app,
//! create, reload, operate, destroy) in a private runtime directory, with no daemon and no
//! manager in this process, and then checks that nothing of the run is left anywhere on the
//! machine (sandbox directories, cgroups, processes working in its directory).

mod local_model;
mod providers;
mod story;

use std::path::Path;
use std::process::{Command, Output};

use e2e::prelude::*;

/// One finished run of the binary, with its pid (sandbox cgroups are named after it).
struct Run {
    output: Output,
    pid: u32,
}

impl std::ops::Deref for Run {
    type Target = Output;
    fn deref(&self) -> &Output {
        &self.output
    }
}

/// Runs the binary with a private runtime dir and no provider variables from the outside.
fn run(args: &[&str], env: &[(&str, &str)], runtime_dir: &Path) -> Run {
    let mut cmd = Command::new(host());
    cmd.args(args).env("XDG_RUNTIME_DIR", runtime_dir).env(
        "SANDBOX_APPS_TARGET_DIR",
        root().join("target").join("apps"),
    );
    for key in [
        "ANTHROPIC_API_KEY",
        "BEAMLENS_DEMO_PROVIDER",
        "BEAMLENS_DEMO_MODEL",
        "OPENAI_API_KEY",
        "GOOGLE_API_KEY",
        "GEMINI_API_KEY",
    ] {
        cmd.env_remove(key);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    Run {
        output: child.wait_with_output().unwrap(),
        pid,
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stdout of a run that must have succeeded.
fn succeeded(out: &Run) -> String {
    let text = stdout(out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// No sandbox directory, no process working inside the runtime dir and no cgroup of the
/// run's sandbox (`sandbox-demo-1-<host pid>-<n>`, in any hierarchy) is left.
fn assert_clean(runtime_dir: &Path, run: &Run) {
    let cgroups = testkit::cgroup::named(&format!("sandbox-demo-1-{}-", run.pid), 6);
    assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
    let sandboxes = runtime_dir.join("sandbox-host").join("sandboxes");
    if let Ok(entries) = std::fs::read_dir(&sandboxes) {
        let left: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    for pid in testkit::proc::all_pids() {
        if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
            assert!(
                !cwd.starts_with(runtime_dir),
                "process {pid} still runs in {cwd:?}"
            );
        }
    }
}

/// Asserts that nothing of a sandbox was made in the runtime directory.
fn assert_no_sandbox_dir(runtime_dir: &Path) {
    assert!(
        !runtime_dir.join("sandbox-host").exists(),
        "a sandbox directory was made"
    );
}

/// Every mechanism of an isolation report carries each piece of the kernel's evidence once
/// (init and the app process are both checked, and show the same).
fn assert_kernel_evidence_once(isolation: &serde_json::Value) {
    let entries = isolation["mechanisms"]["entries"]
        .as_array()
        .or_else(|| isolation["mechanisms"].as_array())
        .unwrap_or_else(|| panic!("no mechanisms in {isolation}"));
    let mut seen = 0;
    for entry in entries {
        let detail = entry["detail"].as_str().unwrap_or_default();
        for (at, _) in detail.match_indices("[kernel: ") {
            let note = &detail[at..at + detail[at..].find(']').unwrap() + 1];
            assert_eq!(
                detail.matches(note).count(),
                1,
                "{note} twice in {detail:?}"
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "no kernel evidence at all: {isolation}");
}
