//! The `fleet` test binary: real nats-server processes (a three-server JetStream cluster on
//! loopback, routes between them, client ports chosen by the servers) and real daemons
//! joined with `host serve --cluster`, driven through the real `host` client with
//! `--cluster`. Placement and routing (`placement`), failover after `kill -9` and a stopped
//! NATS server (`failover`), hostile messages on the subjects and wrong credentials
//! (`hostile`).
//!
//! Without `nats-server` on PATH (or in `$SANDBOX_TEST_NATS_SERVER`) every test prints
//! `SKIPPED`; `.ci/run` installs it when missing.

mod failover;
mod hostile;
mod lease;
mod orphans;
mod placement;
mod readopt;
mod routed;
mod tls;
mod watching;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use e2e::prelude::*;
use e2e::serve::Serve;
use serde_json::Value;
use tempfile::TempDir;
use testkit::ChildGuard;

/// How long servers and nodes may take to come up and see each other.
const UP: Duration = Duration::from_secs(30);

/// The nats-server binary, or None (and a `SKIPPED` line) when there is none.
fn nats_server() -> Option<PathBuf> {
    let named = std::env::var_os("SANDBOX_TEST_NATS_SERVER")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let binary = named.unwrap_or_else(|| PathBuf::from("nats-server"));
    let found = Command::new(&binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        Some(binary)
    } else {
        skip("nats-server is not installed (apt-get install nats-server)");
        None
    }
}

/// One nats-server of a test's cluster.
#[derive(Debug)]
struct NatsServer {
    child: Option<ChildGuard>,
    url: String,
}

/// A JetStream cluster of nats-server processes on loopback.
#[derive(Debug)]
pub struct Nats {
    servers: Vec<NatsServer>,
    dir: TempDir,
}

impl Nats {
    /// `n` servers (routes between them when more than one), each with JetStream, a
    /// max_payload of 4 MiB (so that a payload over the fleet's own bound reaches a node),
    /// and `extra` in its config (an `authorization` or `tls` block, or nothing). Cluster
    /// ports are taken free just before the start (a server cannot be told its peers' ports
    /// otherwise); a lost race starts them all again.
    pub fn start(binary: &Path, n: usize, extra: &str) -> Nats {
        let mut log = String::new();
        for _ in 0..5 {
            match Nats::try_start(binary, n, extra) {
                Ok(nats) => return nats,
                Err(first_log) => log = first_log,
            }
        }
        panic!("could not start {n} nats-server processes; the first one's log:\n{log}");
    }

    /// Starts them, or gives the first server's log.
    fn try_start(binary: &Path, n: usize, extra: &str) -> Result<Nats, String> {
        let dir = testkit::scratch::scratch_named("e2e-nats-");
        let ports: Vec<u16> = (0..n).map(|_| testkit::http::free_port()).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|p| format!("\"nats://127.0.0.1:{p}\""))
            .collect();
        let mut servers = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let home = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(home.join("ports")).unwrap();
            let cluster = if n > 1 {
                format!(
                    "cluster {{ name: \"e2e\", listen: \"127.0.0.1:{port}\", routes: [{}] }}",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let config = format!(
                "server_name: \"n{i}\"\nlisten: \"127.0.0.1:-1\"\nmax_payload: 4194304\n\
                 ports_file_dir: \"{}\"\njetstream {{ store_dir: \"{}\" }}\n{cluster}\n{extra}\n",
                home.join("ports").display(),
                home.join("js").display()
            );
            std::fs::write(home.join("server.conf"), config).unwrap();
            let child = Command::new(binary)
                .arg("-c")
                .arg(home.join("server.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(home.join("server.log")).unwrap())
                .spawn()
                .unwrap();
            servers.push(NatsServer {
                child: Some(ChildGuard::terminate(child, Duration::from_secs(10))),
                url: String::new(),
            });
        }
        let first_log = |dir: &TempDir| {
            std::fs::read_to_string(dir.path().join("n0").join("server.log")).unwrap_or_default()
        };
        for (i, server) in servers.iter_mut().enumerate() {
            let ports = dir.path().join(format!("n{i}")).join("ports");
            let url = testkit::wait::wait_for(UP, || {
                if server.child.as_mut()?.exited().is_some() {
                    return Some(None);
                }
                let file = std::fs::read_dir(&ports).ok()?.flatten().next()?;
                let text = std::fs::read_to_string(file.path()).ok()?;
                let value: Value = serde_json::from_str(&text).ok()?;
                Some(value["nats"][0].as_str().map(str::to_string))
            })
            .flatten();
            server.url = url.ok_or_else(|| first_log(&dir))?;
        }
        let nats = Nats { servers, dir };
        // JetStream is ready once a meta leader is elected (said in some server's log); a
        // node that joins earlier waits for it too.
        let ready = wait_until(UP, || {
            (0..n).any(|i| {
                let log = nats.log(i);
                n == 1 && log.contains("Server is ready")
                    || log.contains("JetStream cluster new metadata leader")
                    || log.contains("Self is new JetStream cluster metadata leader")
            })
        });
        assert!(ready, "no JetStream leader:\n{}", nats.log(0));
        Ok(nats)
    }

    /// Server `i`'s log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("n{i}")).join("server.log"))
            .unwrap_or_default()
    }

    /// The `--cluster` value: every server's client URL.
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.url.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stops server `i` (SIGTERM, then SIGKILL).
    pub fn stop(&mut self, i: usize) {
        self.servers[i].child.take();
    }
}

/// A fleet: a NATS cluster and daemons joined to it.
#[derive(Debug)]
pub struct Fleet {
    /// The NATS servers.
    pub nats: Nats,
    /// The daemons, `node0`, `node1`, ...
    pub nodes: Vec<Serve>,
    _dirs: Vec<TempDir>,
}

impl Fleet {
    /// Three NATS servers and `nodes` daemons (`node0`..), each with `extra` serve flags.
    pub fn start(binary: &Path, nodes: usize, extra: &[&str]) -> Fleet {
        let nats = Nats::start(binary, 3, "");
        let mut fleet = Fleet {
            nats,
            nodes: Vec::new(),
            _dirs: Vec::new(),
        };
        for i in 0..nodes {
            fleet.join(&format!("node{i}"), extra);
        }
        fleet.wait_nodes(nodes);
        fleet
    }

