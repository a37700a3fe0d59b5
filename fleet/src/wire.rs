//! Messages on `sandbox.<node>.<op>`: the control socket's request JSON (one format), its
//! op repeated as the subject's last token, answered with the socket's answer JSON. A
//! payload is checked for length before it is parsed; garbage, an oversize payload, an op
//! the fleet does not route, or a subject that disagrees with the payload get a typed error
//! answer (`bad_request`, `too_large`, `unknown_op`) and change nothing.

use proto::control::{BAD_REQUEST, Request, Response, WireError};
use proto::spec::AppSource;

/// Longest request payload a node reads (the control socket's default line bound).
pub const MAX_MESSAGE: usize = proto::control::DEFAULT_MAX_REQUEST;
/// Error kind: the payload is longer than [`MAX_MESSAGE`].
pub const TOO_LARGE: &str = "too_large";
/// Error kind: the subject names an op the fleet does not route.
pub const UNKNOWN_OP: &str = "unknown_op";
/// Error kind: no node can take the sandbox.
pub const NO_CAPACITY: &str = "no_capacity";
/// Error kind: the node did not answer in time, or is gone.
pub const NO_ANSWER: &str = "no_answer";

/// The ops a node answers on its subjects.
pub const OPS: &[&str] = &[
    "ping",
    "create",
    "list",
    "info",
    "call",
    "reload",
    "rollback",
    "usage",
    "workers",
    "restart",
    "destroy",
    "operate",
    "ask",
    "logs",
    "purge_log",
];

/// Header of a `create` naming the labels its creator asked for (`K=V,...`): the node writes
/// them into the spec record it creates, so a re-placement keeps to them from the first moment.
pub const LABELS_HEADER: &str = "Sandbox-Labels";
/// Longest [`LABELS_HEADER`] a node reads.
pub const MAX_LABELS_HEADER: usize = 4096;

/// Prefix of a library named by content: `sha256:HEX`.
pub const CONTENT: &str = "sha256:";

/// The op of a request, as the subject names it.
pub fn op_of(request: &Request) -> String {
    serde_json::to_value(request)
        .ok()
        .and_then(|v| v["op"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Decodes one request that arrived on the subject of `op`.
pub fn decode(op: &str, payload: &[u8]) -> Result<Request, WireError> {
    if payload.len() > MAX_MESSAGE {
        return Err(WireError::new(
            TOO_LARGE,
            format!(
                "a request of {} bytes is over the fleet's bound of {MAX_MESSAGE}",
                payload.len()
            ),
        ));
    }
    if !OPS.contains(&op) {
        return Err(WireError::new(
            UNKNOWN_OP,
            format!(
                "op {:?} is not routed in a fleet (ops: {})",
                op,
                OPS.join(", ")
            ),
        ));
    }
    let request: Request = serde_json::from_slice(payload)
        .map_err(|e| WireError::new(BAD_REQUEST, format!("not a request: {e}")))?;
    let said = op_of(&request);
    if said != op {
        return Err(WireError::new(
            BAD_REQUEST,
            format!("the subject says {op:?} but the request is {said:?}"),
        ));
    }
    Ok(request)
}

/// Encodes an answer.
pub fn answer(result: Result<serde_json::Value, WireError>) -> Vec<u8> {
    let response = match result {
        Ok(v) => Response::Ok(v),
        Err(e) => Response::Error(e),
    };
    serde_json::to_vec(&response).unwrap_or_else(|_| {
        b"{\"error\":{\"kind\":\"internal\",\"message\":\"unencodable answer\"}}".to_vec()
    })
}

/// Reads an answer.
pub fn read_answer(payload: &[u8]) -> Result<serde_json::Value, Result<WireError, String>> {
    match serde_json::from_slice::<Response>(payload) {
        Ok(Response::Ok(v)) => Ok(v),
        Ok(Response::Error(e)) => Err(Ok(e)),
        Err(e) => Err(Err(e.to_string())),
    }
}

/// The sha256 (hex) a content-named library carries.
pub fn content_hash(app: &AppSource) -> Result<String, WireError> {
    let AppSource::Library(path) = app else {
        return Err(WireError::new(
            BAD_REQUEST,
            "in a fleet a sandbox's app is a library named by content (sha256:HEX)",
        ));
    };
    library_hash(&path.to_string_lossy())
}

/// The sha256 (hex) of `sha256:HEX`.
pub fn library_hash(name: &str) -> Result<String, WireError> {
    let hex = name.strip_prefix(CONTENT).unwrap_or("");
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(hex.to_string())
    } else {
        Err(WireError::new(
            BAD_REQUEST,
            format!("library {name:?} is not sha256:<64 lowercase hex digits>"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_oversize_and_unknown_ops_are_typed_errors() {
        assert_eq!(decode("call", b"{nope").unwrap_err().kind, BAD_REQUEST);
        assert_eq!(decode("format_disk", b"{}").unwrap_err().kind, UNKNOWN_OP);
        // A stream or a build on the client's side is not routed.
        for op in ["events", "batch", "deps_fetch"] {
            assert_eq!(decode(op, b"{}").unwrap_err().kind, UNKNOWN_OP, "{op}");
        }
        let logs = br#"{"op":"logs","id":"a","last":5}"#;
        assert!(matches!(decode("logs", logs), Ok(Request::Logs { .. })));
        let huge = vec![b' '; MAX_MESSAGE + 1];
        assert_eq!(decode("call", &huge).unwrap_err().kind, TOO_LARGE);
        let info = br#"{"op":"info","id":"a"}"#;
        assert_eq!(decode("destroy", info).unwrap_err().kind, BAD_REQUEST);
        assert_eq!(
            decode("info", info).unwrap(),
            Request::Info { id: "a".into() }
        );
    }

    #[test]
    fn libraries_are_named_by_content() {
        let hex = "a".repeat(64);
        assert_eq!(library_hash(&format!("sha256:{hex}")).unwrap(), hex);
        assert!(library_hash("sha256:../../etc/passwd").is_err());
        assert!(library_hash(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(content_hash(&AppSource::Crate("/x".into())).is_err());
    }
}
