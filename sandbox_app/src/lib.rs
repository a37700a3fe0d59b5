//! The demo app, the native counterpart of the original `DemoSandbox.Worker`.
//!
//! `answer` returns 41; the demo hot-reloads a source change that makes it 42. The
//! supervisor starts one worker process at sandbox start; it idles like an OTP worker
//! waiting for messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The answer this version gives.
pub const ANSWER: i64 = 41;

/// Calls served since the sandbox started; carried across reloads.
static CALLS: AtomicU64 = AtomicU64::new(0);

fn answer(_args: &str) -> Result<String, String> {
    CALLS.fetch_add(1, Ordering::Relaxed);
    Ok(ANSWER.to_string())
}

fn calls(_args: &str) -> Result<String, String> {
    Ok(CALLS.load(Ordering::Relaxed).to_string())
}

fn save_state() -> Vec<u8> {
    CALLS.load(Ordering::Relaxed).to_le_bytes().to_vec()
}

fn restore_state(bytes: &[u8]) -> Result<(), String> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| format!("state of {} bytes, want 8", bytes.len()))?;
    CALLS.store(u64::from_le_bytes(raw), Ordering::Relaxed);
    Ok(())
}

fn worker(_index: u32) -> i32 {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

sandbox_abi::export_app! {
    name: "sandbox_app",
    version: env!("CARGO_PKG_VERSION"),
    functions: { "answer" => answer, "calls" => calls },
    state: (save_state, restore_state),
    worker: worker,
    initial_workers: 1,
}
