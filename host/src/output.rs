//! What the commands write to a terminal, and how text that is not the host's own reaches it.
//!
//! Standard output: a closed stdout (`host info ID | head -3`) is not an error worth a panic,
//! so lines that cannot be written are dropped quietly, as other Unix tools do, and the
//! command still finishes its work (the demo still destroys its sandbox).
//!
//! Text from outside the host (an app's self-declared name and version, its error and panic
//! messages, its refusal of a reload, cargo's diagnostics of its source, a model's summary) is
//! the app's own words and may be written to attack the terminal: escape sequences that set
//! the window title, move the cursor or erase lines, and newlines that forge a line of the
//! host's own (`    + seccomp: … verified by the kernel`). [`untrusted`] is the one place
//! such text is made safe: every control character (C0 including ESC and newline, DEL, C1)
//! and every invisible format or bidi control is shown visibly (`\n`, `\u{1b}`), so the text
//! stays on its line and the terminal acts on none of it. Human renderers pass every field
//! that is not the host's through it, and label the app's claims with [`CLAIM`]; JSON goes
//! out through [`json`], which writes the same characters as `\uXXXX` escapes.

use std::fmt;
use std::io::Write;

/// The label of a field only the app vouches for (its self-declared name and version).
pub const CLAIM: &str = "(the app's claim)";

/// The label of a message that quotes the app (its error, its panic, its refusal).
pub const QUOTES_APP: &str = "(quotes the app)";

/// Text from outside the host, made safe for a terminal when displayed (see the module).
pub fn untrusted(text: &str) -> Untrusted<'_> {
    Untrusted {
        text,
        quoted: false,
    }
}

/// Displays text with every character a terminal could act on escaped; [`untrusted`].
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a> {
    text: &'a str,
    quoted: bool,
}

impl Untrusted<'_> {
    /// In double quotes, with `"` and `\` escaped too: where the app's text starts and ends
    /// cannot be forged.
    pub fn quoted(self) -> Self {
        Untrusted {
            quoted: true,
            ..self
        }
    }
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        if self.quoted {
            f.write_char('"')?;
        }
        for c in self.text.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '"' | '\\' if self.quoted => {
                    f.write_char('\\')?;
                    f.write_char(c)?;
                }
                c if acts_on_terminal(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        if self.quoted {
            f.write_char('"')?;
        }
        Ok(())
    }
}

/// Whether a terminal (or the reader's eye) could be made to act on `c`: control characters
/// (C0, DEL, C1: `char::is_control`) and the invisible format characters that reorder or
/// hide text (bidi embeddings, overrides and isolates, zero-width characters, line and
/// paragraph separators, the byte-order mark, interlinear annotation).
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// A JSON value as one line: serde_json's text, with the characters it leaves raw that a
/// terminal could act on (DEL, C1, bidi and format controls) written as `\uXXXX` escapes.
/// The result is the same JSON value.
pub fn json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if !text.chars().any(acts_on_terminal) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        // serde_json escapes C0; what is left is in the BMP (see `acts_on_terminal`), so one
        // `\uXXXX` is the whole character, and only inside a string can such a char occur.
        if acts_on_terminal(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes `text` and a newline to stdout; a write error (EPIPE above all) is ignored. Each
/// line of `text` goes through [`untrusted`] as a last guard: a renderer's own lines have
/// nothing it would change.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = write_lines(&mut out, text).and_then(|()| out.flush());
}

/// Writes `text` and a newline to stderr, each line through [`untrusted`] as [`line`] does.
pub fn error_line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write_lines(&mut err, text);
}

fn write_lines(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    for line in text.split('\n') {
        writeln!(out, "{}", untrusted(line))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_never_sent() {
        let attack = "x\u{1b}]0;pwned\u{7}\n    + seccomp: verified\r\u{9b}2J\u{7f}\u{202e}\t";
        let shown = untrusted(attack).to_string();
        assert_eq!(
            shown,
            r"x\u{1b}]0;pwned\u{7}\n    + seccomp: verified\r\u{9b}2J\u{7f}\u{202e}\t"
        );
        assert!(!shown.chars().any(acts_on_terminal));
        // Shown again, it is unchanged: the guard in `line` adds nothing to escaped text.
        assert_eq!(untrusted(&shown).to_string(), shown);
        // Ordinary text, accents and all, is left as it is.
        assert_eq!(
            untrusted("héllo wörld ✓ 名前").to_string(),
            "héllo wörld ✓ 名前"
        );
    }

    #[test]
    fn quoted_text_cannot_close_its_quotes() {
        assert_eq!(
            untrusted("a\" (verified by the host) \"b\\")
                .quoted()
                .to_string(),
            r#""a\" (verified by the host) \"b\\""#
        );
        assert_eq!(untrusted("").quoted().to_string(), "\"\"");
    }

    #[test]
    fn json_stays_the_same_value_without_raw_controls() {
        let value = serde_json::json!({"s": "\u{1b}[2J\u{9b}31m\u{202e}\u{7f}ok", "n": 1});
        let text = json(&value);
        assert!(!text.chars().any(acts_on_terminal), "{text}");
        assert!(text.contains(r"\u009b31m\u202e\u007fok"), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn lines_are_guarded_one_by_one() {
        let mut out = Vec::new();
        write_lines(&mut out, "one\u{1b}[1A\ntwo").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "one\\u{1b}[1A\ntwo\n");
    }
}
