//! Writes 300 MiB into OUT_DIR (the build's target dir, on the host's disk), 1 MiB at a time,
//! as several files (so no one file's size limit alone stops it). The tests run it with a
//! 64 MiB disk budget: the build must fail naming that budget and leave no more than the
//! budget behind. Bounded, so that a build without a budget fills 300 MiB, not the disk.
//!
//! With the line `// disk-plan: hide` in the crate's `src/lib.rs` (the tests write it), it
//! hides what it wrote from a walk of the target dir: each file is deleted once written and
//! kept open, and the script then waits (at most 10 minutes) holding them.

use std::io::Write;

const TOTAL_MIB: usize = 300;
const FILE_MIB: usize = 50;

fn main() {
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let lib = std::fs::read_to_string(format!("{manifest}/src/lib.rs")).unwrap_or_default();
    let hide = lib.lines().any(|l| l.trim() == "// disk-plan: hide");
    // Not zeros: a filesystem that compresses or dedupes must still allocate it.
    let mut chunk = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in chunk.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut held = Vec::new();
    let mut written = 0;
    for file in 0..TOTAL_MIB.div_ceil(FILE_MIB) {
        let path = format!("{out}/fill-{file}.bin");
        let mut f = match std::fs::File::create(&path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("disk_build: create {path} after {written} MiB: {e}");
                std::process::exit(1);
            }
        };
        if hide {
            let _ = std::fs::remove_file(&path);
        }
        for _ in 0..FILE_MIB.min(TOTAL_MIB - written) {
            chunk[0] = chunk[0].wrapping_add(1);
            if let Err(e) = f.write_all(&chunk) {
                eprintln!("disk_build: write {path} after {written} MiB: {e}");
                std::process::exit(1);
            }
            written += 1;
        }
        let _ = f.sync_all();
        held.push(f);
    }
    if hide {
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
    println!("cargo:warning=disk_build wrote {written} MiB into OUT_DIR");
}
