//! What hostile clients can make `host serve` hold, through the real binary: libraries that
//! are not files or are too large, long and unfinished request lines, connection floods and
//! idle connections, while a neighbour's calls are still served.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::apps::block_on;
use e2e::prelude::*;
use e2e::serve::Serve;
use serde_json::json;

#[test]
fn a_device_and_a_huge_sparse_file_are_refused_as_libraries() {
    let d = Serve::start(&[]);
    let out = d.host(&["create", "z", "--lib", "/dev/zero"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/dev/zero: not a regular file (a character device)"),
        "{err}"
    );
    let big = d.dir().join("big.so");
    File::create(&big).unwrap().set_len(2 << 30).unwrap();
    let started = Instant::now();
    let out = d.host(&["create", "big", "--lib", big.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("2147483648 bytes is more than the largest library accepted, 268435456"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "read, not refused"
    );
    assert_eq!(d.json(&["list"]), json!([]));
    // Nothing staged is left behind.
    let staged = d.dir().join("state.staging");
    let left = std::fs::read_dir(&staged).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0);
}

/// Writes up to `bytes` of one unterminated line, until the daemon closes or `deadline`.
fn flood(socket: &Path, bytes: usize) -> std::thread::JoinHandle<()> {
    let socket = socket.to_owned();
    std::thread::spawn(move || {
        let Ok(mut s) = UnixStream::connect(&socket) else {
            return;
        };
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let chunk = vec![b'x'; 256 * 1024];
        let mut sent = 0;
        while sent < bytes {
            if s.write_all(&chunk).is_err() {
                return;
            }
            sent += chunk.len();
        }
    })
}

fn raise_fd_limit(n: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = n.min(if is_root() { n } else { hard });
    setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).unwrap();
}

#[test]
fn long_lines_floods_and_idle_connections_stay_bounded_and_neighbours_are_served() {
    let d = Serve::start(&["--request-timeout", "3"]);
    let lib = block_on(built("sandbox_app"));
    d.json(&["create", "n", "--lib", lib.to_str().unwrap()]);
    assert_eq!(d.call_answer("n"), 41);
    let (base, _) = d.memory_kib();

    // 48 clients each sending a 15 MB line without a newline.
    let floods: Vec<_> = (0..48).map(|_| flood(&d.socket, 15 << 20)).collect();
    assert_eq!(d.call_answer("n"), 41, "served during the flood");
    for f in floods {
        f.join().unwrap();
    }
    let (_, peak_flood) = d.memory_kib();

    // 2000 idle connections: the longest idle ones are closed to make room.
    raise_fd_limit(4096);
    let idle: Vec<UnixStream> = (0..2000)
        .filter_map(|_| UnixStream::connect(&d.socket).ok())
        .collect();
    assert!(idle.len() >= 1000, "{} connected", idle.len());
    assert_eq!(d.call_answer("n"), 41, "served past 2000 idle");
    drop(idle);

    // 256 connections each stuck in the middle of a request: the next one is refused
    // with a message, and the stuck ones are closed at their deadline.
    let stuck: Vec<UnixStream> = (0..256)
        .map(|_| {
            let mut s = UnixStream::connect(&d.socket).unwrap();
            s.write_all(b"{\"op\":").unwrap();
            s
        })
        .collect();
    // Busy once the daemon has read their first bytes: until their send queues are empty.
    let unread = |s: &UnixStream| {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ on a socket we own, into a live int.
        unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        n
    };
    assert!(wait_until(Duration::from_secs(10), || stuck
        .iter()
        .all(|s| unread(s) == 0)));
    let mut extra = UnixStream::connect(&d.socket).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(
        answer.contains("\"busy\"") && answer.contains("at most 256 connections"),
        "{answer}"
    );
    let mut first = stuck.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut said = String::new();
    let _ = first.read_to_string(&mut said);
    assert!(said.contains("not finished within 3 s"), "{said}");
    drop(first);
    assert!(
        wait_until(Duration::from_secs(10), || d
            .host(&["list", "--json"])
            .status
            .success()),
        "neighbours served again:\n{}",
        d.log()
    );
    assert_eq!(d.call_answer("n"), 41);

    let (rss, peak) = d.memory_kib();
    eprintln!(
        "daemon VmRSS: {base} KiB before, {rss} KiB after; VmHWM {peak_flood} KiB after the \
         line flood, {peak} KiB at the end"
    );
    assert!(
        peak < base + 64 * 1024,
        "peak {peak} KiB vs {base} KiB before"
    );
    // The log stayed bounded too: refusals are rate-limited.
    let lines = d
        .log()
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN "))
        .count();
    assert!(lines < 500, "{lines} log lines");
}
