//! An example app: `greet` answers a JSON object, `count` counts calls across reloads.

use std::sync::atomic::{AtomicU64, Ordering};

static CALLS: AtomicU64 = AtomicU64::new(0);

/// `greet "world"` -> `{"greeting":"hello, world","calls":1}`.
fn greet(args: &str) -> Result<String, String> {
    let name: String = serde_json::from_str(args).map_err(|e| format!("want a name: {e}"))?;
    let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    eprintln!("greeting {name}"); // goes to the sandbox's log
    Ok(serde_json::json!({ "greeting": format!("hello, {name}"), "calls": calls }).to_string())
}

fn save() -> Vec<u8> {
    CALLS.load(Ordering::Relaxed).to_le_bytes().to_vec()
}

fn restore(bytes: &[u8]) -> Result<(), String> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| "bad state".to_string())?;
    CALLS.store(u64::from_le_bytes(raw), Ordering::Relaxed);
    Ok(())
}

sandbox_abi::export_app! {
    name: "hello_app",
    version: env!("CARGO_PKG_VERSION"),
    functions: { "greet" => greet },
    state: (save, restore),
}
