//! `/healthz` (the process answers), `/readyz` (database, storage and the
//! GStreamer elements usable) and `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::openapi as doc;
use crate::app::App;

/// Liveness
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process answers", body = String, content_type = "text/plain",
        example = "ok\n")),
)]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness
///
/// Database, storage and the needed GStreamer elements usable.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: every check `ok`", body = doc::ReadyChecks),
        (status = 503, description = "Not ready: the failing checks say why", body = doc::ReadyChecks),
    ),
)]
pub async fn readyz(State(app): State<App>) -> Response {
    // Anyone may ask: what failed goes to the log, the body only says which
    // check failed (no paths, no internals).
    let hidden = |check: &'static str| {
        move |e: String| {
            tracing::warn!(check, error = %e, "readiness check failed");
            "unavailable; the server log says why".to_string()
        }
    };
    let database = app
        .handle
        .stats()
        .await
        .map_err(|e| e.to_string())
        .map_err(hidden("database"));
    let storage = app
        .store
        .check()
        .await
        .map_err(|e| e.to_string())
        .map_err(hidden("storage"));
    let missing = vidmill_pipelines::missing_elements().map_err(|e| e.to_string());
    let gstreamer = match &missing {
        Ok(m) if m.is_empty() => Ok(()),
        Ok(m) => Err(format!("missing elements: {}", m.join(", "))),
        Err(e) => Err(e.clone()),
    };
    let checks = [
        ("database", database.map(|_| ())),
        ("storage", storage),
        ("gstreamer", gstreamer),
    ];
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    let body: serde_json::Map<_, _> = checks
        .into_iter()
        .map(|(name, r)| {
            (
                name.to_string(),
                json!(r.err().unwrap_or_else(|| "ok".into())),
            )
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics
///
/// No auth: bind it privately.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "OpenMetrics text format", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")),
)]
pub async fn metrics(State(app): State<App>) -> Response {
    let stats = app.handle.stats().await.ok();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(stats.as_ref()),
    )
        .into_response()
}
