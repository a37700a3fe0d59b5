//! Skipped tests: libtest has no "skipped" outcome, so a test that cannot run in an
//! environment prints one line and returns (counted as passed); `.ci/run` and
//! `scripts/cgroup-v2-test.sh` count the lines and subtract them from the passes.

/// Env var naming a file to which skipped tests append their `SKIPPED:` line (one per test);
/// `scripts/cgroup-v2-test.sh` and `.ci/run` count them.
pub const SKIP_FILE_ENV: &str = "SANDBOX_TEST_SKIP_FILE";

/// Records that the calling test cannot run here and why: prints `SKIPPED: <test>: <reason>`
/// to stdout and appends the same line to `$SANDBOX_TEST_SKIP_FILE`. The caller then returns
/// (libtest counts it as passed; the scripts subtract the skips).
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("?");
    let line = format!("SKIPPED: {name}: {reason}\n");
    print!("{line}");
    if let Some(path) = std::env::var_os(SKIP_FILE_ENV).filter(|p| !p.is_empty()) {
        use std::io::Write;
        // O_APPEND: one write(2) per line, so parallel tests and processes do not interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}
