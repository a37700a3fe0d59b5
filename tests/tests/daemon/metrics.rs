//! `host serve --metrics`: a real daemon scraped over real HTTP; the output checked by a real
//! parser (`promtool check metrics`) and against `host usage`; series of a destroyed sandbox
//! gone; verdicts and latencies counted; a non-loopback address refused without the flag.

use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::prelude::*;
use e2e::serve::Serve;

/// The value of the sample `name` whose labels contain `labels` (all of them, e.g.
/// `sandbox="m1"`), from the classic text format.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|l| rest.contains(l)))
                .then(|| value.parse().ok())
                .flatten()
        })
}

async fn scrape(client: &reqwest::Client, url: &str) -> String {
    let response = client.get(url).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    response.text().await.unwrap()
}

/// Runs `promtool check metrics` on `text`; panics with its complaints.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have_promtool() -> bool {
    Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_match_usage_and_follow_the_sandboxes() {
    if !have_promtool() {
        skip("promtool is not installed (apt-get install prometheus)");
        return;
    }
    let lib = built("sandbox_app").await;
    let d = Serve::start(&["--metrics", "127.0.0.1:0"]);
    let url = d.url("metrics").unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let created = d.create("m1", &lib, &["--max-memory", "128M"]);
    assert_eq!(created["id"], "m1");
    d.json(&["workers", "m1", "--add", "3"]);
    for _ in 0..3 {
        assert_eq!(d.json(&["call", "m1", "answer"]), 41);
    }

    // A scrape from the synchronous wait below, on this multi-threaded runtime.
    let scrape_now = || {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(scrape(&client, &url))
        })
    };

    // The scrape and `host usage` agree (processes exactly, once the workers are up).
    let mut last = (String::new(), serde_json::Value::Null);
    let agree = wait_until(Duration::from_secs(15), || {
        let text = scrape_now();
        let usage = d.json(&["usage", "m1"]);
        let ok = sample(
            &text,
            "sandbox_host_sandbox_processes",
            &[r#"sandbox="m1""#],
        ) == usage["processes"].as_f64()
            && usage["processes"].as_u64() >= Some(5);
        last = (text, usage);
        ok
    });
    let (text, usage) = last;
    assert!(agree, "scrape and usage disagree:\n{usage}\n{text}");
    promtool_check(&text);
    let m1 = [r#"sandbox="m1""#];
    let memory = sample(&text, "sandbox_host_sandbox_memory_bytes", &m1).unwrap();
    let usage_memory = usage["memory_bytes"].as_f64().unwrap();
    assert!(
        (memory - usage_memory).abs() <= (usage_memory * 0.25).max(4.0 * 1024.0 * 1024.0),
        "memory {memory} vs usage {usage_memory}"
    );
    assert!(sample(&text, "sandbox_host_sandbox_threads", &m1).unwrap() >= 5.0);
    assert!(sample(&text, "sandbox_host_sandbox_cpu_seconds_total", &m1).is_some());
    assert_eq!(
        sample(&text, "sandbox_host_sandbox_runner_restarts_total", &m1),
        Some(0.0)
    );
    assert!(
        sample(&text, "sandbox_host_sandbox_worker_restarts_total", &m1).is_some(),
        "{text}"
    );
    assert_eq!(sample(&text, "sandbox_host_sandboxes", &[]), Some(1.0));
    assert_eq!(
        sample(&text, "sandbox_host_create_duration_seconds_count", &[]),
        Some(1.0)
    );
    assert!(
        sample(
            &text,
            "sandbox_host_call_duration_seconds_count",
            &[r#"outcome="ok""#]
        )
        .unwrap()
            >= 3.0
    );

    // An operator run is counted by its verdict (from the event stream).
    d.ok(&["operate", "m1", "--skill", "anomaly", "--provider", "mock"]);
    let counted = wait_until(Duration::from_secs(5), || {
        scrape_now()
            .lines()
            .any(|l| l.starts_with("sandbox_host_operator_runs_total{verdict="))
    });
    assert!(counted, "no operator run counted");

    // Prometheus asks for OpenMetrics and gets it.
    let om = client
        .get(&url)
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let om = om.text().await.unwrap();
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
    assert!(om.contains("sandbox_host_sandbox_cpu_seconds_total{sandbox=\"m1\"}"));

    // A destroyed sandbox's series disappear.
    d.json(&["destroy", "m1"]);
    let text = scrape(&client, &url).await;
    assert!(!text.contains(r#"sandbox="m1""#), "{text}");
    assert_eq!(sample(&text, "sandbox_host_sandboxes", &[]), Some(0.0));
    promtool_check(&text);

    // Only a loopback Host: a rebound DNS name gets nothing.
    let foreign = client
        .get(&url)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
}

#[test]
fn metrics_on_a_non_loopback_address_need_the_flag() {
    Serve::assert_refused(&["--metrics", "0.0.0.0:0"], "--metrics-allow-remote");
}
