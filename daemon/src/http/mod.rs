//! What the daemon's HTTP servers (metrics, dashboard) share: where they listen, who may talk
//! to them, and one serve loop that bounds what a client can hold.
//!
//! An address is `PORT`, `IP:PORT` or `localhost:PORT`; a bare port binds 127.0.0.1, so
//! nothing is reachable from another machine unless the operator names a non-loopback
//! address. Servers bound to loopback without a token also check the `Host` header (it must
//! name a loopback address): a web page the operator visits could otherwise rebind a DNS
//! name to 127.0.0.1 and read the server through the operator's browser.
//!
//! Any local process can connect, and a connection is a descriptor of the daemon's: a
//! process holding idle or half-sent connections must not take the descriptors the control
//! socket and the sandboxes need. So each listener ([`serve`], limits in [`ConnLimits`])
//! serves at most [`MAX_CONNECTIONS`] connections at once (fewer when the descriptor limit
//! is small) and closes any more at once, unread, with a 503; accepts none while fewer than
//! a reserve of descriptors are free; closes a connection whose request head has not
//! arrived within [`HEADER_TIMEOUT`] of its opening or of the previous answer (idle
//! keep-alive and slow headers alike); and closes one whose reader stopped taking an
//! answer for [`WRITE_STALL`].

pub mod mcp;
mod serve;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

pub use serve::{ConnLimits, HEADER_TIMEOUT, MAX_CONNECTIONS, WRITE_STALL, serve, serve_with};

/// Why an HTTP listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address does not parse.
    #[error("--{what} {addr}: not an address (PORT, IP:PORT or localhost:PORT)")]
    BadAddress {
        /// Which server (`metrics`, `ui`).
        what: &'static str,
        /// What was given.
        addr: String,
    },
    /// A non-loopback address without the protection it needs.
    #[error("--{what} {addr}: not a loopback address; {hint}")]
    Remote {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What to add to allow it.
        hint: &'static str,
    },
    /// A server that needs a token was given none.
    #[error("--{what}: {why}; give a token with --ui-token TOKEN or SANDBOX_HOST_UI_TOKEN")]
    TokenRequired {
        /// Which flag.
        what: &'static str,
        /// Why it needs one.
        why: &'static str,
    },
    /// An empty token.
    #[error("--{what}-token: empty; pick a long random token")]
    EmptyToken {
        /// Which server.
        what: &'static str,
    },
    /// Binding failed.
    #[error("--{what} {addr}: bind: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Parses `PORT`, `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT` (a bare port means 127.0.0.1).
pub fn parse_addr(what: &'static str, text: &str) -> Result<SocketAddr, ListenError> {
    let bad = || ListenError::BadAddress {
        what,
        addr: text.to_string(),
    };
    let t = text.trim();
    if let Ok(port) = t.trim_start_matches(':').parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = t.strip_prefix("localhost:") {
        let port = port.parse::<u16>().map_err(|_| bad())?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    t.parse::<SocketAddr>().map_err(|_| bad())
}

/// Binds `addr` for server `what`.
pub async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { what, addr, source })
}

/// Whether a `Host` header names a loopback address (`localhost`, `127.x`, `[::1]`), any
/// port.
pub fn host_is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A bearer token kept as its digest, so that comparing takes the same time whatever the
/// guess (equal length, and no early exit).
#[derive(Clone)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token from its text; empty is refused.
    pub fn new(what: &'static str, text: &str) -> Result<Token, ListenError> {
        if text.is_empty() {
            return Err(ListenError::EmptyToken { what });
        }
        Ok(Token(Sha256::digest(text.as_bytes()).into()))
    }

    /// Whether `guess` is the token, in constant time.
    pub fn matches(&self, guess: &[u8]) -> bool {
        let guess: [u8; 32] = Sha256::digest(guess).into();
        let diff = self
            .0
            .iter()
            .zip(guess.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// Whether `request` names a loopback address in its `Host` header (an absent or unreadable
/// header does not).
pub fn names_loopback_host(request: &axum::extract::Request) -> bool {
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    host_is_loopback(host)
}

/// The answer to a request whose `Host` is not a loopback address.
pub fn not_loopback() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::FORBIDDEN,
        "Host must be a loopback address\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_binds_loopback() {
        assert_eq!(
            parse_addr("ui", "9100").unwrap(),
            "127.0.0.1:9100".parse().unwrap()
        );
        assert_eq!(
            parse_addr("ui", ":0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse_addr("ui", "localhost:80").unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            parse_addr("ui", "[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert!(parse_addr("ui", "example.com:80").is_err());
    }

    #[test]
    fn host_headers_of_loopback_only() {
        for ok in [
            "localhost:1",
            "127.0.0.1:9",
            "[::1]:5",
            "LOCALHOST",
            "127.0.0.2",
        ] {
            assert!(host_is_loopback(ok), "{ok}");
        }
        for bad in ["evil.example:80", "10.0.0.1:1", "localhost.evil:1", ""] {
            assert!(!host_is_loopback(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        let t = Token::new("ui", "secret").unwrap();
        assert!(t.matches(b"secret"));
        assert!(!t.matches(b"secre"));
        assert!(!t.matches(b"secret2"));
        assert!(Token::new("ui", "").is_err());
    }
}