    /// Starts one more daemon joined as `name`.
    pub fn join(&mut self, name: &str, extra: &[&str]) {
        let dir = testkit::scratch::scratch_named("e2e-fleet-node-");
        let urls = self.nats.urls();
        let mut args = vec!["--pool", "0", "--cluster", &urls, "--node", name];
        args.extend(extra);
        self.nodes.push(Serve::start_in(dir.path(), &args));
        self._dirs.push(dir);
    }

    /// Starts node `i` again as `name` with `extra` serve flags, in its own directory (same
    /// socket and state directory), after it died.
    pub fn rejoin(&mut self, i: usize, name: &str, extra: &[&str]) {
        let urls = self.nats.urls();
        let mut args = vec!["--pool", "0", "--cluster", &urls, "--node", name];
        args.extend(extra);
        self.nodes[i] = Serve::start_in(self._dirs[i].path(), &args);
    }

    /// The fleet's events (`host events --cluster --json`), oldest first.
    pub fn events(&self, id: Option<&str>) -> Vec<Value> {
        let mut args = vec!["events", "--json"];
        args.extend(id);
        let out = self.host(&args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `host nodes` lists `n` live nodes.
    pub fn wait_nodes(&self, n: usize) {
        let seen = wait_until(UP, || {
            let out = self.host(&["nodes", "--json"]);
            out.status.success()
                && serde_json::from_slice::<Value>(&out.stdout)
                    .is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == n))
        });
        assert!(seen, "{n} nodes did not join:\n{}", self.nodes[0].log());
    }

    /// The last lines of every node's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            out.push_str(&format!("--- node{i} ---\n{tail}\n"));
        }
        out
    }

    /// `host ARGS --cluster URLS` (no local daemon named).
    pub fn host(&self, args: &[&str]) -> Output {
        fleet_client(&self.nats.urls()).args(args).output().unwrap()
    }

    /// A fleet command that must succeed, with `--json`; its parsed answer.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.host(&args);
        assert!(
            out.status.success(),
            "host {args:?}: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.logs()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `host create ID --lib LIB --cluster`, in the tests' cgroup parent when one is set.
    pub fn create(&self, id: &str, lib: &Path, extra: &[&str]) -> Value {
        let mut args = vec!["create", id, "--lib", lib.to_str().unwrap()];
        let parent = testkit::cgroup::cgroup_parent();
        if let Some(parent) = &parent {
            args.extend(["--cgroup-parent", parent.to_str().unwrap()]);
        }
        args.extend(extra);
        self.json(&args)
    }

    /// Every value sandbox `id`'s spec record has had (`sandbox_specs` history), oldest first.
    pub fn spec_history(&self, id: &str) -> Vec<Value> {
        use futures_util::StreamExt;
        let url = self.nats.urls().split(',').next().unwrap().to_string();
        e2e::apps::block_on(async move {
            let client = async_nats::connect(url).await.unwrap();
            let kv = async_nats::jetstream::new(client)
                .get_key_value("sandbox_specs")
                .await
                .unwrap();
            let mut history = kv.history(id).await.unwrap();
            let mut out = Vec::new();
            while let Some(entry) = history.next().await {
                let entry = entry.unwrap();
                out.push(serde_json::from_slice(&entry.value).unwrap_or(Value::Null));
            }
            out
        })
    }

    /// Every sandbox of the fleet as `(id, node)`, sorted.
    pub fn owners(&self) -> Vec<(String, String)> {
        let list = self.json(&["list"]);
        let mut out: Vec<(String, String)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["node"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// A `host` client for the fleet at `urls`, with no local socket to fall back on.
pub fn fleet_client(urls: &str) -> Command {
    let mut cmd = e2e::serve::client(Path::new("/nonexistent/host.sock"));
    cmd.env("SANDBOX_HOST_CLUSTER", urls)
        .env_remove("SANDBOX_HOST_NATS_USER")
        .env_remove("SANDBOX_HOST_NATS_PASSWORD")
        .env_remove("SANDBOX_HOST_NATS_PASSWORD_FILE");
    // Nor any other credential of whoever runs the tests.
    for var in [
        "SANDBOX_HOST_NATS_CREDS",
        "SANDBOX_HOST_NATS_NKEY",
        "SANDBOX_HOST_NATS_CA",
        "SANDBOX_HOST_NATS_CERT",
        "SANDBOX_HOST_NATS_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The demo app's library, built once.
pub fn demo_lib() -> PathBuf {
    e2e::apps::block_on(built("sandbox_app"))
}
