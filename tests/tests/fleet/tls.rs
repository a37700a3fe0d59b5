//! TLS and nkey logins against a real nats-server: a throwaway CA (made with the `openssl`
//! CLI) signs the server's certificate for 127.0.0.1 and a client certificate; a node and a
//! client that trust the CA (`--nats-ca`) join, one that does not is refused with a message
//! naming the certificate; with `verify: true` only a client certificate gets in. A node
//! with an nkey seed file (`--nats-nkey`) joins, another seed is refused, and the seed never
//! appears on the node's command line. A node with a credentials file (`--nats-creds`: a user
//! JWT and its seed, as `nsc` writes them; the JWTs are signed here with the `nkeys` crate, for
//! a server in operator mode) joins, and one whose account the server does not know is refused.

use super::*;

/// The variables naming TLS files and nkey seeds, cleared from every client here.
const CREDENTIAL_VARS: [&str; 5] = [
    "SANDBOX_HOST_NATS_CA",
    "SANDBOX_HOST_NATS_CERT",
    "SANDBOX_HOST_NATS_KEY",
    "SANDBOX_HOST_NATS_NKEY",
    "SANDBOX_HOST_NATS_CREDS",
];

/// A fleet client for `urls` with no credentials but those the caller adds.
fn client(urls: &str) -> Command {
    let mut cmd = fleet_client(urls);
    for var in CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `openssl ARGS` in `dir`; panics with its stderr when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temp dir with a throwaway CA (`ca.pem`) and, signed by it, a server certificate for
/// IP 127.0.0.1 (`server.pem`, `server.key`) and a client certificate (`client.pem`,
/// `client.key`); None (and a `SKIPPED` line) without the `openssl` CLI.
fn make_pki() -> Option<TempDir> {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip("the openssl CLI is not installed (apt-get install openssl)");
        return None;
    }
    let dir = testkit::scratch::scratch_named("e2e-fleet-pki-");
    let d = dir.path();
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"];
    openssl(
        d,
        &[
            &["req", "-x509"],
            &new_key[..],
            &ca,
            &["-subj", "/CN=e2e fleet CA"],
        ]
        .concat(),
    );
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, extfile, subject) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
            format!("/CN={name}"),
        );
        std::fs::write(d.join(&extfile), ext).unwrap();
        let req = ["-keyout", &key, "-out", &csr, "-subj", &subject];
        openssl(d, &[&["req"], &new_key[..], &req].concat());
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
    }
    Some(dir)
}

/// Waits until `cmd nodes --json FLAGS` lists `node`; panics with `log` when it does not.
fn wait_listed(cmd: impl Fn() -> Command, flags: &[&str], node: &str, log: &str) {
    let mut last = String::new();
    let seen = wait_until(UP, || {
        let out = cmd()
            .args(["nodes", "--json"])
            .args(flags)
            .output()
            .unwrap();
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains(&format!("\"{node}\""))
    });
    assert!(seen, "{node} not listed: {last}\n{log}");
}

/// Asserts that `cmd` (a client command) exits 3 with a message containing one of `words`
/// (case-insensitive).
fn assert_refused(cmd: &mut Command, words: &[&str]) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let lower = stderr.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(w)),
        "{words:?}: {stderr}"
    );
}

/// The serve flags that join `urls` as `node`, then `extra`.
fn node_args<'a>(urls: &'a str, node: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--pool", "0", "--cluster", urls, "--node", node];
    args.extend(extra);
    args
}

