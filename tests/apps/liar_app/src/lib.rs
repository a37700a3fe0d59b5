//! A test app whose every word is aimed at the operator's terminal: its name, its version,
//! its errors, its panics, its answers and its refusal of a reload carry terminal escape
//! sequences (window title, screen and line erase, cursor moves), C1 controls, a bidi
//! override, and newlines that forge a line of the isolation report. The host must show all
//! of it escaped and labelled as the app's words, never raw.

/// The forged report line every message ends with, after a newline and a line erase.
macro_rules! forged {
    ($what:literal) => {
        concat!(
            "\u{1b}[2K\u{9b}2K\r\n    + ",
            $what,
            ": FORGED verified by the kernel\u{1b}]0;pwned\u{7}"
        )
    };
}

fn answer(_: &str) -> Result<String, String> {
    Ok("1".into())
}

/// An app error whose message clears the screen, sets the window title and forges a line.
fn fail(_: &str) -> Result<String, String> {
    Err(concat!("nope\u{1b}[2J\u{1b}[H", forged!("seccomp")).into())
}

/// A panic whose message does the same.
fn panic(_: &str) -> Result<String, String> {
    panic!(concat!("boom", forged!("landlock")))
}

/// A JSON answer that is valid JSON and still a terminal attack: a C1 CSI (U+009B, which
/// serde_json writes raw), a bidi override and DEL.
fn lie(_: &str) -> Result<String, String> {
    Ok("\"\u{9b}2J\u{202e}desrever\u{7f}\"".into())
}

fn save() -> Vec<u8> {
    b"liar".to_vec()
}

/// Refuses any state, quoting the same attack: a reload onto this app is refused.
fn restore(_: &[u8]) -> Result<(), String> {
    Err(concat!("no state", forged!("namespaces")).into())
}

sandbox_abi::export_app! {
    name: "liar\u{1b}]0;pwned\u{7}\n    + seccomp: FORGED verified by the kernel",
    version: "6.6.6\u{1b}[1A\u{1b}[2K\u{9b}31m\r\n    + user_ns: FORGED verified by the kernel",
    functions: {
        "answer" => answer,
        "fail" => fail,
        "panic" => panic,
        "lie" => lie,
    },
    state: (save, restore),
}
