//! An app's words on the operator's terminal: `liar_app` declares a name and a version, and
//! answers errors, panics, JSON and a reload refusal, each carrying terminal escape sequences
//! (window title, screen and line erase, cursor moves), C1 controls, a bidi override and a
//! newline that forges an isolation-report line (`    + seccomp: FORGED verified by the
//! kernel`). Through the real binary, every human output (`create`, `info`, `list`, `call`
//! failures, a reload refusal, `host events`) must show that text escaped and labelled as the
//! app's, with no byte a terminal would act on; `--json` stays JSON that keeps the app's
//! exact words.

use std::process::Output;

use e2e::apps::block_on;
use e2e::prelude::*;
use e2e::serve::Serve;
use serde_json::Value;

/// The liar's self-declared name and version, as it declares them.
const NAME: &str = "liar\u{1b}]0;pwned\u{7}\n    + seccomp: FORGED verified by the kernel";
const VERSION: &str =
    "6.6.6\u{1b}[1A\u{1b}[2K\u{9b}31m\r\n    + user_ns: FORGED verified by the kernel";

/// What is wrong with `bytes` (one stream of a command) for a terminal: raw control
/// characters (ESC, BEL, CR, DEL, C1), a bidi override, or a line that starts like a line of
/// the isolation report but is the app's.
fn dangers(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut found = Vec::new();
    for (byte, name) in [(0x1b, "ESC"), (0x07, "BEL"), (b'\r', "CR"), (0x7f, "DEL")] {
        if bytes.contains(&byte) {
            found.push(format!("a raw {name} byte"));
        }
    }
    if text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
        found.push("a raw C1 control".into());
    }
    if text.contains('\u{202e}') {
        found.push("a raw bidi override".into());
    }
    for line in text.lines() {
        if line.trim_start().starts_with('+') && line.contains("FORGED") {
            found.push(format!("a forged report line: {line:?}"));
        }
    }
    found
}

/// Checks one command's output: nothing dangerous on either stream, and `wanted` (escaped
/// forms, labels) all present on `stream`. Problems are collected, not panicked on, so that
/// one run shows every attack that works.
fn check(problems: &mut Vec<String>, what: &str, out: &Output, stream: &str, wanted: &[&str]) {
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        for danger in dangers(bytes) {
            problems.push(format!(
                "`{what}` {name}: {danger}\n    {:?}",
                String::from_utf8_lossy(bytes)
            ));
        }
    }
    let shown = String::from_utf8_lossy(if stream == "stdout" {
        &out.stdout
    } else {
        &out.stderr
    });
    for want in wanted {
        if !shown.contains(want) {
            problems.push(format!("`{what}` {stream}: no {want:?} in {shown:?}"));
        }
    }
}

/// `host create ID --lib LIB` with human output (in the tests' cgroup parent, when one is set).
fn create_human(d: &Serve, id: &str, lib: &std::path::Path) -> Output {
    let mut args = vec!["create", id, "--lib", lib.to_str().unwrap()];
    let parent = testkit::cgroup::cgroup_parent();
    if let Some(parent) = &parent {
        args.extend(["--cgroup-parent", parent.to_str().unwrap()]);
    }
    d.host(&args)
}

#[test]
fn app_text_reaches_the_terminal_escaped_and_labelled_as_the_apps() {
    let liar = block_on(built("liar_app"));
    let demo = block_on(built("sandbox_app"));
    let d = Serve::start(&[]);
    let mut problems = Vec::new();

    // Its name and version, at create and in info: escaped, quoted, called its claim.
    let out = create_human(&d, "liar1", &liar);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name_shown = r#""liar\u{1b}]0;pwned\u{7}\n    + seccomp: FORGED verified by the kernel""#;
    let version_shown =
        r#""6.6.6\u{1b}[1A\u{1b}[2K\u{9b}31m\r\n    + user_ns: FORGED verified by the kernel""#;
    check(
        &mut problems,
        "create",
        &out,
        "stdout",
        &[name_shown, "(the app's claim)"],
    );
    let out = d.host(&["info", "liar1"]);
    check(
        &mut problems,
        "info",
        &out,
        "stdout",
        &[name_shown, version_shown, "(the app's claim)"],
    );
    check(&mut problems, "list", &d.host(&["list"]), "stdout", &[]);

    // Its error and its panic, relayed in a failed call.
    let out = d.host(&["call", "liar1", "fail"]);
    assert_eq!(out.status.code(), Some(1));
    check(
        &mut problems,
        "call fail",
        &out,
        "stderr",
        &[
            r"nope\u{1b}[2J\u{1b}[H\u{1b}[2K\u{9b}2K\r\n    + seccomp: FORGED verified by the kernel\u{1b}]0;pwned\u{7}",
            "(quotes the app)",
        ],
    );
    let out = d.host(&["call", "liar1", "panic"]);
    assert_eq!(out.status.code(), Some(1));
    check(
        &mut problems,
        "call panic",
        &out,
        "stderr",
        &[
            r"boom\u{1b}[2K\u{9b}2K\r\n    + landlock: FORGED",
            "(quotes the app)",
        ],
    );
    // Its JSON answer: still JSON (the same value), with the controls serde leaves raw
    // written as escapes.
    let out = d.host(&["call", "liar1", "lie"]);
    check(
        &mut problems,
        "call lie",
        &out,
        "stdout",
        &[r"\u009b2J\u202edesrever\u007f"],
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer, Value::from("\u{9b}2J\u{202e}desrever\u{7f}"));

    // A reload onto the liar is refused in its words: shown escaped, in the error and in the
    // event stream.
    let out = create_human(&d, "honest1", &demo);
    assert!(out.status.success());
    let out = d.host(&["reload", "honest1", "--lib", liar.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    check(
        &mut problems,
        "reload",
        &out,
        "stderr",
        &[
            r"no state\u{1b}[2K\u{9b}2K\r\n    + namespaces: FORGED",
            "(quotes the app)",
        ],
    );
    let out = d.host(&["events"]);
    check(
        &mut problems,
        "events",
        &out,
        "stdout",
        &[
            "sandbox.reload_failed honest1",
            r"no state\u{1b}[2K\u{9b}2K\r\n    + namespaces: FORGED",
        ],
    );

    // --json keeps the app's exact words (serde escapes what JSON must).
    let info = d.json(&["info", "liar1"]);
    assert_eq!(info["app"]["name"], NAME);
    assert_eq!(info["app"]["app_version"], VERSION);
    let out = d.host(&["info", "liar1", "--json"]);
    check(&mut problems, "info --json", &out, "stdout", &[]);

    d.json(&["destroy", "liar1"]);
    d.json(&["destroy", "honest1"]);
    assert!(
        problems.is_empty(),
        "app text reached the terminal raw or unlabelled:\n{}",
        problems.join("\n")
    );
}
