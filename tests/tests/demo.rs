//! `host demo` and `host anomaly` through the real binary: output lines, exit codes, the
//! guardrail against a lying model (a fake Anthropic server on 127.0.0.1), and cleanup.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::HOST;
use serde_json::{Value, json};

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
fn host(args: &[&str], env: &[(&str, &str)], runtime_dir: &Path) -> Run {
    let mut cmd = Command::new(HOST);
    cmd.args(args).env("XDG_RUNTIME_DIR", runtime_dir).env(
        "SANDBOX_APPS_TARGET_DIR",
        common::root().join("target").join("apps"),
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

/// Cgroup directories under `dir` (at most `depth` levels down) whose name starts with
/// `prefix`.
fn cgroups_named(dir: &Path, prefix: &str, depth: u32, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            found.push(entry.path());
        } else if depth > 0 {
            cgroups_named(&entry.path(), prefix, depth - 1, found);
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// No sandbox directory, no process working inside the runtime dir and no cgroup of the
/// run's sandbox (`sandbox-demo-1-<host pid>-<n>`, in any hierarchy) is left.
fn assert_clean(runtime_dir: &Path, run: &Run) {
    let mut cgroups = Vec::new();
    cgroups_named(
        Path::new("/sys/fs/cgroup"),
        &format!("sandbox-demo-1-{}-", run.pid),
        6,
        &mut cgroups,
    );
    assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
    let sandboxes = runtime_dir.join("sandbox-host").join("sandboxes");
    if let Ok(entries) = std::fs::read_dir(&sandboxes) {
        let left: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) {
            assert!(
                !cwd.starts_with(runtime_dir),
                "process {:?} still runs in {cwd:?}",
                entry.file_name()
            );
        }
    }
}

#[test]
fn demo_with_the_default_mock_prints_the_story_and_passes() {
    let dir = common::scratch();
    let out = host(&["demo"], &[], dir.path());
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let dir = common::scratch();
    let out = host(&["anomaly", "--load", "25"], &[], dir.path());
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
fn anomaly_without_load_is_healthy_and_passes_with_json_output() {
    let dir = common::scratch();
    let out = host(&["anomaly", "--load", "0", "--json"], &[], dir.path());
    assert!(out.status.success(), "{}", stdout(&out));
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["run_result"], json!(42));
    assert_eq!(report["operator"]["state"], "healthy");
    assert_eq!(report["operator"]["notifications"], 0);
    assert_eq!(report["guardrail"]["ok"], true);
    assert!(report["timings"]["compile_ms"].is_u64());
    assert_clean(dir.path(), &out);
}

#[test]
fn a_missing_key_exits_2_before_any_sandbox_exists() {
    let dir = common::scratch();
    let out = host(
        &["anomaly"],
        &[("BEAMLENS_DEMO_PROVIDER", "anthropic")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(text.contains("ANTHROPIC_API_KEY not set. Set it or choose BEAMLENS_DEMO_PROVIDER=google-ai (gemini-ai), ollama, or mock"), "{text}");
    assert!(!text.contains("sandbox created"), "{text}");
    assert!(
        !dir.path().join("sandbox-host").exists(),
        "a sandbox directory was made"
    );
    let out = host(&["demo", "--provider", "bard"], &[], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains(
        "Unknown provider: bard. Use anthropic, openai, google-ai, gemini-ai, ollama, or mock"
    ));
    let out = host(&["demo", "--sandbox-id", "no/such id"], &[], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("[demo] config error: invalid --sandbox-id"),
        "{}",
        stdout(&out)
    );
    assert!(
        !dir.path().join("sandbox-host").exists(),
        "a sandbox directory was made"
    );
}

/// A fake Anthropic Messages API that answers every request with the same tool calls.
struct FakeAnthropic {
    url: String,
}

impl FakeAnthropic {
    fn start(tool_calls: Value) -> FakeAnthropic {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                let content: Vec<Value> = tool_calls
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| json!({"type": "tool_use", "id": format!("toolu_{n}_{i}"), "name": c["name"], "input": c["input"]}))
                    .collect();
                let reply = json!({"id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": "fake", "content": content, "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 5}}).to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        FakeAnthropic { url }
    }
}

fn anomaly_against(fake: &FakeAnthropic, dir: &Path) -> Run {
    host(
        &["anomaly", "--load", "25"],
        &[
            ("BEAMLENS_DEMO_PROVIDER", "anthropic"),
            ("ANTHROPIC_API_KEY", "test-key"),
            ("ANTHROPIC_BASE_URL", &fake.url),
        ],
        dir,
    )
}

#[test]
fn a_model_that_always_claims_healthy_fails_the_guardrail() {
    let fake = FakeAnthropic::start(json!([
        {"name": "set_state", "input": {"state": "healthy", "reason": "looks fine"}},
        {"name": "done", "input": {}},
    ]));
    let dir = common::scratch();
    let out = anomaly_against(&fake, dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("[operator] state=healthy"), "{text}");
    // 28 = init + the app process + the initial worker + 25 injected.
    assert!(text.contains("[demo] error: anomaly_state_mismatch: live processes=28, threshold=10, operator state=healthy"), "{text}");
    assert!(text.contains("[demo] sandbox destroyed"), "{text}");
    assert_clean(dir.path(), &out);
}

#[test]
fn a_model_that_never_notifies_fails_the_guardrail() {
    let fake = FakeAnthropic::start(json!([
        {"name": "take_snapshot", "input": {}},
        {"name": "set_state", "input": {"state": "warning", "reason": "many processes"}},
        {"name": "done", "input": {}},
    ]));
    let dir = common::scratch();
    let out = anomaly_against(&fake, dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[demo] error: anomaly_notification_missing: live processes=28"),
        "{text}"
    );
    assert_clean(dir.path(), &out);
}

/// How a provider stand-in misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Accepts the connection, reads the request and never answers.
    Silent,
    /// Answers every request in prose, never with a tool call.
    Prose,
    /// Answers every request with HTTP 500, so the provider's retries give up.
    ServerError,
}

/// One vendor's provider variables (pointing at `url`) and its prose-only reply.
struct Vendor {
    name: &'static str,
    env: fn(&str) -> Vec<(&'static str, String)>,
    prose: fn() -> Value,
}

const PROSE: &str = "Everything looks fine to me.";

fn vendors() -> [Vendor; 4] {
    [
        Vendor {
            name: "anthropic",
            env: |url| {
                vec![
                    ("ANTHROPIC_API_KEY", "k".into()),
                    ("ANTHROPIC_BASE_URL", url.into()),
                ]
            },
            prose: || {
                json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "fake",
                       "content": [{"type": "text", "text": PROSE}], "stop_reason": "end_turn",
                       "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 5}})
            },
        },
        Vendor {
            name: "openai",
            env: |url| {
                vec![
                    ("OPENAI_API_KEY", "k".into()),
                    ("OPENAI_BASE_URL", url.into()),
                ]
            },
            prose: || {
                json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "fake",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": PROSE}}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
            },
        },
        Vendor {
            name: "google-ai",
            env: |url| {
                vec![
                    ("GOOGLE_API_KEY", "k".into()),
                    ("GOOGLE_AI_BASE_URL", url.into()),
                ]
            },
            prose: || {
                json!({"candidates": [{"index": 0, "finishReason": "STOP",
                                       "content": {"role": "model", "parts": [{"text": PROSE}]}}],
                       "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                                         "totalTokenCount": 15}})
            },
        },
        Vendor {
            name: "ollama",
            env: |url| vec![("OLLAMA_HOST", url.into())],
            prose: || {
                json!({"model": "qwen3:4b", "created_at": "2024-07-22T20:33:28.123648Z",
                       "message": {"role": "assistant", "content": PROSE},
                       "done_reason": "stop", "done": true,
                       "prompt_eval_count": 10, "eval_count": 5})
            },
        },
    ]
}

/// A provider stand-in on 127.0.0.1 speaking one vendor's format and misbehaving as
/// `fault`; `GET /api/tags` (Ollama's probe) always answers with one model. Its thread
/// ends with the test process.
fn start_standin(prose: Value, fault: Fault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // Connections that are never answered stay open here.
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut len = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let (status, reply) = if request_line.starts_with("GET /api/tags") {
                (
                    "200 OK",
                    json!({"models": [{"name": "qwen3:4b", "model": "qwen3:4b"}]}),
                )
            } else {
                match fault {
                    Fault::Silent => {
                        held.push(stream);
                        continue;
                    }
                    Fault::Prose => ("200 OK", prose.clone()),
                    Fault::ServerError => (
                        "500 Internal Server Error",
                        json!({"error": {"message": "internal error", "type": "api_error"}}),
                    ),
                }
            };
            let reply = reply.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    url
}

/// For each vendor: `demo` (text) and `anomaly --load 25 --json` against a stand-in
/// misbehaving as `fault` exit 1 with the no-verdict line and `state: unknown`, and never
/// reach the guardrail.
fn no_verdict_for_every_vendor(fault: Fault, expected_reason: &dyn Fn(&str) -> String) {
    for vendor in vendors() {
        let url = start_standin((vendor.prose)(), fault);
        let mut env: Vec<(&str, String)> = (vendor.env)(&url);
        env.push(("BEAMLENS_DEMO_PROVIDER", vendor.name.into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let timeout = if fault == Fault::Silent {
            "1500"
        } else {
            "30000"
        };
        let dir = common::scratch();

        let out = host(&["demo", "--timeout", timeout], &env, dir.path());
        let text = stdout(&out);
        let what = format!("{} {fault:?} demo: {text}", vendor.name);
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert!(
            text.contains("[operator] state=unknown summary=\"no verdict\""),
            "{what}"
        );
        let line = format!(
            "[demo] error: operator gave no verdict: {}",
            expected_reason("demo")
        );
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "want {line:?}: {what}"
        );
        assert!(!text.contains("mismatch"), "{what}");
        assert!(text.contains("[demo] sandbox destroyed"), "{what}");
        assert_clean(dir.path(), &out);

        let out = host(
            &["anomaly", "--load", "25", "--json", "--timeout", timeout],
            &env,
            dir.path(),
        );
        let what = format!("{} {fault:?} anomaly: {}", vendor.name, stdout(&out));
        assert_eq!(out.status.code(), Some(1), "{what}");
        let report: Value = serde_json::from_str(stdout(&out).trim()).expect(&what);
        assert_eq!(report["ok"], false, "{what}");
        assert_eq!(report["operator"]["state"], "unknown", "{what}");
        let reason = expected_reason("anomaly");
        assert!(
            report["operator"]["stop_reason"]
                .as_str()
                .is_some_and(|r| r.starts_with(&reason)),
            "want {reason:?}: {what}"
        );
        assert_eq!(
            report["error"],
            json!(format!(
                "operator gave no verdict: {}",
                report["operator"]["stop_reason"].as_str().unwrap()
            )),
            "{what}"
        );
        assert!(report.get("guardrail").is_none(), "{what}");
        assert_clean(dir.path(), &out);
    }
}

#[test]
fn a_provider_that_never_answers_gives_no_verdict() {
    no_verdict_for_every_vendor(Fault::Silent, &|_| {
        "the provider did not answer within 1500 ms".into()
    });
}

#[test]
fn a_model_that_only_answers_in_prose_gives_no_verdict() {
    no_verdict_for_every_vendor(Fault::Prose, &|flow| {
        let cap = if flow == "anomaly" { 5 } else { 4 };
        format!("{cap} iterations without set_state (the model answered in prose only")
    });
}

#[test]
fn a_provider_failing_after_its_retries_gives_no_verdict() {
    no_verdict_for_every_vendor(Fault::ServerError, &|_| "the provider failed: ".into());
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
    Command::new(HOST)
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
    let dir = common::scratch();
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
    nix::unistd::geteuid().is_root() && Path::new("/sys/fs/cgroup/memory").is_dir()
}

#[test]
fn a_sandbox_killed_by_its_memory_limit_says_out_of_memory() {
    if !memory_cgroup_available() {
        println!("SKIPPED: no memory cgroup (not root, or no cgroup v1 memory hierarchy)");
        return;
    }
    let dir = common::scratch();
    let out = host(&["demo", "--max-memory", "1M"], &[], dir.path());
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
    let dir = common::scratch();
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
        let out = host(args, &[], dir.path());
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.contains(&format!("[demo] config error: {message}")),
            "{args:?}: {text}"
        );
        assert!(!text.contains("sandbox created"), "{text}");
    }
    assert!(
        !dir.path().join("sandbox-host").exists(),
        "a sandbox directory was made"
    );
}

#[test]
fn a_cgroup_parent_without_cgroup_v2_is_a_clear_error_and_no_sandbox() {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        println!("SKIPPED: /sys/fs/cgroup is cgroup v2 here");
        return;
    }
    let dir = common::scratch();
    let out = host(&["demo", "--cgroup-parent", "sys"], &[], dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("--cgroup-parent sys needs a delegated cgroup v2 subtree: this machine has no cgroup v2 hierarchy"),
        "{text}"
    );
    assert!(!text.contains("sandbox created"), "{text}");
    assert_clean(dir.path(), &out);
}
