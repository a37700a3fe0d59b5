//! Tries to compile a host secret into the library.

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
