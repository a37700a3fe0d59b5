//! How a documented output is compared with a real one: the documented lines are what a
//! reader sees, so they stay readable (no `[..]` markup). Values that differ from run to run
//! are normalised on both sides (numbers of three or more digits, decimals, long hex digests
//! become `#`, and a duration with its unit `# time`), and `…` stands for any text within a line or, alone on a line, for any lines.

/// `line` with its run-to-run values replaced by `#` and its end trimmed; a number with a
/// duration's unit after it (`12 ms`, `1.2 s`), of any size, becomes `# time`.
pub fn normalise(line: &str) -> String {
    let line = line.trim_end();
    let mut out = String::new();
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if let Some(len) = rfc3339_at(rest) {
            out.push_str("# time");
            rest = &rest[len..];
            continue;
        }
        if !(c.is_ascii_alphanumeric() || c == '.') {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
            .unwrap_or(rest.len());
        let token = &rest[..end];
        rest = &rest[end..];
        let number = token.trim_end_matches('.');
        let is_number = number.chars().next().is_some_and(|c| c.is_ascii_digit())
            && number.chars().all(|c| c.is_ascii_digit() || c == '.');
        let unit = [" ms", " µs", " us", " s"].into_iter().find(|u| {
            rest.strip_prefix(u)
                .is_some_and(|after| !after.starts_with(|c: char| c.is_alphanumeric()))
        });
        match (is_number, unit) {
            (true, Some(unit)) => {
                out.push_str("# time");
                rest = &rest[unit.len()..];
            }
            _ if is_volatile(token) => out.push('#'),
            _ => out.push_str(token),
        }
    }
    out
}

/// The length of an RFC 3339 UTC time at the start of `s` (`2026-12-07T15:25:00.412Z`).
fn rfc3339_at(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    if b.len() < shape.len() + 1 {
        return None;
    }
    for (i, want) in shape.iter().enumerate() {
        let ok = match want {
            b'd' => b[i].is_ascii_digit(),
            w => b[i] == *w,
        };
        if !ok {
            return None;
        }
    }
    let mut end = shape.len();
    if b[end] == b'.' {
        end += 1;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
    }
    (b.get(end) == Some(&b'Z')).then_some(end + 1)
}

/// A number of three or more digits, a decimal, or a hex digest of eight or more digits;
/// a trailing `.` (the end of a sentence) does not count.
fn is_volatile(token: &str) -> bool {
    let t = token.trim_end_matches('.');
    if t.is_empty() {
        return false;
    }
    let decimal = t.chars().all(|c| c.is_ascii_digit() || c == '.')
        && t.chars().next().is_some_and(|c| c.is_ascii_digit())
        && t.matches('.').count() <= 1;
    let hex = t.len() >= 8
        && t.chars().all(|c| c.is_ascii_hexdigit())
        && t.chars().any(|c| c.is_ascii_digit());
    (decimal && (t.len() >= 3 || t.contains('.'))) || hex
}

/// Whether one actual line matches one documented line (both normalised): `…` within the
/// documented line matches any text.
fn line_matches(doc: &str, actual: &str) -> bool {
    let parts: Vec<&str> = doc.split('…').collect();
    if parts.len() == 1 {
        return doc == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &actual[first.len()..];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whether the actual lines match the documented ones; empty lines are ignored on both
/// sides, and a documented line that is only `…` matches any number of lines.
pub fn matches(doc: &[String], actual: &str) -> bool {
    let doc: Vec<String> = doc
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| normalise(l))
        .collect();
    let actual: Vec<String> = actual
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(normalise)
        .collect();
    fn go(doc: &[String], actual: &[String]) -> bool {
        match doc.split_first() {
            None => actual.is_empty(),
            Some((d, rest)) if d.trim() == "…" => {
                (0..=actual.len()).any(|skip| go(rest, &actual[skip..]))
            }
            Some((d, rest)) => {
                actual.first().is_some_and(|a| line_matches(d, a)) && go(rest, &actual[1..])
            }
        }
    }
    go(&doc, &actual)
}

#[test]
fn run_to_run_values_are_normalised_and_small_ones_kept() {
    for (line, want) in [
        (
            "created demo: pid 4250, v1 sha256 c2d17be5cc77, name \"x\"",
            "created demo: pid #, v1 sha256 #, name \"x\"",
        ),
        (
            "reloaded demo: v1 -> v2 in 333 ms (build 247 ms, swap 0.42 ms)",
            "reloaded demo: v1 -> v2 in # time (build # time, swap # time)",
        ),
        ("41", "41"),
        (
            "2026-12-07T15:25:01.030Z app stderr greeting world",
            "# time app stderr greeting world",
        ),
        ("ends with a number 12.", "ends with a number 12."),
    ] {
        assert_eq!(normalise(line), want, "{line}");
    }
}

#[test]
fn ellipses_match_text_and_lines() {
    let doc = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert!(matches(&doc(&["a …", "…", "z"]), "a b c\nx\ny\nz\n"));
    assert!(matches(&doc(&["{\"a\":1,…}"]), "{\"a\":1,\"b\":2}"));
    assert!(!matches(&doc(&["41"]), "42"));
    assert!(!matches(&doc(&["a", "b"]), "a\n"));
    assert!(!matches(&doc(&["a …x"]), "a y"));
    assert!(matches(&doc(&["built in 247 ms"]), "built in 1234 ms"));
    assert!(matches(
        &doc(&["in 333 ms (build 0.3 s)"]),
        "in 1.2 s (build 999 ms)"
    ));
}
