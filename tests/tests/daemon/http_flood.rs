//! A local process against the daemon's HTTP listeners (`--metrics`, `--ui`): hundreds of
//! idle TCP connections and slow-header ones (a request's head sent a line at a time, never
//! finished), more than the daemon has descriptors for. The daemon must stay answerable on
//! its control socket, keep its descriptors well below its limit, close the idle and slow
//! connections itself, and serve a well-behaved scrape once the flood is gone.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use e2e::prelude::*;
use e2e::serve::Serve;
use testkit::ChildGuard;

/// The daemon's descriptor limit in this test: small enough that the flood below exceeds it.
const DAEMON_OPEN_FILES: u64 = 512;
/// Idle connections to the metrics listener.
const IDLE: usize = 300;
/// Slow-header connections to the dashboard.
const SLOW: usize = 200;
/// Descriptors the daemon may hold for the flood, over what it held before: its two
/// listeners' connection caps and some slack (far below the flood, and below its limit).
const HTTP_FDS: usize = 160;
/// How long the daemon may keep an idle or slow connection, with slack for a loaded machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(20);
/// How long `host list` may take while the flood lasts.
const LIST_WITHIN: Duration = Duration::from_secs(5);

/// The `host:port` of a URL the daemon logged (`http://127.0.0.1:PORT/...`).
fn addr_of(url: &str) -> SocketAddr {
    let rest = url.strip_prefix("http://").unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

/// Raises this process's soft descriptor limit to `want` (or its hard limit), so that the
/// flood is not limited by the test's own descriptors.
fn raise_own_open_files(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit write and read only `limit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `host list` on the daemon's socket: whether it answered, successfully, within `within`.
fn list_answers(d: &Serve, within: Duration) -> bool {
    let child = d
        .cmd()
        .args(["list", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = ChildGuard::new(child);
    child.wait_exit(within).is_some_and(|s| s.success())
}

/// Whether the peer closed `stream` (end of file, or a reset); false while it is open.
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // An answer (a 503, a 408) before the close: read on.
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

#[test]
fn an_http_flood_neither_starves_the_daemon_nor_holds_its_descriptors() {
    let d = Serve::start_with_open_files(
        &["--metrics", "127.0.0.1:0", "--ui", "127.0.0.1:0"],
        DAEMON_OPEN_FILES,
    );
    let metrics_url = d.url("metrics").unwrap();
    let metrics = addr_of(&metrics_url);
    let ui = addr_of(&d.url("dashboard").unwrap());
    raise_own_open_files(4096);
    assert!(list_answers(&d, LIST_WITHIN), "no answer before the flood");
    let before = d.open_fds();

    // The flood: idle connections to the metrics, slow headers to the dashboard.
    let started = Instant::now();
    let mut flood: Vec<(TcpStream, bool)> = Vec::new();
    for i in 0..IDLE + SLOW {
        let (to, slow) = if i < IDLE {
            (metrics, false)
        } else {
            (ui, true)
        };
        let Ok(mut stream) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
            continue;
        };
        if slow {
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        }
        stream.set_nonblocking(true).unwrap();
        flood.push((stream, slow));
    }
    assert!(
        flood.len() >= (IDLE + SLOW) / 2,
        "only {} connections",
        flood.len()
    );

    // While it lasts: the control socket answers, and the daemon's descriptors stay bounded.
    let mut most = d.open_fds();
    let answered = list_answers(&d, LIST_WITHIN);
    most = most.max(d.open_fds());

    // The daemon closes every connection itself within its timeouts; the slow ones keep
    // sending a header line now and then, as a slow client would.
    let mut open: Vec<usize> = (0..flood.len()).collect();
    let mut last_trickle = Instant::now();
    let all_closed = wait_until(CLOSED_WITHIN, || {
        let trickle = last_trickle.elapsed() >= Duration::from_millis(500);
        if trickle {
            last_trickle = Instant::now();
        }
        open.retain(|&i| {
            let (stream, slow) = &mut flood[i];
            if *slow && trickle {
                let _ = stream.write(b"X-Slow: 1\r\n");
            }
            !closed_by_peer(stream)
        });
        most = most.max(d.open_fds());
        open.is_empty()
    });
    let took = started.elapsed();
    let still_open = open.len();
    drop(flood);

    // Once it is gone, a well-behaved scrape is served.
    let scraped = wait_until(Duration::from_secs(10), || {
        scrape(&metrics_url).is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });

    println!(
        "flood: {} connections; daemon descriptors {before} before, at most {most} during; \
         {} left open after {took:?}",
        IDLE + SLOW,
        still_open
    );
    let mut problems = Vec::new();
    if !answered {
        problems.push(format!(
            "`host list` did not answer within {LIST_WITHIN:?} during the flood"
        ));
    }
    if most > before + HTTP_FDS {
        problems.push(format!(
            "the daemon held {most} descriptors during the flood ({before} before, limit \
             {DAEMON_OPEN_FILES})"
        ));
    }
    if !all_closed {
        problems.push(format!(
            "{still_open} of the flood's connections still open after {took:?}"
        ));
    }
    if !scraped {
        problems.push("no scrape served after the flood".into());
    }
    assert!(
        problems.is_empty(),
        "{}\n--- daemon log (tail) ---\n{}",
        problems.join("\n"),
        tail(&d.log(), 30)
    );
    assert!(list_answers(&d, LIST_WITHIN));
}

/// One `GET /metrics` as a scraper sends it; the whole answer, or `None`.
fn scrape(url: &str) -> Option<String> {
    let addr = addr_of(url);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
