//! Reading and managing videos: list, get, delete, retry.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use vidmill_actors::VideoState;

use super::error::ApiError;
use super::openapi as doc;
use super::render;
use crate::app::App;
use crate::auth::Identity;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// List own videos
///
/// The caller's videos, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/videos",
    tag = "videos",
    params(doc::ListQuery),
    responses(
        (status = 200, description = "One page", body = doc::VideoList),
        (status = 400, description = "`invalid-option`: bad `state` or `limit`", body = doc::Problem,
            content_type = "application/problem+json"),
        doc::Failures,
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(app): State<App>,
    who: Identity,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let state = match query.get("state") {
        Some(s) => Some(
            s.parse::<VideoState>()
                .map_err(|_| ApiError::InvalidOption {
                    name: "state",
                    why: "expected uploading, queued, processing, ready or failed".into(),
                })?,
        ),
        None => None,
    };
    let limit = match query.get("limit") {
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or(ApiError::InvalidOption {
                name: "limit",
                why: format!("expected 1 to {MAX_LIMIT}"),
            })?,
        None => DEFAULT_LIMIT,
    };
    let cursor = query.get("cursor").cloned();
    let page = app.handle.list(&who.sub, state, limit, cursor).await?;
    let positions = queue_positions(
        &app,
        page.videos.iter().any(|v| v.state == VideoState::Queued),
    )
    .await;
    let videos: Vec<_> = page
        .videos
        .iter()
        .map(|v| render::video(&app, v, positions.get(&v.id).copied()))
        .collect();
    Ok(Json(
        json!({"videos": videos, "next_cursor": page.next_cursor}),
    ))
}

async fn queue_positions(app: &App, needed: bool) -> HashMap<String, usize> {
    if !needed {
        return HashMap::new();
    }
    app.handle.queue_positions().await.unwrap_or_default()
}

/// Get one video
#[utoipa::path(
    get,
    path = "/v1/videos/{id}",
    tag = "videos",
    params(("id" = String, Path, description = "Video id")),
    responses(
        (status = 200, description = "The video", body = doc::Video),
        (status = 404, description = "`video-not-found` (also for another owner's video)",
            body = doc::Problem, content_type = "application/problem+json"),
        doc::Failures,
    ),
    security(("bearer" = [])),
)]
pub async fn get(
    State(app): State<App>,
    who: Identity,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let video = app.handle.get(&who.sub, &id).await?;
    let positions = queue_positions(&app, video.state == VideoState::Queued).await;
    let mut body = render::video(&app, &video, positions.get(&video.id).copied());
    if video.state == VideoState::Uploading {
        // What is stored, whichever node received it (in a cluster, the
        // bytes may have gone to another).
        if let Ok(p) = app.handle.partial_upload(&who.sub, &id).await {
            body["progress"]["percent"] = (p.offset as f64 * 100.0 / p.length.max(1) as f64).into();
        }
    }
    if video.state == VideoState::Processing && app.handle.progress(&id).is_none() {
        // Not heard on the bus yet: what the processing node last renewed
        // its lease with.
        if let Ok(Some(p)) = app.handle.leased_progress(&id).await {
            body["progress"]["percent"] = p.percent.into();
            body["progress"]["speed"] = p.speed.into();
            body["progress"]["eta_seconds"] = p.eta_seconds.into();
        }
    }
    Ok(Json(body))
}

/// Delete a video
///
/// Cancels any running work (its pipeline stops within 2 s), then deletes
/// the record and every object of the video.
#[utoipa::path(
    delete,
    path = "/v1/videos/{id}",
    tag = "videos",
    params(("id" = String, Path, description = "Video id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`video-not-found` (also for another owner's video)",
            body = doc::Problem, content_type = "application/problem+json"),
        doc::Failures,
    ),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(app): State<App>,
    who: Identity,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    app.handle.delete(&who.sub, &id).await?;
    app.recent.forget(&id);
    app.uploads.forget(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Retry a failed video
///
/// Re-runs a `failed` video from its stored source, without re-upload;
/// `attempts` goes up by one.
#[utoipa::path(
    post,
    path = "/v1/videos/{id}/retry",
    tag = "videos",
    params(("id" = String, Path, description = "Video id")),
    responses(
        (status = 202, description = "Queued again", body = doc::Video),
        (status = 404, description = "`video-not-found` (also for another owner's video)",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`not-failed`: only a failed video can be retried",
            body = doc::Problem, content_type = "application/problem+json"),
        doc::Failures,
    ),
    security(("bearer" = [])),
)]
pub async fn retry(
    State(app): State<App>,
    who: Identity,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let video = app.handle.retry(&who.sub, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(render::video(&app, &video, None)),
    )
        .into_response())
}
