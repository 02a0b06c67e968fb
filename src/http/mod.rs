//! The HTTP and WebSocket API (API.md): the router, with request metrics,
//! the minimum body rate, and problem answers for unknown routes and
//! methods around every route.

pub mod body_rate;
pub mod direct;
pub mod disk;
pub mod error;
pub mod health;
pub mod identity;
pub mod multipart_cap;
pub mod openapi;
pub mod origin;
pub mod output_docs;
pub mod outputs;
pub mod range;
pub mod render;
pub mod rendered;
pub mod tus;
pub mod upload;
pub mod videos;
pub mod web;
pub mod ws;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::app::App;

async fn record(State(app): State<App>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics.request(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

pub fn router(app: App) -> Router {
    let routes = if app.config.server.role.serves_api() {
        api_routes()
    } else {
        // A worker-only node: health and metrics, nothing a user reaches.
        Router::new()
    };
    routes
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        // Uploads enforce their own limit while streaming to disk.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            app.clone(),
            body_rate::enforce,
        ))
        .route_layer(middleware::from_fn_with_state(app.clone(), record))
        .with_state(app)
}

/// Everything a user reaches.
fn api_routes() -> Router<App> {
    Router::new()
        .route("/v1/videos", post(upload::create).get(videos::list))
        .route("/v1/videos/{id}", get(videos::get).delete(videos::delete))
        .route("/v1/videos/{id}/retry", post(videos::retry))
        .route("/v1/videos/{id}/complete", post(direct::complete))
        .route("/v1/videos/{id}/events", get(ws::video_events))
        .route(
            "/v1/videos/{id}/{output}",
            get(outputs::serve).head(outputs::serve),
        )
        .route("/v1/events", get(ws::owner_events))
        .route("/openapi.json", get(openapi::document))
        .route("/", get(web::page))
        .merge(tus::routes())
}
