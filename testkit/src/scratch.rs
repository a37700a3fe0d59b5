//! Unique names and scratch directories.

use std::os::unix::fs::PermissionsExt;

use tempfile::TempDir;

/// A process-unique name: `<tag>-<pid>-<n>` (for cgroups, sandbox ids, sockets).
pub fn unique_id(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A scratch directory `/var/tmp/<prefix>XXXX`, removed when dropped. Not under `/tmp`: a
/// sandbox's private `/tmp` would hide anything there.
pub fn scratch_named(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap_or_else(|e| panic!("a scratch directory in /var/tmp: {e}"))
}

/// A scratch directory (see [`scratch_named`]).
pub fn scratch() -> TempDir {
    scratch_named("e2e-")
}

/// A scratch directory with the given mode (0o755: others may enter, 0o777: and write).
pub fn scratch_with_mode(mode: u32) -> TempDir {
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}
