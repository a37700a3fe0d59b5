//! Joining the fleet: the NATS servers and credentials (flags naming files, or the
//! environment; a secret itself is never a flag, so it never shows in `ps`), a node's own
//! options (`host serve --cluster`), and a client's placement constraints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::FleetError;

/// Environment variable holding the NATS servers (`--cluster`).
pub const CLUSTER_ENV: &str = "SANDBOX_HOST_CLUSTER";
/// Environment variable holding the NATS password (there is no flag for it).
pub const PASSWORD_ENV: &str = "SANDBOX_HOST_NATS_PASSWORD";

/// Where the fleet's NATS servers are and how to log in.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectArgs {
    /// Work on the fleet whose NATS servers these are (nats://HOST:PORT, comma-separated).
    #[arg(long, env = CLUSTER_ENV, value_name = "URLS")]
    pub cluster: Option<String>,
    /// NATS user; the password comes from --nats-password-file or $SANDBOX_HOST_NATS_PASSWORD.
    #[arg(long, env = "SANDBOX_HOST_NATS_USER", value_name = "USER")]
    pub nats_user: Option<String>,
    /// File holding the NATS password (first line).
    #[arg(long, env = "SANDBOX_HOST_NATS_PASSWORD_FILE", value_name = "FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// NATS credentials file (JWT and nkey seed, as `nsc` writes it).
    #[arg(long, env = "SANDBOX_HOST_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// File holding an nkey seed (SU...).
    #[arg(long, env = "SANDBOX_HOST_NATS_NKEY", value_name = "FILE")]
    pub nats_nkey: Option<PathBuf>,
    /// CA certificate (PEM) the servers' TLS certificates must chain to; turns TLS on.
    #[arg(long, env = "SANDBOX_HOST_NATS_CA", value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,
    /// Client certificate (PEM) for TLS, with --nats-key.
    #[arg(
        long,
        env = "SANDBOX_HOST_NATS_CERT",
        value_name = "FILE",
        requires = "nats_key"
    )]
    pub nats_cert: Option<PathBuf>,
    /// Client key (PEM) for TLS, with --nats-cert.
    #[arg(
        long,
        env = "SANDBOX_HOST_NATS_KEY",
        value_name = "FILE",
        requires = "nats_cert"
    )]
    pub nats_key: Option<PathBuf>,
}

