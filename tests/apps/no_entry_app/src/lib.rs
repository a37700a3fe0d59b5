//! A valid shared library that is not a sandbox app: no entry symbol.

/// Some unrelated export.
#[unsafe(no_mangle)]
pub extern "C" fn not_an_app() -> i32 {
    7
}
