//! What the MCP server lets in and out: sandbox ids of the daemon's own shape, paths that
//! are absolute and short, arguments and answers of bounded size.

use rmcp::model::CallToolResult;
use serde_json::{Value, json};

/// The largest HTTP request body `/mcp` reads (a call's arguments must fit).
pub const MAX_HTTP_BODY: usize = 1024 * 1024;
/// The largest answer a tool gives, serialized; a larger one is refused with its size.
pub const MAX_ANSWER: usize = 1024 * 1024;
/// The largest error message passed on (a build's diagnostics are cut to this).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// The largest `args` of a `call_function`, serialized.
pub const MAX_ARGS: usize = 512 * 1024;
/// The longest path a tool takes.
pub const MAX_PATH: usize = 4096;
/// The longest function name a tool takes.
pub const MAX_NAME: usize = 256;

/// Why a tool's input was refused before anything was sent to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct InputError {
    /// The argument.
    pub field: &'static str,
    /// What is wrong with it.
    pub why: String,
}

/// Checks a sandbox id: `[A-Za-z0-9_-]{1,64}` (the daemon's rule), so no path character,
/// control character or oversized id is ever sent on.
pub fn sandbox_id(id: &str) -> Result<(), InputError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InputError {
            field: "sandbox_id",
            why: format!(
                "{} is not a sandbox id ([A-Za-z0-9_-], 1 to 64 characters)",
                Value::from(clip(id, 80))
            ),
        })
    }
}

/// Checks a path argument: absolute, at most [`MAX_PATH`] bytes, no NUL.
pub fn path(field: &'static str, path: &str) -> Result<(), InputError> {
    let why = if path.len() > MAX_PATH {
        format!("longer than {MAX_PATH} bytes")
    } else if !path.starts_with('/') {
        "must be an absolute path (the daemon does not share your working directory)".into()
    } else if path.contains('\0') {
        "contains a NUL byte".into()
    } else {
        return Ok(());
    };
    Err(InputError { field, why })
}

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A tool's answer: `value` as structured content (a non-object wrapped as `{"result":
/// value}`), or an error naming its size when it is larger than [`MAX_ANSWER`].
pub fn answer(value: Value) -> CallToolResult {
    let value = match value {
        Value::Object(_) => value,
        other => json!({ "result": other }),
    };
    let size = serde_json::to_vec(&value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_ANSWER {
        return failure(
            "too_large",
            &format!("the answer is {size} bytes; the MCP server passes on at most {MAX_ANSWER}"),
        );
    }
    CallToolResult::structured(value)
}

/// A tool's failure: `{"error": {"kind", "message"}}` (the message cut to [`MAX_MESSAGE`]),
/// flagged as an error.
pub fn failure(kind: &str, message: &str) -> CallToolResult {
    CallToolResult::structured_error(json!({
        "error": {"kind": clip(kind, 64), "message": clip(message, MAX_MESSAGE)}
    }))
}

impl From<InputError> for CallToolResult {
    fn from(e: InputError) -> CallToolResult {
        failure("bad_request", &e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_the_daemons_shape_only() {
        for ok in ["demo", "a-b_C9", &"x".repeat(64)] {
            assert!(sandbox_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../etc", "a/b", "a b", "é", "a\nb", &"x".repeat(65)] {
            assert!(sandbox_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_absolute_and_short() {
        assert!(path("library", "/x/lib.so").is_ok());
        assert!(path("library", "lib.so").is_err());
        assert!(path("library", &format!("/{}", "a".repeat(MAX_PATH))).is_err());
        assert!(path("library", "/a\0b").is_err());
    }

    #[test]
    fn answers_are_bounded_and_wrapped() {
        let small = answer(json!(41));
        assert_eq!(small.structured_content.unwrap()["result"], 41);
        let big = answer(json!({"x": "y".repeat(MAX_ANSWER)}));
        assert_eq!(big.is_error, Some(true));
        let long = failure("build_failed", &"é".repeat(MAX_MESSAGE));
        let text = long.structured_content.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .len();
        assert!(text <= MAX_MESSAGE + 3);
        assert_eq!(clip("ééé", 3), "é…");
    }
}
