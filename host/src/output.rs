//! Standard output for the commands: a closed stdout (`host info ID | head -3`) is not an
//! error worth a panic, so lines that cannot be written are dropped quietly, as other Unix
//! tools do, and the command still finishes its work (the demo still destroys its sandbox).

use std::io::Write;

/// Writes `text` and a newline to stdout; a write error (EPIPE above all) is ignored.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}
