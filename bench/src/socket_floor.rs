//! The floor under `call_rtt_us`: a blocking round trip over a Unix socketpair between two
//! threads, with the runner protocol's framing (4-byte length, then a ~100-byte JSON body),
//! and no sandbox, runtime or JSON parsing in the way.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// `n` round trips after 100 warm-ups.
pub fn round_trips(n: usize) -> io::Result<Vec<Duration>> {
    let (mut client, mut server) = UnixStream::pair()?;
    let echo = std::thread::spawn(move || -> io::Result<()> {
        let mut buf = vec![0u8; 4096];
        loop {
            let mut len = [0u8; 4];
            if server.read_exact(&mut len).is_err() {
                return Ok(()); // the client hung up: done
            }
            let n = u32::from_le_bytes(len) as usize;
            server.read_exact(&mut buf[..n])?;
            server.write_all(&len)?;
            server.write_all(&buf[..n])?;
        }
    });
    let body =
        br#"{"id":7,"request":{"op":"call","function":"answer","args":"null"},"pad":"......"}"#;
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(body);
    let mut reply = vec![0u8; frame.len()];
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let t = Instant::now();
        client.write_all(&frame)?;
        client.read_exact(&mut reply)?;
        if i >= 100 {
            out.push(t.elapsed());
        }
    }
    drop(client);
    echo.join()
        .map_err(|_| io::Error::other("echo thread panicked"))??;
    Ok(out)
}
