//! Where things are inside the build sandbox.

/// The toolchain's sysroot (`rustc --print sysroot`), read-only.
pub const TOOLCHAIN: &str = "/toolchain";
/// `CARGO_HOME`: the host's `registry` and `git` caches, read-only.
pub const CARGO_HOME: &str = "/cargo";
/// The target dir, read-write and kept between builds of one crate.
pub const TARGET: &str = "/target";
/// Crates appear under `/src` at their host paths: the crate's own copy read-write, its
/// path dependencies read-only.
pub const SRC: &str = "/src";
