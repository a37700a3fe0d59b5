//! A fork loop: spawns copies of itself that sleep, until spawning fails, then reports how
//! many it spawned and the error, and fails. Each child sleeps until the build is torn down
//! (the build sandbox kills every process of the build with it) and holds the build script's
//! stdout and stderr, as any child does by default: cargo reads them to their end, so it does
//! not see the build script fail while a child lives. At most 2 000 children, so that an
//! unlimited host is not taken down by the test.
//!
//! With the line `// fork-plan: quiet` in the crate's `src/lib.rs` (the tests write it), the
//! children get no stdout or stderr: cargo then sees the script fail, with its message.

use std::time::Duration;

const CHILD_ENV: &str = "FORK_BUILD_CHILD";
const MAX: usize = 2_000;

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let lib = std::fs::read_to_string(format!("{manifest}/src/lib.rs")).unwrap_or_default();
    let quiet = lib.lines().any(|l| l.trim() == "// fork-plan: quiet");
    let me = std::env::current_exe().expect("current_exe");
    let mut children = Vec::new();
    for n in 0..MAX {
        let mut child = std::process::Command::new(&me);
        child.env(CHILD_ENV, "1");
        if quiet {
            child
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
        match child.spawn() {
            Ok(c) => children.push(c),
            Err(e) => {
                eprintln!("fork_build: spawn failed after {n} children: {e}");
                std::process::exit(1);
            }
        }
    }
    eprintln!("fork_build: spawned {MAX} children, no limit stopped them");
    std::process::exit(2);
}
