//! The namespaces module's error type: a leaf, so the crate error ([`crate::error`]) can wrap
//! it. Every variant names the path or the operation, and the cause.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the parent could not prepare or finish a sandbox child's namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// The shared empty network namespace could not be created (remembered for the process).
    #[error("create shared empty network namespace: {source}")]
    SharedNetns {
        /// The OS error, shared by every caller that asks again.
        source: Arc<io::Error>,
    },
    /// `pipe2(2)` for the user namespace handshake failed.
    #[error("pipe2 for the user namespace handshake: {source}")]
    HandshakePipe {
        /// The OS error.
        source: io::Error,
    },
    /// Writing the child's `setgroups`, `uid_map` or `gid_map` failed.
    #[error("write {value:?} to {path}: {source}")]
    WriteIdMap {
        /// `/proc/<pid>/uid_map` and the like.
        path: PathBuf,
        /// What was written, without the trailing newline.
        value: String,
        /// The OS error.
        source: io::Error,
    },
    /// Telling the waiting child to go on failed.
    #[error("release the sandbox child: {source}")]
    ReleaseChild {
        /// The OS error.
        source: io::Error,
    },
    /// `Strict` level and a path the sandbox needs lives under `/tmp`.
    #[error("{path}: {HIDDEN_BY_PRIVATE_TMP}")]
    HiddenByPrivateTmp {
        /// The path.
        path: PathBuf,
    },
}

/// Why a path under `/tmp` is a problem for a sandbox with a private `/tmp`.
pub(crate) const HIDDEN_BY_PRIVATE_TMP: &str = "lives under /tmp, which the sandbox's private \
    tmpfs would hide; keep sandbox directories elsewhere (e.g. /var/tmp, $XDG_RUNTIME_DIR)";
