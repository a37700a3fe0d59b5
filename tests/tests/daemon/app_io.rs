//! The plugin author's loop, in and out (issue 21, items 4 and 5), through the real binary:
//! `host create --env/--config/--file` gives a test app what it reads from inside, and
//! `host logs` shows what it and its worker printed (stdout and stderr), escaped, as JSON
//! lines, followed, after a restart and for a while after destroy. And the hostile case: an
//! app flooding its stdout grows neither the daemon's memory nor its disk past the log's
//! bound, and does not keep it from answering.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use e2e::apps::{block_on, built};
use e2e::serve::Serve;
use e2e::{is_root, wait_until};
use serde_json::Value;
use testkit::proc::ChildGuard;

const LONG: Duration = Duration::from_secs(60);

/// `host logs ID --json ARGS` as one value per line.
fn logs(d: &Serve, id: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["logs", id, "--json"];
    all.extend(args);
    d.ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Whether `lines` has one of `source` on `stream` whose text is `text`.
fn has(lines: &[Value], source: &str, stream: &str, text: &str) -> bool {
    lines
        .iter()
        .any(|l| l["source"] == source && l["stream"] == stream && l["text"] == text)
}

/// Waits until `host logs` shows every `(source, stream, text)` wanted.
fn wait_for_lines(d: &Serve, id: &str, want: &[(&str, &str, &str)]) -> Vec<Value> {
    let mut lines = Vec::new();
    let all = wait_until(LONG, || {
        lines = logs(d, id, &[]);
        want.iter()
            .all(|(src, stream, text)| has(&lines, src, stream, text))
    });
    assert!(all, "wanted {want:?} in:\n{lines:#?}\n{}", d.log());
    lines
}

#[test]
fn an_app_and_its_worker_print_to_host_logs_and_read_their_env_config_and_files() {
    let d = Serve::start(&[]);
    let lib = block_on(built("talker_app"));
    let config = d.dir().join("app.toml");
    std::fs::write(&config, "greeting = \"hi\"\n").unwrap();
    let data = d.dir().join("in.txt");
    std::fs::write(&data, "data for the app\n").unwrap();
    let (config, data) = (config.to_str().unwrap(), data.to_str().unwrap());
    let file = format!("{data}:/data/in.txt");
    // Env and config only: a prepared runner takes them at assignment (root hosts).
    let pooled = d.create(
        "talk-pool",
        &lib,
        &["--env", "GREETING=hello world", "--config", config],
    );
    // With a file: the root is built for it (no prepared runner).
    let info = d.create(
        "talk",
        &lib,
        &[
            "--env",
            "GREETING=hello world",
            "--config",
            config,
            "--file",
            &file,
        ],
    );
    assert_eq!(info["startup"]["pooled"], false, "{info:#}");
    if !is_root() {
        assert_eq!(pooled["startup"]["pooled"], false);
    }
    for id in ["talk-pool", "talk"] {
        // The environment: the given variable, nothing of the client's or the daemon's.
        let env = d.json(&["call", id, "env"]);
        let env = env.as_str().unwrap();
        assert!(
            env.lines().any(|l| l == "GREETING=hello world"),
            "{id}: {env}"
        );
        assert!(!env.contains("SANDBOX_HOST_SOCKET"), "{id}: {env}");
        assert!(!env.lines().any(|l| l.starts_with("HOME=")), "{id}: {env}");
        let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(
            names
                .iter()
                .all(|n| ["GREETING", "PATH", "LANG", "TZ"].contains(n)),
            "{id}: {env}"
        );
        // The config, through the ABI.
        assert_eq!(d.json(&["call", id, "config"]), "greeting = \"hi\"\n");
        // The worker's lines (it started with the sandbox, with the variable).
        wait_for_lines(
            &d,
            id,
            &[
                ("worker", "stdout", "worker 0 out: GREETING=hello world"),
                ("worker", "stderr", "worker 0 err: GREETING=hello world"),
            ],
        );
    }
    // The data file: readable, read-only; nothing else outside /data or /config.
    assert_eq!(
        d.json(&["call", "talk", "read", "\"/data/in.txt\""]),
        "data for the app\n"
    );
    let refused = d.host(&["call", "talk", "write", "\"/data/in.txt\"", "--json"]);
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(text.contains("Read-only file system"), "{text}");
    let missing = d.host(&["call", "talk-pool", "read", "\"/data/in.txt\""]);
    assert!(!missing.status.success());
    // A root of its own has no /bin (docs: "What a sandbox sees").
    let no_bin = d.host(&["call", "talk", "run", "\"/bin/ls\"", "--json"]);
    let no_bin = String::from_utf8_lossy(&no_bin.stdout);
    assert!(
        no_bin.contains("run /bin/ls: No such file or directory"),
        "{no_bin}"
    );

    // The app's own lines on both streams, with an escape sequence and a forged line in them.
    d.ok(&[
        "call",
        "talk",
        "say",
        r#""hi\u001b[2J\r + seccomp: FORGED""#,
    ]);
    let hostile = "hi\u{1b}[2J\r + seccomp: FORGED";
    let lines = wait_for_lines(
        &d,
        "talk",
        &[
            ("app", "stdout", &format!("out: {hostile}")),
            ("app", "stderr", &format!("err: {hostile}")),
        ],
    );
    for line in &lines {
        let time = line["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && time.len() == 24, "{line}");
    }
    // Humans see it escaped: no control character reaches the terminal.
    let human = d.ok(&["logs", "talk"]);
    assert!(
        human.contains(r" app stdout out: hi\u{1b}[2J\r + seccomp: FORGED"),
        "{human}"
    );
    assert!(
        !human.chars().any(|c| c.is_control() && c != '\n'),
        "{human:?}"
    );
    // --since and --last.
    assert!(
        logs(
            &d,
            "talk",
            &["--since", "2000-01-01T00:00:00Z", "--last", "1"]
        )
        .len()
            == 1
    );
    let future = logs(&d, "talk", &["--since", "2999-01-01T00:00:00Z"]);
    assert!(future.is_empty(), "{future:?}");

    // A follower sees new lines as they come, across a restart of the runner.
    let mut follow = d.cmd();
    follow.args(["logs", "talk", "--follow", "--json", "--since", "1s"]);
    let mut child = follow.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let _child = ChildGuard::new(child);
    let (tx, rx) = channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str(&line)
                && tx.send(v).is_err()
            {
                break;
            }
        }
    });
    let seen = |text: &str| {
        let deadline = Instant::now() + LONG;
        while let Ok(v) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if v["text"] == text {
                return true;
            }
        }
        false
    };
    d.ok(&["call", "talk", "say", r#""before restart""#]);
    assert!(seen("out: before restart"));
    d.ok(&["restart", "talk"]);
    d.ok(&["call", "talk", "say", r#""after restart""#]);
    assert!(seen("out: after restart"));
    // One log across runners: the older runner's lines are still there.
    let lines = logs(&d, "talk", &[]);
    assert!(has(&lines, "app", "stdout", "out: before restart"));
    assert!(has(&lines, "app", "stdout", &format!("out: {hostile}")));

    // Destroyed: the log is kept (the follower is told and ends), until --purge.
    d.ok(&["destroy", "talk"]);
    let kept = logs(&d, "talk", &[]);
    assert!(
        has(&kept, "app", "stdout", "out: after restart"),
        "{kept:#?}"
    );
    assert_eq!(
        d.ok(&["destroy", "talk", "--purge"]),
        "removed the kept log of talk"
    );
    let gone = d.host(&["logs", "talk"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not found"));
    assert_eq!(
        d.ok(&["destroy", "talk-pool", "--purge"]),
        "destroyed talk-pool and removed its log"
    );
}

#[test]
fn bad_env_config_and_files_are_refused_before_anything_is_sent() {
    let d = Serve::start(&[]);
    let lib = block_on(built("talker_app"));
    let big = d.dir().join("big");
    std::fs::write(&big, vec![b'x'; 256 * 1024 + 1]).unwrap();
    let big = big.to_str().unwrap();
    let small = d.dir().join("small");
    std::fs::write(&small, b"x").unwrap();
    let small = small.to_str().unwrap();
    for (args, why) in [
        (vec!["--env", "NOVALUE"], "expected K=V"),
        (vec!["--env", "=x"], "variable name"),
        (vec!["--config", big], "larger than"),
        (
            vec!["--file", &format!("{small}:/proc/self/mem")],
            "under /data/",
        ),
        (
            vec!["--file", &format!("{small}:/data/../runner")],
            "under /data/",
        ),
        (
            vec!["--file", &format!("{small}:/data/a"), "--isolation", "none"],
            "root of the sandbox's own",
        ),
    ] {
        let mut all = vec!["create", "bad", "--lib", lib.to_str().unwrap()];
        all.extend(&args);
        let out = d.host(&all);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let list = d.json(&["list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}

/// The hostile case: 64 MiB of stdout as fast as the pipe takes them, with a follower
/// attached. The log stays within its bound, the daemon's memory does not follow the flood,
/// and it answers meanwhile.
#[test]
fn an_app_flooding_its_stdout_costs_the_daemon_neither_memory_nor_disk() {
    let d = Serve::start(&[]);
    let lib = block_on(built("talker_app"));
    let info = d.create("flood", &lib, &[]);
    let dir = std::path::PathBuf::from(info["dir"].as_str().unwrap());
    let (rss_before, _) = d.memory_kib();
    let mut follow = d.cmd();
    follow.args(["logs", "flood", "--follow", "--json"]);
    let follower = ChildGuard::new(follow.stdout(Stdio::null()).spawn().unwrap());
    let mut flood = {
        let mut cmd = d.cmd();
        cmd.args(["call", "flood", "flood", "64", "--timeout", "120000"]);
        ChildGuard::new(cmd.stdout(Stdio::null()).spawn().unwrap())
    };
    // The daemon answers while the app floods.
    let started = Instant::now();
    d.ok(&["info", "flood"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A line of 1 MiB is cut into records of at most 4096 bytes.
    d.ok(&["call", "flood", "long_line", "1048576"]);
    let status = flood.wait_exit(Duration::from_secs(120));
    assert!(
        status.is_some_and(|s| s.success()),
        "the flood did not finish: {status:?}"
    );
    eprintln!("64 MiB of stdout written in {:?}", started.elapsed());
    drop(follower);
    let bytes: u64 = ["runner.log", "runner.log.1"]
        .iter()
        .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
        .map(|m| m.len())
        .sum();
    assert!(bytes <= 8 << 20, "the log holds {bytes} bytes");
    let lines = logs(&d, "flood", &["--last", "50"]);
    assert!(lines.len() <= 50);
    assert!(
        lines
            .iter()
            .all(|l| l["text"].as_str().unwrap().len() <= 4096),
        "a record past 4096 bytes"
    );
    // What was dropped is said with the app's next output (a second after the flood's).
    let mut all = Vec::new();
    let said = wait_until(LONG, || {
        d.ok(&["call", "flood", "say", r#""after the flood""#]);
        all = logs(&d, "flood", &["--last", "20"]);
        let notice = all.iter().any(|l| {
            l["source"] == "sandbox" && l["text"].as_str().unwrap().contains("suppressed")
        });
        notice && has(&all, "app", "stdout", "out: after the flood")
    });
    assert!(said, "no notice of what was dropped: {all:#?}");
    let (rss_after, _) = d.memory_kib();
    eprintln!("daemon RSS {rss_before} KiB -> {rss_after} KiB; the log holds {bytes} bytes");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "daemon RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}
