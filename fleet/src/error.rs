//! The fleet's errors.

use proto::control::WireError;

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No NATS server of the list could be reached, or it refused us.
    #[error("cannot join the fleet at {urls}: {cause}")]
    Connect {
        /// The servers tried.
        urls: String,
        /// No server answered (as opposed to one that refused us).
        unreachable: bool,
        /// Why (a refused login says so).
        cause: String,
    },
    /// A credentials file could not be read.
    #[error("cannot read {path}: {source}")]
    Credentials {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A flag's value is wrong.
    #[error("{0}")]
    Input(String),
    /// JetStream (a bucket, the object store, the stream) failed.
    #[error("{what}: {cause}")]
    JetStream {
        /// What was being done.
        what: String,
        /// The cause.
        cause: String,
    },
    /// A node answered with an error.
    #[error(transparent)]
    Remote(#[from] WireError),
    /// A node's answer could not be read.
    #[error("unexpected answer from node {node}: {cause}")]
    Protocol {
        /// The node.
        node: String,
        /// The cause.
        cause: String,
    },
}

impl FleetError {
    /// A machine-readable kind: the node's own for its errors.
    pub fn kind(&self) -> &str {
        match self {
            FleetError::Connect { .. } => "no_fleet",
            FleetError::Credentials { .. } | FleetError::Input(_) => "input",
            FleetError::JetStream { .. } => "jetstream",
            FleetError::Remote(e) => &e.kind,
            FleetError::Protocol { .. } => "protocol",
        }
    }

    /// An error of JetStream while doing `what`.
    pub fn js(what: impl Into<String>, cause: impl std::fmt::Display) -> FleetError {
        FleetError::JetStream {
            what: what.into(),
            cause: cause.to_string(),
        }
    }
}
