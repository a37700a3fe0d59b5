//! Typed errors of building an app.

use std::path::{Path, PathBuf};

/// Everything a build can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Cargo failed to build the app, or the crate was refused before cargo ran; what cargo
    /// (or the check) printed is attached.
    #[error("build failed:\n{diagnostics}")]
    Failed {
        /// What cargo printed, or why the crate was refused.
        diagnostics: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The build sandbox could not be started.
    #[error("spawn failed: {step}: {source}")]
    Spawn {
        /// The step that failed (`pipe`, `fork`, `exec cargo`, …).
        step: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The build thread ended before it reported (a bug or a panic in it).
    #[error("spawn failed: the build thread is gone")]
    ThreadGone,
    /// An argument for cargo held a NUL byte.
    #[error("spawn failed: a build argument contains a NUL byte")]
    NulInArgument,
    /// The build sandbox's isolation could not be set up.
    #[error("isolation: build sandbox: {step}: {source}")]
    Isolation {
        /// What was being set up (`plan`, `cgroup`, `child`, …).
        step: &'static str,
        /// The cause.
        #[source]
        source: isolation::IsolationError,
    },
    /// The build sandbox's child failed before it ran cargo: the step it reported, described
    /// by the setup that knows what that step was doing.
    #[error("isolation: build sandbox: {0}")]
    Child(String),
    /// No mount namespace, so no root of its own: cargo is never run unsandboxed.
    #[error(
        "isolation: build sandbox: no mount namespace, so no root of its own; refusing to run \
         cargo unsandboxed"
    )]
    NoMountNamespace,
}

impl BuildError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> BuildError {
        BuildError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// A build refused or failed with `diagnostics`.
    pub fn failed(diagnostics: impl Into<String>) -> BuildError {
        BuildError::Failed {
            diagnostics: diagnostics.into(),
        }
    }
}
