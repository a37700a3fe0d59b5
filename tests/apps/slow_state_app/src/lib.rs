//! A test app whose `restore_state` takes as long as the number of milliseconds in the file
//! `restore_ms` of its working directory (none: no delay), to outlast a reload's timeout.
//! It answers 2, so a reload to it from the demo app (41) shows which version serves.

use std::time::Duration;

fn answer(_: &str) -> Result<String, String> {
    Ok("2".into())
}

fn save() -> Vec<u8> {
    Vec::new()
}

fn restore(_: &[u8]) -> Result<(), String> {
    let ms: u64 = std::fs::read_to_string("restore_ms")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(ms));
    Ok(())
}

sandbox_abi::export_app! {
    name: "slow_state_app",
    version: "0.2.0",
    functions: { "answer" => answer },
    state: (save, restore),
}
