//! Tries to compile a host secret into the library.
//!
//! The line below is the build script's plan: what the test listens on and where the host's
//! file would land. The test rewrites it (through `Compiler::build_source`) with its own
//! ephemeral port and unique paths; the build script reads it from its copy of this file.
// probe-plan: tcp=0 unix=/tmp/sandbox-evil-build.sock host_tmp=/tmp/sandbox-evil-build-wrote-this

/// The host's shadow file, if the compiler could read it.
pub const SHADOW: &str = include_str!("/etc/shadow");

fn answer(_args: &str) -> Result<String, String> {
    Ok(SHADOW.len().to_string())
}

sandbox_abi::export_app! {
    name: "evil_build",
    version: env!("CARGO_PKG_VERSION"),
    functions: { "answer" => answer },
}
