//! Typed failures of the runner. They cross to the host as a `RunnerError` frame's message
//! (`proto::runner`), so their `Display` is what a user reads in `reload refused: …`.

use std::path::PathBuf;
use std::time::Duration;

use sandbox_abi::{ABI_VERSION, TABLE_SIZE, TABLE_SIZE_V1};

/// A state hook of the app failed; the text is the app's own word about why.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// `save_state` returned an error.
    #[error("save_state failed: {0}")]
    SaveFailed(String),
    /// `restore_state` panicked.
    #[error("restore_state panicked: {0}")]
    RestorePanicked(String),
    /// `restore_state` returned an error.
    #[error("restore_state failed: {0}")]
    RestoreFailed(String),
}

/// Why a reload was refused; the old version keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// An earlier `dlopen` outlived its reload's deadline and has not ended: it may hang holding
    /// glibc's loader lock.
    #[error(
        "an earlier load has not ended (it may hang, holding the loader lock): try again later, or restart the sandbox"
    )]
    LoaderStuck,
    /// The library is not a loadable app.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `dlopen` (the library's initialisers) did not finish in time.
    #[error("loading {} took longer than {timeout:?}", path.display())]
    LoadTimeout {
        /// The library.
        path: PathBuf,
        /// The limit.
        timeout: Duration,
    },
    /// The serving version could not save its state.
    #[error("old version: {0}")]
    OldVersion(#[source] StateError),
    /// The new version could not restore the state.
    #[error("new version: {0}")]
    NewVersion(#[source] StateError),
    /// The state hand-over outlasted the host's deadline.
    #[error("the state hand-over took longer than {0:?}; the old version still serves")]
    HandOverTimeout(Duration),
}

/// Why workers could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The sandbox crashed (restart intensity exceeded): no new workers until a restart.
    #[error("sandbox crashed: restart it before adding workers")]
    Crashed,
    /// The per-sandbox worker cap.
    #[error("at most {max} workers per sandbox")]
    TooMany {
        /// The cap.
        max: usize,
    },
    /// The worker process could not be spawned.
    #[error("spawn worker: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Why the runner's self-restrictions could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum RestrictError {
    /// The host's plan does not parse.
    #[error("bad restriction plan: {0}")]
    BadPlan(#[source] serde_json::Error),
    /// The kernel refused a restriction.
    #[error(transparent)]
    Apply(#[from] isolation::IsolationError),
    /// The report of what was applied could not be encoded.
    #[error("encode the report: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Why a library could not be loaded as an app.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `dlopen` failed: not an ELF, wrong architecture, missing dependency.
    #[error("cannot load {path}: {reason}")]
    Open {
        /// The library.
        path: PathBuf,
        /// dlerror text.
        reason: String,
    },
    /// The entry symbol is missing.
    #[error("{path} has no `sandbox_app_entry` symbol: not a sandbox app")]
    NoEntry {
        /// The library.
        path: PathBuf,
    },
    /// The table's ABI version or size differs from the runner's.
    #[error(
        "{path}: ABI version {found} with table size {size}, runner expects version 1 size {TABLE_SIZE_V1} up to version {ABI_VERSION} size {TABLE_SIZE}"
    )]
    AbiMismatch {
        /// The library.
        path: PathBuf,
        /// Its ABI version.
        found: u32,
        /// Its table size.
        size: u32,
    },
    /// The app's `configure` entry failed (it panicked, or said no).
    #[error("{path}: the app refused its config: {reason}")]
    Configure {
        /// The library.
        path: PathBuf,
        /// The app's message (its own words).
        reason: String,
    },
}
