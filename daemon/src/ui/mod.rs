//! The dashboard (`host serve --ui ADDR`): one read-only page of the daemon's sandboxes,
//! their usage charts and the event timeline, updated by server-sent events.
//!
//! The page and its script are built into the binary (`assets/`), no network, no build step.
//! Every route is a GET that changes nothing. With a token (`--ui-token`, required off
//! loopback) every request must carry it: `Authorization: Bearer TOKEN`, or `?token=TOKEN`
//! once (the answer sets an HttpOnly, SameSite=Strict cookie, so the page's own requests
//! and its event stream carry it without the script seeing it). Without a token the `Host`
//! header must name a loopback address (see [`crate::listen`]). Every answer carries a CSP
//! of `'self'` only, `no-referrer` and `nosniff`; the script inserts text only with
//! `textContent`, since sandbox ids, app names and crash reasons are the app's or a
//! client's word.

mod stream;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::http::Token;
use sandbox::Manager;

pub use stream::{MAX_SANDBOXES, SAMPLE_PERIOD};

/// Viewers (event streams) at once; more are answered 503.
pub const MAX_VIEWERS: usize = 16;
/// Events of the ring a new viewer gets before the live ones.
pub const BACKLOG: usize = 200;
/// The cookie that carries the token after `?token=`.
const COOKIE: &str = "sandbox_host_ui";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

#[derive(Debug, Clone)]
struct Ui {
    manager: Manager,
    token: Option<Token>,
    viewers: Arc<Semaphore>,
    samples: watch::Receiver<Arc<str>>,
    stop: watch::Receiver<bool>,
}

/// Serves the dashboard on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    manager: Manager,
    token: Option<Token>,
    stop: watch::Receiver<bool>,
) {
    let viewers = Arc::new(Semaphore::new(MAX_VIEWERS));
    let (samples_tx, samples) = watch::channel(Arc::<str>::from("{\"sandboxes\":[]}"));
    tokio::spawn(stream::sample_loop(
        manager.clone(),
        samples_tx,
        Arc::clone(&viewers),
        stop.clone(),
    ));
    let ui = Ui {
        manager,
        token,
        viewers,
        samples,
        stop: stop.clone(),
    };
    let app = axum::Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/app.css", get(app_css))
        .route("/events", get(stream::events))
        .layer(middleware::from_fn_with_state(ui.clone(), guard))
        .layer(middleware::from_fn(security_headers))
        .with_state(ui);
    crate::http::serve("dashboard", listener, app, stop).await;
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// The security headers every answer carries, refusals included.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The token (or, without one, a loopback `Host`) on every request.
async fn guard(State(ui): State<Ui>, request: Request, next: Next) -> Response {
    let Some(token) = &ui.token else {
        if !crate::http::names_loopback_host(&request) {
            return crate::http::not_loopback();
        }
        return next.run(request).await;
    };
    let from_query = request.uri().query().and_then(query_token);
    if let Some(guess) = &from_query {
        if !token.matches(guess) {
            return unauthorized();
        }
        let mut response = next.run(request).await;
        // The token leaves the URL for a cookie the script cannot read.
        if let Ok(cookie) = HeaderValue::from_bytes(
            format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", hex(guess)).as_bytes(),
        ) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        return response;
    }
    match presented(request.headers()) {
        Some(guess) if token.matches(&guess) => next.run(request).await,
        _ => unauthorized(),
    }
}

fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "a token is required: Authorization: Bearer TOKEN, or ?token=TOKEN\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sandbox-host\""),
    );
    response
}

/// The token a request presents in its `Authorization` header or the cookie.
fn presented(headers: &HeaderMap) -> Option<Vec<u8>> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        return auth.as_bytes().strip_prefix(b"Bearer ").map(|t| t.to_vec());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('=').map(unhex))
        .flatten()
}

/// The `token` parameter of a query string, percent-decoded.
fn query_token(query: &str) -> Option<Vec<u8>> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(percent_decode)
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex_at = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

// The cookie holds the token hex-encoded: any byte survives, and nothing needs quoting.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_in_query_header_and_cookie() {
        assert_eq!(query_token("a=1&token=x%20y+z").unwrap(), b"x y z");
        assert_eq!(query_token("a=1"), None);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={}", hex(b"T<"))).unwrap(),
        );
        assert_eq!(presented(&h).unwrap(), b"T<");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented(&h).unwrap(), b"abc");
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn the_script_never_uses_inner_html() {
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!APP_JS.contains(banned), "app.js uses {banned}");
        }
    }

    #[test]
    fn the_script_shows_every_string_through_one_escaper() {
        // Every element's text is set in `el`, through `shown`; nothing else sets the text
        // of an element from the server's data.
        assert!(APP_JS.contains("e.textContent = shown(text);"));
        for line in APP_JS.lines().filter(|l| l.contains("textContent =")) {
            assert!(
                line.contains("shown(")
                    || line.contains("document.getElementById(")
                    || line.contains("conn.textContent"),
                "{line}"
            );
        }
    }
}