fn read_secret(path: &Path) -> Result<String, FleetError> {
    let text = std::fs::read_to_string(path).map_err(|source| FleetError::Credentials {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

impl ConnectArgs {
    /// Whether a fleet was named.
    pub fn is_set(&self) -> bool {
        self.cluster
            .as_deref()
            .is_some_and(|c| !c.trim().is_empty())
    }

    /// The server URLs, checked.
    pub fn urls(&self) -> Result<Vec<String>, FleetError> {
        let list = self.cluster.as_deref().unwrap_or("");
        let urls: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        if urls.is_empty() {
            return Err(FleetError::Input("--cluster names no NATS server".into()));
        }
        Ok(urls)
    }

    /// The connection options these flags and the environment describe.
    fn options(&self, name: &str) -> Result<async_nats::ConnectOptions, FleetError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(30)));
        if let Some(user) = &self.nats_user {
            let password = match &self.nats_password_file {
                Some(path) => read_secret(path)?,
                None => std::env::var(PASSWORD_ENV).unwrap_or_default(),
            };
            options = options.user_and_password(user.clone(), password);
        }
        if let Some(path) = &self.nats_creds {
            let text = std::fs::read_to_string(path).map_err(|source| FleetError::Credentials {
                path: path.clone(),
                source,
            })?;
            options = options
                .credentials(&text)
                .map_err(|e| FleetError::Input(format!("{}: {e}", path.display())))?;
        }
        if let Some(path) = &self.nats_nkey {
            options = options.nkey(read_secret(path)?);
        }
        if let Some(ca) = &self.nats_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.nats_cert, &self.nats_key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok(options)
    }

    /// Connects to the first server of the list that answers; a refused login is an error
    /// at once (no retry).
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, FleetError> {
        let urls = self.urls()?;
        let addrs: Vec<async_nats::ServerAddr> = urls
            .iter()
            .map(|u| {
                u.parse()
                    .map_err(|e| FleetError::Input(format!("--cluster {u}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        self.options(name)?
            .connect(addrs)
            .await
            .map_err(|e| FleetError::Connect {
                urls: urls.join(","),
                unreachable: unreachable(&e),
                cause: e.to_string(),
            })
    }

    /// [`connect`](Self::connect), tried again every half second for up to `patience` while
    /// no server answers (servers started with the daemons, or restarting); a refused login
    /// or a bad address fails at once.
    pub async fn connect_patiently(
        &self,
        name: &str,
        patience: Duration,
    ) -> Result<async_nats::Client, FleetError> {
        let started = std::time::Instant::now();
        loop {
            match self.connect(name).await {
                Err(FleetError::Connect {
                    unreachable: true,
                    ref cause,
                    ..
                }) if started.elapsed() < patience => {
                    tracing::warn!(%cause, "fleet: no NATS server answers yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }
}

/// Whether `e` says that no server answered (worth trying again), as opposed to one that
/// refused us. A TLS failure (an untrusted certificate, a missing client certificate)
/// reaches us as an I/O error of kind `InvalidData` (tokio-rustls wraps rustls' errors so):
/// a refusal, not an absence.
fn unreachable(e: &async_nats::ConnectError) -> bool {
    let tls = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData);
    !tls && matches!(
        e.kind(),
        async_nats::ConnectErrorKind::Io | async_nats::ConnectErrorKind::TimedOut
    )
}

/// A node's own options (`host serve --cluster ... --node NAME`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeArgs {
    /// The fleet to join.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// This node's name in the fleet: 1 to 64 of A-Z a-z 0-9 _ - [default: the hostname].
    #[arg(long, value_name = "NAME", requires = "cluster")]
    pub node: Option<String>,
    /// Most sandboxes placed on this node.
    #[arg(long, value_name = "N", default_value_t = 100, requires = "cluster")]
    pub capacity: u32,
    /// Labels a create may ask for with --label (k=v, comma-separated).
    #[arg(long, value_name = "K=V,..", requires = "cluster")]
    pub labels: Option<String>,
    /// Copies JetStream keeps of the fleet's buckets [default: the servers in the cluster,
    /// at most 3].
    #[arg(long, value_name = "N", requires = "cluster")]
    pub replicas: Option<usize>,
}

impl NodeArgs {
    /// The node's name, checked.
    pub fn name(&self) -> Result<String, FleetError> {
        let name = match &self.node {
            Some(n) => n.clone(),
            None => nix_hostname(),
        };
        check_name("node", &name)?;
        Ok(name)
    }

    /// The labels, parsed.
    pub fn labels(&self) -> Result<BTreeMap<String, String>, FleetError> {
        parse_labels(self.labels.as_deref().unwrap_or(""))
    }
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Checks a node name or sandbox id: 1 to 64 of A-Z a-z 0-9 _ - (so it is one subject token
/// and one KV key).
pub fn check_name(what: &str, name: &str) -> Result<(), FleetError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FleetError::Input(format!(
            "{what} name {name:?} must be 1 to 64 of A-Z a-z 0-9 _ -"
        )))
    }
}

/// Parses `k=v,k2=v2`.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, FleetError> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| FleetError::Input(format!("label {pair:?} is not KEY=VALUE")))?;
        check_name("label", k)?;
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

/// A client's placement constraints and routing (with `--cluster`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PlaceArgs {
    /// With --cluster: create on this node (other commands: ask this node).
    #[arg(long = "node", value_name = "NAME", requires = "cluster")]
    pub node: Option<String>,
    /// With --cluster: create only on a node with this label (K=V; repeatable).
    #[arg(long = "label", value_name = "K=V", requires = "cluster")]
    pub label: Vec<String>,
}

impl PlaceArgs {
    /// The labels asked for.
    pub fn labels(&self) -> Result<BTreeMap<String, String>, FleetError> {
        parse_labels(&self.label.join(","))
    }
}
