//! A test app whose version looks fine when it loads (it answers, it takes the state it is
//! given) but whose workers crash once it is loaded: each worker aborts a moment after it
//! starts. A canary reload to it must be rolled back by the daemon by itself.

use std::time::Duration;

fn answer(_: &str) -> Result<String, String> {
    Ok("99".into())
}

/// The demo app's state format (a call count, 8 bytes little-endian): the version before
/// it takes its state back when the canary is rolled back.
fn save() -> Vec<u8> {
    0u64.to_le_bytes().to_vec()
}

/// Takes whatever state the previous version left: the reload itself succeeds.
fn restore(_: &[u8]) -> Result<(), String> {
    Ok(())
}

/// Aborts 300 ms after it starts: a version whose workers crash once it is loaded.
fn worker(_: u32) -> i32 {
    std::thread::sleep(Duration::from_millis(300));
    std::process::abort()
}

sandbox_abi::export_app! {
    name: "canary_crash_app",
    version: "0.2.0",
    functions: { "answer" => answer },
    state: (save, restore),
    worker: worker,
    initial_workers: 1,
}
