//! The table and the goals printed after a run.

use serde_json::Value;

use crate::stats::p50_of;

/// The rows of the table: label, summary key path, unit factor to microseconds.
const ROWS: &[(&str, &[&str], f64)] = &[
    ("floor_spawn_us", &["floor_spawn_us"], 1.0),
    ("create_ready_us.none", &["create_ready_us", "none"], 1.0),
    (
        "create_ready_us.standard",
        &["create_ready_us", "standard"],
        1.0,
    ),
    (
        "create_ready_us.standard (pool empty)",
        &["create_ready_us", "standard_pool_empty"],
        1.0,
    ),
    ("pool.prepare_us", &["pool", "prepare_us"], 1.0),
    ("reload_us", &["reload_us"], 1.0),
    ("call_rtt_us", &["call_rtt_us"], 1.0),
    ("usage_us.p1", &["usage_us", "p1"], 1.0),
    ("usage_us.p1000", &["usage_us", "p1000"], 1.0),
    ("destroy_us", &["destroy_us"], 1.0),
    ("reload_loop_ms (ms)", &["reload_loop_ms"], 1000.0),
    ("peer_unshare_us", &["peer_unshare_us"], 1.0),
    ("peer_bwrap_us", &["peer_bwrap_us"], 1.0),
];

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

pub(crate) fn print_table(s: &Value) {
    let floor = p50_of(&s["floor_spawn_us"]);
    let unshare = p50_of(&s["peer_unshare_us"]);
    let bwrap = p50_of(&s["peer_bwrap_us"]);
    let ratio = |x: f64, base: Option<f64>| match base {
        Some(b) if b > 0.0 => format!("{:.2}x", x / b),
        _ => "-".into(),
    };
    println!(
        "\n| operation | p50 | p99 | n | / floor | / unshare | / bwrap |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for (label, path, to_us) in ROWS {
        let v = at(s, path);
        match p50_of(v) {
            Some(p50) => {
                let us = p50 * to_us;
                println!(
                    "| {label} | {p50:.1} | {:.1} | {} | {} | {} | {} |",
                    v["p99"].as_f64().unwrap_or(f64::NAN),
                    v["n"],
                    ratio(us, floor),
                    ratio(us, unshare),
                    ratio(us, bwrap),
                );
            }
            None => println!(
                "| {label} | - | - | - | skipped: {} | | |",
                v["skipped"].as_str().unwrap_or("?")
            ),
        }
    }
    let c = &s["call_rtt_us"];
    if let (Some(call), Some(floor)) = (p50_of(c), c["socketpair_floor_p50"].as_f64()) {
        println!(
            "\ncall_rtt_us against a bare socketpair round trip in the same run: {call} vs {floor} µs ({})",
            ratio(call, Some(floor))
        );
    }
    let m = &s["sandboxes_1000"];
    println!(
        "\nsandboxes_1000: n={} total_s={} host_rss_kb={} mean_pss_kb={} processes={} destroy_all_s={}",
        m["n"],
        m["total_s"],
        m["host_rss_kb"],
        m["mean_pss_kb"],
        m["processes"],
        m["destroy_all_s"]
    );
    if let Some(note) = m["note"].as_str() {
        println!("  ({note})");
    }
    let b = &s["sandboxes_1000_batch"];
    println!(
        "sandboxes_1000_batch: n={} create_s={} (max_concurrency={}, pooled={}) mean_pss_kb={} destroy_s={} settled_s={}",
        b["n"],
        b["create_s"],
        b["max_concurrency"],
        b["pooled"],
        b["mean_pss_kb"],
        b["destroy_s"],
        b["settled_s"]
    );
    let w = &s["watching"];
    println!(
        "watching: {} sandboxes at 1 s: daemon cpu={}% (unwatched {}%) rss_delta_kb={} event_latency_ms p50={} p99={}{}",
        w["sandboxes"],
        w["daemon_cpu_percent"],
        w["daemon_cpu_percent_unwatched"],
        w["rss_delta_kb"],
        w["event_latency_ms"]["p50"],
        w["event_latency_ms"]["p99"],
        w["skipped"]
            .as_str()
            .map(|why| format!(" (skipped: {why})"))
            .unwrap_or_default()
    );
    let r = &s["daemon_rss_kb"];
    println!(
        "daemon_rss_kb under 48 unterminated 15 MB lines and 1000 idle connections: before={} loaded={} after={} peak={}{}",
        r["before"],
        r["loaded"],
        r["after"],
        r["peak"],
        r["skipped"]
            .as_str()
            .map(|why| format!(" (skipped: {why})"))
            .unwrap_or_default()
    );
}

