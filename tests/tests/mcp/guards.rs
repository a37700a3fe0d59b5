//! The HTTP endpoint's guards: the dashboard's token, a loopback `Host` and `Origin`, the
//! body cap; a non-loopback address refused without a token; and a sandboxed app that
//! tries to reach the endpoint.

use serde_json::json;

use super::*;

/// An `initialize` request body.
fn initialize() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "guards", "version": "0"}
        }
    })
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// POSTs `body` to `url` with `headers`; the status and the body.
async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
    let mut request = http()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_endpoint_wants_the_token_a_loopback_host_and_origin_and_a_small_body() {
    let d = Serve::start(&["--mcp", "127.0.0.1:0", "--ui-token", TOKEN]);
    let url = mcp_url(&d);
    let body = || serde_json::to_vec(&initialize()).unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let (status, _) = post(&url, &[], body()).await;
    assert_eq!(status, 401, "no token");
    let (status, _) = post(&url, &[("authorization", "Bearer wrong")], body()).await;
    assert_eq!(status, 401, "a wrong token");
    // The dashboard's cookie is not a credential here (a browser sends it on its own).
    let (status, _) = post(&url, &[("cookie", "sandbox_host_ui=00")], body()).await;
    assert_eq!(status, 401, "a cookie");
    // DNS rebinding: a page of another name that resolves to 127.0.0.1.
    let (status, _) = post(
        &url,
        &[("authorization", &bearer), ("host", "evil.example:80")],
        body(),
    )
    .await;
    assert_eq!(status, 403, "a foreign Host");
    let (status, _) = post(
        &url,
        &[
            ("authorization", &bearer),
            ("origin", "http://evil.example"),
        ],
        body(),
    )
    .await;
    assert_eq!(status, 403, "a foreign Origin");
    // Too large: refused before it is read whole.
    let mut huge = initialize();
    huge["params"]["padding"] = json!("x".repeat(2 << 20));
    let (status, text) = post(
        &url,
        &[("authorization", &bearer)],
        serde_json::to_vec(&huge).unwrap(),
    )
    .await;
    assert_eq!(status, 413, "a 2 MiB body: {text}");
    // Not JSON at all: an error, and the daemon serves on.
    let (status, _) = post(&url, &[("authorization", &bearer)], b"{not json".to_vec()).await;
    assert!((400..500).contains(&status), "garbage: {status}");
    let (status, text) = post(
        &url,
        &[
            ("authorization", &bearer),
            ("origin", "http://localhost:6274"),
        ],
        body(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("sandbox-host"), "{text}");
    // The official client with the token.
    if let Ok(python) = python() {
        let report = agent(
            &python,
            Via::Http {
                url: &url,
                token: Some(TOKEN),
            },
            &["init"],
        );
        assert_eq!(tool_names(&report), READ_TOOLS);
    }
}

#[test]
fn a_non_loopback_endpoint_needs_a_token_and_write_needs_the_endpoint() {
    Serve::assert_refused(&["--mcp", "0.0.0.0:0"], "--ui-token");
    Serve::assert_refused(&["--mcp-write"], "--mcp");
    Serve::assert_refused(&["--mcp", "127.0.0.1:0", "--mcp-write"], "--ui-token");
}

/// A sandbox without `--network` cannot even connect (no `AF_INET` socket, no host network).
/// One with `--network` shares the host's loopback: that is why `--mcp-write` over HTTP
/// needs the token (above).
#[test]
fn a_sandboxed_app_cannot_reach_the_endpoint() {
    let d = Serve::start(&["--mcp", "127.0.0.1:0", "--mcp-write", "--ui-token", TOKEN]);
    let url = mcp_url(&d);
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/mcp")
        .parse()
        .unwrap();
    let lib = block_on(built("hostile_app"));
    d.create("reach", &lib, &[]);
    let args = json!({"tcp": port, "udp": port}).to_string();
    let r = d.json(&["call", "reach", "connect_net", &args]);
    assert_ne!(r["tcp"]["ok"], true, "the app reached /mcp: {r}");
    assert!(r["tcp"]["errno"].as_i64().is_some(), "{r}");
}