#[test]
fn tls_with_the_ca_joins_and_without_it_is_refused() {
    let Some(binary) = nats_server() else {
        return;
    };
    let Some(pki) = make_pki() else {
        return;
    };
    let p = pki.path();
    let ca = p.join("ca.pem");
    let ca_s = ca.to_str().unwrap();
    let nats = Nats::start(
        &binary,
        1,
        &format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\" }}",
            p.join("server.pem").display(),
            p.join("server.key").display()
        ),
    );
    let urls = nats.urls();
    assert!(urls.starts_with("tls://"), "{urls}");
    let dir = testkit::scratch::scratch_named("e2e-fleet-tls-");
    let node = Serve::start_in(
        dir.path(),
        &node_args(&urls, "secure", &["--nats-ca", ca_s]),
    );
    // The CA as a flag lists the node; as the environment, a create/call round trip works.
    wait_listed(
        || client(&urls),
        &["--nats-ca", ca_s],
        "secure",
        &node.log(),
    );
    // A nats:// URL for the same server works too: the client upgrades to TLS.
    let plain_urls = urls.replace("tls://", "nats://");
    wait_listed(
        || client(&plain_urls),
        &["--nats-ca", ca_s],
        "secure",
        &node.log(),
    );
    let lib = demo_lib();
    let parent = testkit::cgroup::cgroup_parent();
    let mut create = vec!["create", "sealed", "--lib", lib.to_str().unwrap(), "--json"];
    if let Some(parent) = &parent {
        create.extend(["--cgroup-parent", parent.to_str().unwrap()]);
    }
    let with_ca = || {
        let mut cmd = client(&urls);
        cmd.env("SANDBOX_HOST_NATS_CA", &ca);
        cmd
    };
    for args in [&create[..], &["call", "sealed", "answer", "--json"]] {
        let out = with_ca().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            node.log()
        );
        if args[0] == "call" {
            assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), 41);
        }
    }
    // Without the CA the server's certificate is not trusted: a client exits 3, a node does
    // not start, and both say why.
    assert_refused(client(&urls).args(["nodes"]), &["certificate"]);
    let refused = Serve::refused(None, &node_args(&urls, "plain", &[]));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    let out = with_ca().args(["destroy", "sealed"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mutual_tls_admits_only_a_client_certificate() {
    let Some(binary) = nats_server() else {
        return;
    };
    let Some(pki) = make_pki() else {
        return;
    };
    let p = pki.path();
    let file = |name: &str| p.join(name).to_str().unwrap().to_string();
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let nats = Nats::start(
        &binary,
        1,
        &format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{ca}\", verify: true }}",
            file("server.pem"),
            file("server.key")
        ),
    );
    let urls = nats.urls();
    let dir = testkit::scratch::scratch_named("e2e-fleet-mtls-");
    let node = Serve::start_in(
        dir.path(),
        &node_args(
            &urls,
            "mutual",
            &["--nats-ca", &ca, "--nats-cert", &cert, "--nats-key", &key],
        ),
    );
    wait_listed(
        || {
            let mut cmd = client(&urls);
            cmd.env("SANDBOX_HOST_NATS_CA", &ca)
                .env("SANDBOX_HOST_NATS_CERT", &cert)
                .env("SANDBOX_HOST_NATS_KEY", &key);
            cmd
        },
        &[],
        "mutual",
        &node.log(),
    );
    // Trusting the server is not enough: without a certificate of its own a client exits 3
    // and a node exits 1 at once, both naming the certificate.
    assert_refused(
        client(&urls).args(["nodes", "--nats-ca", &ca]),
        &["certificate"],
    );
    let refused = Serve::refused(None, &node_args(&urls, "anonymous", &["--nats-ca", &ca]));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Certificate"), "{stderr}");
}

#[test]
fn nkey_seed_joins_another_seed_is_refused_and_the_seed_stays_off_the_command_line() {
    let Some(binary) = nats_server() else {
        return;
    };
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let nats = Nats::start(
        &binary,
        1,
        &format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}",
            user.public_key()
        ),
    );
    let urls = nats.urls();
    let dir = testkit::scratch::scratch_named("e2e-fleet-nkey-");
    let seed = user.seed().unwrap();
    let seed_file = dir.path().join("nkey.seed");
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();
    let stranger_file = dir.path().join("stranger.seed");
    std::fs::write(&stranger_file, stranger.seed().unwrap()).unwrap();
    let node = Serve::start_in(
        dir.path(),
        &node_args(
            &urls,
            "keyed",
            &["--nats-nkey", seed_file.to_str().unwrap()],
        ),
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", node.pid())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(!cmdline.contains(&seed), "{cmdline}");
    assert!(!cmdline.contains(&seed[..8]), "{cmdline}");
    wait_listed(
        || {
            let mut cmd = client(&urls);
            cmd.env("SANDBOX_HOST_NATS_NKEY", &seed_file);
            cmd
        },
        &[],
        "keyed",
        &node.log(),
    );
    // Another seed, and none at all, are refused.
    assert_login_refused(&urls, "--nats-nkey", &stranger_file);
}