/// Prints each goal of the issue as met, missed or not measured.
pub(crate) fn print_goals(s: &Value) {
    let p50 = |path: &[&str]| p50_of(at(s, path));
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    let standard = p50(&["create_ready_us", "standard"]);
    let bwrap = p50(&["peer_bwrap_us"]);
    let floor = p50(&["floor_spawn_us"]);
    let m = &s["sandboxes_1000"];
    let b = &s["sandboxes_1000_batch"];
    let w = &s["watching"];
    let p99 = |path: &[&str]| at(s, path)["p99"].as_f64();
    let cold = p50(&["create_ready_us", "standard_pool_empty"]);
    let call = p50(&["call_rtt_us"]);
    let call_floor = s["call_rtt_us"]["socketpair_floor_p50"].as_f64();
    let goals: Vec<(String, Option<bool>)> = vec![
        (
            "create_ready_us.standard p50 <= 1000 (pool warm)".into(),
            standard.map(|v| v <= 1000.0),
        ),
        (
            "create_ready_us.standard p50 <= 0.25 x peer_bwrap_us p50".into(),
            standard.zip(bwrap).map(|(a, b)| a <= 0.25 * b),
        ),
        (
            "create_ready_us.standard p99 <= 3000".into(),
            p99(&["create_ready_us", "standard"]).map(|v| v <= 3000.0),
        ),
        (
            "create_ready_us.standard_pool_empty p50 (informational: no slower than before)".into(),
            cold.map(|_| true),
        ),
        (
            "create_ready_us.none p50 <= 1.5 x floor_spawn_us p50".into(),
            p50(&["create_ready_us", "none"])
                .zip(floor)
                .map(|(a, f)| a <= 1.5 * f),
        ),
        (
            "destroy_us p99 <= 10000".into(),
            p99(&["destroy_us"]).map(|v| v <= 10_000.0),
        ),
        (
            "reload_us p50 <= 300".into(),
            p50(&["reload_us"]).map(|v| v <= 300.0),
        ),
        (
            "call_rtt_us p50 <= 1.3 x socketpair floor p50".into(),
            call.zip(call_floor).map(|(c, f)| c <= 1.3 * f),
        ),
        (
            "usage_us.p1000 p50 <= 2000".into(),
            p50(&["usage_us", "p1000"]).map(|v| v <= 2000.0),
        ),
        (
            format!("{} sandboxes <= 3 s", m["n"]),
            m["total_s"].as_f64().map(|v| v <= 3.0),
        ),
        (
            "mean PSS per sandbox <= 1 MB (1024 kB)".into(),
            m["mean_pss_kb"].as_f64().map(|v| v <= 1024.0),
        ),
        (
            format!("{} sandboxes in one batch create <= 3 s", b["n"]),
            b["create_s"].as_f64().map(|v| v <= 3.0),
        ),
        (
            format!("{} sandboxes in one batch destroy <= 1 s", b["n"]),
            b["destroy_s"].as_f64().map(|v| v <= 1.0),
        ),
        (
            "batch: mean PSS per sandbox <= 1 MB (1024 kB)".into(),
            b["mean_pss_kb"].as_f64().map(|v| v <= 1024.0),
        ),
        (
            "reload_loop_ms p50 <= 1000".into(),
            p50(&["reload_loop_ms"]).map(|v| v <= 1000.0),
        ),
        (
            "watching: daemon CPU < 2% of one core (100 sandboxes, 1 s)".into(),
            w["daemon_cpu_percent"].as_f64().map(|v| v < 2.0),
        ),
        (
            "watching: RSS delta < 20 MB".into(),
            w["rss_delta_kb"].as_f64().map(|v| v < 20.0 * 1024.0),
        ),
        (
            "watching: event latency p99 < 50 ms".into(),
            w["event_latency_ms"]["p99"].as_f64().map(|v| v < 50.0),
        ),
    ];
    println!("\ngoals:");
    for (goal, ok) in goals {
        println!("  {:<13} {goal}", verdict(ok));
    }
}
