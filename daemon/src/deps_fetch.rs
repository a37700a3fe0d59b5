//! `deps_fetch`: fills the daemon's cargo cache with what a client's crate needs, so that
//! its builds, which run offline, find it (see [`appbuild::fetch`]). The crate was staged
//! from the client's descriptor like any other (its key's lock held until the answer).

use std::path::Path;

use proto::control::{Response, WireError};
use sandbox::Manager;

/// Runs the fetch for the staged crate `crate_dir`; answers `{"ms": N, "output": TEXT}`.
pub async fn serve(manager: &Manager, crate_dir: &Path) -> Response {
    match manager.config().compiler.fetch(crate_dir).await {
        Ok(done) => {
            tracing::info!(ms = done.elapsed_ms, "fetched the dependencies of a crate");
            Response::Ok(serde_json::json!({ "ms": done.elapsed_ms, "output": done.output }))
        }
        // Rendered like a build's failure: cargo's words about the client's crate, each line
        // behind the client's margin.
        Err(appbuild::error::BuildError::Failed { diagnostics }) => Response::Error(
            WireError::new("build_failed", format!("fetch failed:\n{diagnostics}")),
        ),
        Err(e) => Response::Error(WireError::new("build_failed", e.to_string())),
    }
}
