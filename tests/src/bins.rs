//! The package's own binaries, as cargo built them for the tests.
//!
//! Cargo names them to integration tests only (`CARGO_BIN_EXE_<name>` at compile time), not
//! to this library; it builds them next to the test binaries, whose executables are in
//! `<target>/<profile>/deps/`, and the binaries in `<target>/<profile>/`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The package's binary `name` (`e2e-host`, `e2e-attacks`, ...).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own executable");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built (cargo builds the e2e package's binaries for its tests)",
        path.display()
    );
    path
}

/// The host binary under test (`e2e-host`: the host's own main, built in this package).
pub fn host() -> &'static Path {
    static HOST: OnceLock<PathBuf> = OnceLock::new();
    HOST.get_or_init(|| bin("e2e-host"))
}
