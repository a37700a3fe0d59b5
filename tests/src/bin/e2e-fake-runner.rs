//! A runner that breaks the protocol: it answers `init` with a frame that is not an
//! `InitReady`, then lives on. Tests name it as a manager's runner binary to check that a
//! failed start kills the runner instead of leaking it. It writes its pid to
//! `../../../fake-runner.pid` (its working directory is `<scratch>/sandboxes/<id>/work` at
//! level `none`), so the test can find it.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;

fn main() {
    let _ = std::fs::write("../../../fake-runner.pid", std::process::id().to_string());
    // SAFETY: fd 3 is the control socket the spawn sequence installed; we own it.
    let mut control = unsafe { std::fs::File::from_raw_fd(3) };
    let mut len = [0u8; 4];
    if control.read_exact(&mut len).is_ok() {
        let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
        let _ = control.read_exact(&mut frame);
        // Answers the request's own id (ids are random), so the answer is taken as the reply.
        let id = serde_json::from_slice::<serde_json::Value>(&frame)
            .ok()
            .and_then(|v| v["id"].as_u64())
            .unwrap_or(0);
        let answer = format!(r#"{{"id":{id},"ok":"this is not a ready frame"}}"#);
        let _ = control.write_all(&(answer.len() as u32).to_le_bytes());
        let _ = control.write_all(answer.as_bytes());
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