/// A client with `flag FILE` and one with no credentials are refused (exit 3), and a node
/// with `flag FILE` does not start (exit 1), each saying it was not authorized.
fn assert_login_refused(urls: &str, flag: &str, file: &Path) {
    let file = file.to_str().unwrap();
    assert_refused(client(urls).args(["nodes", flag, file]), &["uthoriz"]);
    assert_refused(client(urls).args(["nodes"]), &["uthoriz"]);
    let refused = Serve::refused(None, &node_args(urls, "impostor", &[flag, file]));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("uthoriz"), "{stderr}");
}

/// A NATS JWT (v2) about `subject`, signed by `issuer`; `nats` is its typed part.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("{name}-{subject}"),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!("{header}.{}", b64.encode(claims.to_string()));
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64.encode(signature))
}

/// An account JWT with no limit, and JetStream when `jetstream` (never for the system
/// account: the server refuses it).
fn account_jwt(
    operator: &nkeys::KeyPair,
    account: &nkeys::KeyPair,
    name: &str,
    jetstream: bool,
) -> String {
    let js = if jetstream { -1 } else { 0 };
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": js, "disk_storage": js, "streams": js, "consumer": js,
    });
    let claims = serde_json::json!({
        "limits": unlimited,
        "default_permissions": { "pub": {}, "sub": {} },
        "type": "account",
        "version": 2,
    });
    nats_jwt(operator, &account.public_key(), name, claims)
}

/// A credentials file as `nsc` writes it: the user's JWT, then its seed.
fn creds_file(path: &Path, account: &nkeys::KeyPair, user: &nkeys::KeyPair) {
    let claims = serde_json::json!({
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        "type": "user", "version": 2,
    });
    let jwt = nats_jwt(account, &user.public_key(), "node", claims);
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n",
        user.seed().unwrap()
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_creds_file_joins_one_of_an_unknown_account_is_refused() {
    let Some(binary) = nats_server() else {
        return;
    };
    // Operator mode, as `nsc` sets it up: the server trusts the operator, which signed the
    // system account and the fleet's account (preloaded); users are signed by an account.
    let operator = nkeys::KeyPair::new_operator();
    let (system, account, stranger) = (
        nkeys::KeyPair::new_account(),
        nkeys::KeyPair::new_account(),
        nkeys::KeyPair::new_account(),
    );
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "e2e",
        serde_json::json!({ "type": "operator", "version": 2 }),
    );
    let nats = Nats::start(
        &binary,
        1,
        &format!(
            "operator: \"{operator_jwt}\"\nsystem_account: \"{sys}\"\nresolver: MEMORY\n\
             resolver_preload: {{ {sys}: \"{sys_jwt}\", {fleet}: \"{fleet_jwt}\" }}",
            sys = system.public_key(),
            sys_jwt = account_jwt(&operator, &system, "SYS", false),
            fleet = account.public_key(),
            fleet_jwt = account_jwt(&operator, &account, "fleet", true),
        ),
    );
    let urls = nats.urls();
    let dir = testkit::scratch::scratch_named("e2e-fleet-creds-");
    let creds = dir.path().join("node.creds");
    creds_file(&creds, &account, &nkeys::KeyPair::new_user());
    // A user of an account the server does not know, with a well-formed file.
    let unknown = dir.path().join("stranger.creds");
    creds_file(&unknown, &stranger, &nkeys::KeyPair::new_user());
    let node = Serve::start_in(
        dir.path(),
        &node_args(
            &urls,
            "credentialed",
            &["--nats-creds", creds.to_str().unwrap()],
        ),
    );
    wait_listed(
        || {
            let mut cmd = client(&urls);
            cmd.env("SANDBOX_HOST_NATS_CREDS", &creds);
            cmd
        },
        &[],
        "credentialed",
        &format!("{}\n{}", node.log(), nats.log(0)),
    );
    assert_login_refused(&urls, "--nats-creds", &unknown);
}
