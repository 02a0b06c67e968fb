//! Reading and managing videos: list, get, delete, retry.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use vidmill_actors::VideoState;

use super::error::ApiError;
use super::render;
use crate::app::App;
use crate::auth::Identity;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

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

pub async fn get(
    State(app): State<App>,
    who: Identity,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let video = app.handle.get(&who.sub, &id).await?;
    let positions = queue_positions(&app, video.state == VideoState::Queued).await;
    Ok(Json(render::video(
        &app,
        &video,
        positions.get(&video.id).copied(),
    )))
}

pub async fn delete(
    State(app): State<App>,
    who: Identity,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    app.handle.delete(&who.sub, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

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
