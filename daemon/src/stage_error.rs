//! Why a client's descriptor could not be staged: its own module, so that staging and the
//! staged crate's manifest checks (`staged_manifest`) both name it without importing each
//! other.

use std::io;
use std::path::PathBuf;

/// Why something sent by descriptor could not be staged; names the path and the cause.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file (as the client named it, or in the staging directory).
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The crate holds something that is not a regular file or directory.
    #[error("{}: {what}; a crate sent to the daemon may hold only regular files and directories", path.display())]
    NotPlain {
        /// The entry, under the client's path.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// The crate's manifest or cargo config is refused.
    #[error("{why}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why (names the file).
        why: String,
    },
    /// The crate is larger than the limits.
    #[error("{}: {what}", path.display())]
    TooLarge {
        /// The crate.
        path: PathBuf,
        /// Which limit.
        what: String,
    },
}
