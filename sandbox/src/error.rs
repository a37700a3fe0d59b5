//! Typed errors of the sandbox lifecycle API.

use std::path::{Path, PathBuf};

use appbuild::error::BuildError;

/// Everything the lifecycle API can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The id does not match `[A-Za-z0-9_-]{1,64}`.
    #[error("invalid sandbox id {0:?}: ids are 1 to 64 characters of A-Z a-z 0-9 _ -")]
    InvalidId(String),
    /// A limit no sandbox can start under (the message names the floor).
    #[error(transparent)]
    InvalidLimits(#[from] proto::spec::LimitError),
    /// An env variable, config or data file the host refuses.
    #[error(transparent)]
    InvalidInput(#[from] proto::tenant::TenantError),
    /// No sandbox of that id.
    #[error("sandbox {0} not found")]
    NotFound(String),
    /// A sandbox of that id exists already.
    #[error("sandbox {0} already exists")]
    AlreadyExists(String),
    /// The operation did not finish in time.
    #[error("{op} timed out after {ms} ms")]
    Timeout {
        /// What timed out.
        op: String,
        /// The limit.
        ms: u64,
    },
    /// The app returned an error.
    #[error("app error: {0}")]
    AppError(String),
    /// The app panicked.
    #[error("app panicked: {0}")]
    AppPanicked(String),
    /// No such app function.
    #[error("{0}")]
    UnknownFunction(String),
    /// The sandbox crashed (runner killed by a signal, or workers past restart intensity).
    #[error("sandbox {id} crashed: {reason}")]
    Crashed {
        /// The sandbox.
        id: String,
        /// The signal or the supervisor's reason.
        reason: String,
        /// The signal name, when a signal killed the runner.
        signal: Option<String>,
    },
    /// A reload was refused; the old version keeps serving.
    #[error("reload refused: {0}")]
    ReloadRefused(String),
    /// No version of that number in the sandbox's history.
    #[error("sandbox {id} has no version {version}")]
    NoSuchVersion {
        /// The sandbox.
        id: String,
        /// The version asked for.
        version: u32,
    },
    /// Building the app failed (cargo's diagnostics, the build sandbox, a file).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The runner could not be started: a step of the spawn sequence failed.
    #[error("spawn failed: {step}: {source}")]
    Spawn {
        /// The step (`clone`, `socketpair`, `control socket`, …).
        step: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The thread that clones runners is gone (a bug or a panic in it).
    #[error("spawn failed: the spawner thread is gone")]
    SpawnerGone,
    /// A path or argument for the runner held a NUL byte.
    #[error("spawn failed: {0} contains a NUL byte")]
    NulByte(PathBuf),
    /// The runner refused to start (bad library, restrictions).
    #[error("sandbox failed to start: {0}")]
    InitFailed(String),
    /// The isolation level could not be met.
    #[error("isolation: {0}")]
    Isolation(String),
    /// No uid of its own could be leased for the sandbox.
    #[error("isolation: {0}")]
    Uid(#[from] crate::uids::UidError),
    /// The kernel refused an isolation mechanism the level needs.
    #[error("isolation: {0}")]
    Kernel(#[from] isolation::IsolationError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The runner broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A batch item that never started: the batch was cancelled (its client hung up).
    #[error("cancelled before it started: {0}")]
    Cancelled(String),
    /// The id appears more than once in one batch: only its first occurrence runs.
    #[error("sandbox {0} appears more than once in this batch")]
    DuplicateInBatch(String),
    /// One failure shared by several batch items (one build for many sandboxes).
    #[error(transparent)]
    Shared(std::sync::Arc<SandboxError>),
}

impl SandboxError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> SandboxError {
        SandboxError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// A short machine-readable name of the error kind (used in JSON output).
    pub fn kind(&self) -> &'static str {
        match self {
            SandboxError::InvalidId(_) => "invalid_id",
            SandboxError::InvalidLimits(_) => "invalid_limits",
            SandboxError::InvalidInput(_) => "bad_request",
            SandboxError::NotFound(_) => "not_found",
            SandboxError::AlreadyExists(_) => "already_exists",
            SandboxError::Timeout { .. } => "timeout",
            SandboxError::AppError(_) => "app_error",
            SandboxError::AppPanicked(_) => "app_panicked",
            SandboxError::UnknownFunction(_) => "unknown_function",
            SandboxError::Crashed { .. } => "crashed",
            SandboxError::ReloadRefused(_) => "reload_refused",
            SandboxError::NoSuchVersion { .. } => "no_such_version",
            SandboxError::Build(e) => match e {
                BuildError::Failed { .. } => "build_failed",
                BuildError::Io { .. } => "io",
                BuildError::Spawn { .. } | BuildError::ThreadGone | BuildError::NulInArgument => {
                    "spawn_failed"
                }
                BuildError::Isolation { .. }
                | BuildError::Child(_)
                | BuildError::NoMountNamespace => "isolation",
            },
            SandboxError::Spawn { .. } | SandboxError::SpawnerGone | SandboxError::NulByte(_) => {
                "spawn_failed"
            }
            SandboxError::InitFailed(_) => "init_failed",
            SandboxError::Isolation(_) | SandboxError::Kernel(_) | SandboxError::Uid(_) => {
                "isolation"
            }
            SandboxError::Io { .. } => "io",
            SandboxError::Protocol(_) => "protocol",
            SandboxError::Cancelled(_) => "cancelled",
            SandboxError::DuplicateInBatch(_) => "duplicate_id",
            SandboxError::Shared(e) => e.kind(),
        }
    }
}

impl From<&SandboxError> for proto::control::WireError {
    fn from(e: &SandboxError) -> proto::control::WireError {
        proto::control::WireError::new(e.kind(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_crosses_the_socket_as_its_kind_and_message() {
        let err = proto::control::Response::Error((&SandboxError::NotFound("x".into())).into());
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            serde_json::json!({"error": {"kind": "not_found", "message": "sandbox x not found"}})
        );
    }
}
