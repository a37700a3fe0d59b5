//! A server that is not a daemon: listens on a Unix socket (run it as another uid, so its
//! `SO_PEERCRED` says so), and after every connection closes writes
//! `connections=N bytes=M` (all bytes received so far) to a report file.
//!
//! Usage: `e2e-fake-server SOCKET REPORT`. Exits after 60 s.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let (socket, report) = match (args.next(), args.next()) {
        (Some(s), Some(r)) => (s, r),
        _ => {
            eprintln!("usage: e2e-fake-server SOCKET REPORT");
            std::process::exit(2);
        }
    };
    let listener = UnixListener::bind(&socket).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    std::fs::write(&report, "connections=0 bytes=0\n").expect("report");
    let (mut connections, mut bytes) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false).expect("blocking");
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut buf = Vec::new();
                let _ = stream.read_to_end(&mut buf);
                connections += 1;
                bytes += buf.len() as u64;
                let tmp = format!("{report}.tmp");
                std::fs::write(&tmp, format!("connections={connections} bytes={bytes}\n"))
                    .expect("report");
                std::fs::rename(&tmp, &report).expect("report");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}
