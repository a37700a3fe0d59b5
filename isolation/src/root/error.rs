//! The root module's error type: a leaf, so the crate error ([`crate::error`]) can wrap it.
//! Every variant names the path and the cause.

use std::io;
use std::path::PathBuf;

/// Preparing a sandbox's root failed.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// A path cannot be passed to the kernel.
    #[error("{path}: contains a NUL byte")]
    NulInPath {
        /// The path.
        path: PathBuf,
    },
    /// `statvfs(2)` of a path to be bound or remounted failed.
    #[error("statvfs {path}: {source}")]
    Statvfs {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A host path to be bound into the root cannot be read.
    #[error("stat {path} for the sandbox root: {source}")]
    Stat {
        /// The host path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A host symlink to be recreated in the root cannot be read.
    #[error("readlink {path}: {source}")]
    Readlink {
        /// The host symlink.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// An extra bind's in-sandbox path is relative.
    #[error("{path}: an in-sandbox bind target must be absolute")]
    RelativeBindTarget {
        /// The in-sandbox path.
        path: PathBuf,
    },
}
