//! `GET /metrics` over HTTP: the Prometheus text of [`::watch::metrics::Metrics`], one scrape
//! computing at a time, loopback `Host` unless `--metrics-allow-remote`.

use std::sync::Arc;

use ::watch::metrics::Metrics;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use sandbox::Manager;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, Clone)]
struct Server {
    metrics: Arc<Metrics>,
    manager: Manager,
    loopback_only: bool,
}

/// Serves `GET /metrics` on `listener` until `stop` turns true. `loopback_only`: requests
/// must name a loopback `Host` (set unless `--metrics-allow-remote`).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    manager: Manager,
    loopback_only: bool,
    stop: watch::Receiver<bool>,
) {
    let state = Server {
        metrics,
        manager,
        loopback_only,
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state);
    crate::http::serve("metrics", listener, app, stop).await;
}

async fn guard(State(s): State<Server>, request: Request, next: Next) -> Response {
    if s.loopback_only && !crate::http::names_loopback_host(&request) {
        return crate::http::not_loopback();
    }
    next.run(request).await
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the classic text format
/// 0.0.4 (what `promtool check metrics`, curl and older tools read).
async fn scrape(State(s): State<Server>, headers: axum::http::HeaderMap) -> Response {
    let Some(_permit) = s.metrics.try_scrape() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many scrapes at once\n",
        )
            .into_response();
    };
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let body = s.metrics.render(&s.manager).await;
    let (body, kind) = if openmetrics {
        (
            body,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            ::watch::metrics::to_classic(&body),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}
