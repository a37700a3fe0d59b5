//! A test app that lies: it writes forged frames of every kind the protocol has on every
//! descriptor it holds, from a constructor (before the app process answers `load`) and from a
//! call (a flood). The host must believe none of it: status, versions, restart counts and the
//! isolation report stay what the host and init observed.
//!
//! It also shouts (`shout`): floods stderr, writes control characters, and dies, over and
//! over if called so; the host must keep its log within the sandbox's bound and show its last
//! words escaped.

use std::io::Write;

/// Every frame kind the protocol has, as an attacker would write them: events init would
/// send, answers to ids the host may be waiting for, and the answers `init`/`load` expect.
fn forged_frames(id: u64) -> Vec<Vec<u8>> {
    let bodies = [
        format!(r#"{{"id":0,"event":{{"event":"crashed","reason":"FORGED crash"}}}}"#),
        format!(
            r#"{{"id":0,"event":{{"event":"worker_restarted","index":0,"old_pid":1,"new_pid":2,"reason":"FORGED"}}}}"#
        ),
        format!(r#"{{"id":0,"event":{{"event":"app_exited","how":"FORGED exit"}}}}"#),
        format!(
            r#"{{"id":{id},"ok":{{"app_name":"FORGED_NAME","app_version":"6.6.6","load_us":0,"initial_workers":0}}}}"#
        ),
        format!(
            r#"{{"id":{id},"ok":{{"restrict_us":0,"fork_us":0,"restrictions":[{{"mechanism":"seccomp","applied":true,"detail":"FORGED"}}]}}}}"#
        ),
        format!(r#"{{"id":{id},"err":{{"kind":"crashed","message":"FORGED"}}}}"#),
        format!(
            r#"{{"id":{id},"ok":{{"from_version":1,"to_version":99,"load_us":0,"app_version":"6.6.6","state_bytes":0}}}}"#
        ),
    ];
    bodies
        .iter()
        .map(|b| {
            let mut frame = (b.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(b.as_bytes());
            frame
        })
        .collect()
}

/// Writes `frames` whole, with one write(2) each, to every open descriptor but the ones
/// listed in `skip`; returns how many writes went through.
fn spray(frames: &[Vec<u8>], skip: &[i32]) -> u64 {
    let mut written = 0;
    for fd in 0..64 {
        if skip.contains(&fd) {
            continue;
        }
        for f in frames {
            // SAFETY: write(2) of a buffer we own to a descriptor number; a closed one fails.
            if unsafe { libc::write(fd, f.as_ptr().cast(), f.len()) } == f.len() as isize {
                written += 1;
            }
        }
    }
    written
}

/// At `dlopen` time, before the app process answers `load`: forged answers for the first ids
/// and forged events, everywhere.
extern "C" fn forge_on_load() {
    let frames: Vec<Vec<u8>> = (1..=8).flat_map(forged_frames).collect();
    spray(&frames, &[]);
}

#[used]
#[unsafe(link_section = ".init_array")]
static FORGE_ON_LOAD: extern "C" fn() = forge_on_load;

fn answer(_: &str) -> Result<String, String> {
    Ok("1".into())
}

/// The number under `key` in a JSON object of numbers.
fn num(args: &str, key: &str) -> Option<u64> {
    let at = args.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = args[at..].trim_start_matches([':', ' ']);
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Floods every descriptor with `count` rounds of forged frames (events, and answers to ids
/// 1..=count), plus `log_mb` MiB of text on stderr. `{"count": N, "log_mb": M}`.
fn flood(args: &str) -> Result<String, String> {
    let count = num(args, "count").unwrap_or(1000);
    let log_mb = num(args, "log_mb").unwrap_or(0);
    let mut written = 0;
    for round in 0..count {
        // Only the event frames and one answer per round: a flood of events.
        let frames = forged_frames(round + 1);
        written += spray(&frames[..3], &[2]);
    }
    let line = vec![b'x'; 1023];
    let mut err = std::io::stderr();
    for _ in 0..log_mb * 1024 {
        let _ = err.write_all(&line);
        let _ = err.write_all(b"\n");
    }
    Ok(format!(r#"{{"written":{written}}}"#))
}

/// What `shout` writes last, as an attacker would: a terminal title, a line erase and a
/// carriage return, then a forged line of the isolation report.
pub const LAST_WORDS: &str =
    "\x1b]0;FORGED title\x07\x1b[2K\r + seccomp: FORGED verified by the kernel\n";

/// Writes `kib` KiB of text to stderr, then [`LAST_WORDS`], then dies: by allocating `alloc`
/// bytes when asked (over `--address-space`, std says "memory allocation of N bytes failed"
/// and aborts), else by `abort`. `{"kib": K, "alloc": BYTES}`.
fn shout(args: &str) -> Result<String, String> {
    let kib = num(args, "kib").unwrap_or(0);
    let alloc = num(args, "alloc").unwrap_or(0);
    let line = [vec![b'x'; 1023], vec![b'\n']].concat();
    let mut err = std::io::stderr();
    for _ in 0..kib {
        let _ = err.write_all(&line);
    }
    let _ = err.write_all(LAST_WORDS.as_bytes());
    if alloc > 0 {
        let big = vec![1u8; alloc as usize];
        std::hint::black_box(&big);
    }
    std::process::abort()
}

sandbox_abi::export_app! {
    name: "forger_app",
    version: "0.1.0",
    functions: {
        "answer" => answer,
        "flood" => flood,
        "shout" => shout,
    },
}
