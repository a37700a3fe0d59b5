//! What a bad message on a node's subject gets (garbage JSON, a payload over the fleet's
//! bound, an unknown op, a subject that disagrees with its request): a typed error answer,
//! and nothing changes. A client or a node with wrong credentials is refused, and a
//! password never appears on a command line.

use super::*;

/// Sends `payload` on `subject` and returns the answer's error kind.
async fn error_kind(client: &async_nats::Client, subject: &str, payload: Vec<u8>) -> String {
    let answer = client
        .request(subject.to_string(), payload.into())
        .await
        .unwrap_or_else(|e| panic!("no answer on {subject}: {e}"));
    let value: Value = serde_json::from_slice(&answer.payload).unwrap();
    value["error"]["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {value}"))
        .to_string()
}

#[test]
fn bad_messages_get_an_error_answer_and_harm_nothing() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    let fleet = Fleet::start(&binary, 1, &[]);
    fleet.create("calm", &lib, &[]);
    let urls = fleet.nats.urls();
    e2e::apps::block_on(async {
        let client = async_nats::connect(urls.split(',').next().unwrap())
            .await
            .unwrap();
        let kinds = [
            ("sandbox.node0.call", b"{not json".to_vec()),
            ("sandbox.node0.call", vec![0xff, 0xfe, 0x00]),
            ("sandbox.node0.call", vec![b' '; 2 * 1024 * 1024]),
            (
                "sandbox.node0.format_disk",
                br#"{"op":"format_disk"}"#.to_vec(),
            ),
            (
                "sandbox.node0.events",
                br#"{"op":"events","follow":true}"#.to_vec(),
            ),
            (
                "sandbox.node0.info",
                br#"{"op":"destroy","id":"calm"}"#.to_vec(),
            ),
            (
                "sandbox.node0.create",
                br#"{"op":"create","id":"evil","spec":{"app":{"library":"/etc/passwd"}}}"#.to_vec(),
            ),
            (
                "sandbox.node0.reload",
                br#"{"op":"reload","id":"calm","source":{"crate":"/"}}"#.to_vec(),
            ),
        ];
        let mut got = Vec::new();
        for (subject, payload) in kinds {
            got.push(error_kind(&client, subject, payload).await);
        }
        assert_eq!(
            got,
            [
                "bad_request",
                "bad_request",
                "too_large",
                "unknown_op",
                "unknown_op",
                "bad_request",
                "bad_request",
                "bad_request"
            ]
        );
        // A create whose labels header is not labels, or too long, is refused whole.
        // A well-formed library name, so that only the header can be what is refused.
        let create = format!(
            r#"{{"op":"create","id":"labelled","spec":{{"app":{{"library":"sha256:{}"}}}}}}"#,
            "0".repeat(64)
        );
        for labels in [
            "no-equals-sign".to_string(),
            format!("k={}", "v".repeat(5000)),
        ] {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Sandbox-Labels", labels.as_str());
            let answer = client
                .request_with_headers("sandbox.node0.create", headers, create.clone().into())
                .await
                .unwrap();
            let value: Value = serde_json::from_slice(&answer.payload).unwrap();
            assert_eq!(value["error"]["kind"], "bad_request", "{value}");
            let message = value["error"]["message"].as_str().unwrap_or("");
            assert!(
                message.contains("label") || message.contains("Sandbox-Labels"),
                "{value}"
            );
        }
    });
    // Nothing changed: the sandbox serves, nothing was created or destroyed.
    assert_eq!(fleet.json(&["call", "calm", "answer"]), 41);
    assert_eq!(fleet.owners(), [("calm".to_string(), "node0".to_string())]);
    assert!(fleet.nodes[0].log().contains("listening"));
}

#[test]
fn wrong_credentials_are_refused_and_passwords_stay_off_the_command_line() {
    let Some(binary) = nats_server() else {
        return;
    };
    let nats = Nats::start(
        &binary,
        1,
        "authorization { user: \"fleet\", password: \"s3cret-Pa55\" }",
    );
    let urls = nats.urls();
    let dir = testkit::scratch::scratch_named("e2e-fleet-auth-");
    let password_file = dir.path().join("nats-password");
    std::fs::write(&password_file, "s3cret-Pa55\n").unwrap();
    let wrong_file = dir.path().join("wrong-password");
    std::fs::write(&wrong_file, "guess\n").unwrap();
    // A node with the right password (from a file) joins; its command line has no secret.
    let node = Serve::start_in(
        dir.path(),
        &[
            "--pool",
            "0",
            "--cluster",
            &urls,
            "--node",
            "solo",
            "--nats-user",
            "fleet",
            "--nats-password-file",
            password_file.to_str().unwrap(),
        ],
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", node.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("s3cret"));
    // A node with a wrong one does not start.
    let refused = Serve::refused(
        None,
        &[
            "--cluster",
            &urls,
            "--node",
            "intruder",
            "--nats-user",
            "fleet",
            "--nats-password-file",
            wrong_file.to_str().unwrap(),
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("uthoriz"), "{stderr}");
    // Clients: no credentials and a wrong password are refused (exit 3: no fleet reached);
    // the right password, from the environment, lists the node.
    let out = fleet_client(&urls).args(["nodes"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fleet_client(&urls)
        .args(["nodes"])
        .env("SANDBOX_HOST_NATS_USER", "fleet")
        .env("SANDBOX_HOST_NATS_PASSWORD", "guess")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("uthoriz"));
    let seen = wait_until(UP, || {
        let out = fleet_client(&urls)
            .args(["nodes", "--json"])
            .env("SANDBOX_HOST_NATS_USER", "fleet")
            .env("SANDBOX_HOST_NATS_PASSWORD", "s3cret-Pa55")
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"solo\"")
    });
    assert!(seen, "{}", node.log());
}
