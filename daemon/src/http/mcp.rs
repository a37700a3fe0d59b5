//! `POST /mcp` (`host serve --mcp ADDR`): the MCP server (`mcp` crate, rmcp's Streamable HTTP
//! transport, stateless) behind the daemon's guards: the dashboard's token (`Authorization:
//! Bearer`, required off loopback; never a cookie or a query, which a browser would send on
//! its own), a loopback `Host` on a loopback listener (DNS rebinding), an `Origin`, when a
//! browser sends one, of a loopback address only, at most [`MAX_IN_FLIGHT`] requests at once,
//! bodies of at most `mcp::bounds::MAX_HTTP_BODY`, and the listener's connection cap. The
//! server's tools reach the daemon through its own control socket, as any client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::http::Token;

/// MCP requests served at once; more are answered 503.
pub const MAX_IN_FLIGHT: usize = 8;

/// What `/mcp` is served with.
#[derive(Debug, Clone)]
pub struct McpHttp {
    /// The daemon's control socket, which the tools use.
    pub control_socket: PathBuf,
    /// The token every request must carry (the dashboard's), if any.
    pub token: Option<Token>,
    /// Whether the write tools are served (`--mcp-write`).
    pub write: bool,
}

#[derive(Debug, Clone)]
struct Guard {
    token: Option<Token>,
    loopback: bool,
    in_flight: Arc<Semaphore>,
}

/// Serves `/mcp` on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, config: McpHttp, stop: watch::Receiver<bool>) {
    let local: Option<SocketAddr> = listener.local_addr().ok();
    let loopback = local.is_none_or(|a| a.ip().is_loopback());
    let cancel = tokio_util::sync::CancellationToken::new();
    {
        let (cancel, mut stop) = (cancel.clone(), stop.clone());
        tokio::spawn(async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
            cancel.cancel();
        });
    }
    let access = if config.write {
        mcp::Access::Write
    } else {
        mcp::Access::Read
    };
    let backend = Arc::new(mcp::SocketBackend::new(config.control_socket));
    // The Host check is the guard's (below); rmcp's own list is left open.
    let service = mcp::http_service(backend, access, Vec::new(), cancel);
    let guard = Guard {
        token: config.token,
        loopback,
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    };
    let app = axum::Router::new()
        .route_service("/mcp", service)
        .layer(middleware::from_fn_with_state(guard, check))
        .layer(middleware::from_fn(headers));
    crate::http::serve("mcp", listener, app, stop).await;
}

/// The guards of every request, in order: `Host`, `Origin`, token, in-flight cap.
async fn check(State(g): State<Guard>, request: Request, next: Next) -> Response {
    if g.loopback && !crate::http::names_loopback_host(&request) {
        return crate::http::not_loopback();
    }
    if let Some(origin) = request.headers().get(header::ORIGIN)
        && !origin.to_str().is_ok_and(origin_is_loopback)
    {
        return (
            StatusCode::FORBIDDEN,
            "Origin must be a loopback address (http://localhost, http://127.0.0.1, http://[::1])\n",
        )
            .into_response();
    }
    if let Some(token) = &g.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|a| a.as_bytes().strip_prefix(b"Bearer "));
        if !presented.is_some_and(|p| token.matches(p)) {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                "a token is required: Authorization: Bearer TOKEN\n",
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sandbox-host\""),
            );
            return response;
        }
    }
    let Ok(_permit) = g.in_flight.try_acquire() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many MCP requests at once\n",
        )
            .into_response();
    };
    next.run(request).await
}

/// Whether an `Origin` (`scheme://host[:port]`) names a loopback host over http(s).
fn origin_is_loopback(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    !rest.contains('/') && !rest.contains('@') && crate::http::host_is_loopback(rest)
}

/// `nosniff` and `no-store` on every answer.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Sends a POST to /mcp and reads the whole answer (the server closes: `connection:
    /// close`).
    async fn post(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn past_the_in_flight_cap_a_request_gets_503() {
        // The handler holds its request until the gate opens.
        let gate = Arc::new(Semaphore::new(0));
        let held = Arc::clone(&gate);
        let guard = Guard {
            token: None,
            loopback: true,
            in_flight: Arc::new(Semaphore::new(1)),
        };
        let app = axum::Router::new()
            .route(
                "/mcp",
                axum::routing::post(move || {
                    let gate = Arc::clone(&held);
                    async move {
                        let _ = gate.acquire().await;
                        "served"
                    }
                }),
            )
            .layer(middleware::from_fn_with_state(guard, check));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(crate::http::serve("test", listener, app, stopped));
        let mut first = tokio::spawn(post(addr));
        let mut second = tokio::spawn(post(addr));
        // One of the two holds the only permit; the other is refused at once.
        let (done, other) = tokio::select! {
            a = &mut first => (a.unwrap(), second),
            b = &mut second => (b.unwrap(), first),
        };
        assert!(done.starts_with("HTTP/1.1 503"), "{done}");
        assert!(done.contains("too many MCP requests at once"), "{done}");
        gate.add_permits(1);
        let served = tokio::time::timeout(std::time::Duration::from_secs(10), other)
            .await
            .unwrap()
            .unwrap();
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    }

    #[test]
    fn origins_of_loopback_only() {
        for ok in [
            "http://localhost:6274",
            "http://127.0.0.1",
            "https://[::1]:8443",
        ] {
            assert!(origin_is_loopback(ok), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "null",
            "http://localhost.evil:80",
            "file://",
            "http://127.0.0.1@evil.example",
            "http://10.0.0.1:80",
        ] {
            assert!(!origin_is_loopback(bad), "{bad}");
        }
    }
}
