//! Direct upload to S3 (API.md "Direct upload to S3"): the client gets a
//! presigned PUT for a staging key of the video, sends the bytes to the
//! bucket itself, then calls `complete`, which checks the object, probes a
//! local copy of it and moves it to the video's source (or answers 415 and
//! removes it). The source key is never presigned, so a late PUT cannot
//! replace what was probed.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use vidmill_actors::{object_key, CoreError, PresignMethod, StoreError};

use super::disk::check_disk;
use super::error::ApiError;
use super::openapi as doc;
use super::render;
use super::upload::{filename, parse_options, probe_for, remember_contact};
use crate::app::{unix_now, App};
use crate::auth::Identity;
use crate::config::StorageKind;

/// Where the client puts the bytes, beside the source they become.
const STAGING: &str = "direct-upload";

/// How long a presigned PUT may be started: an hour (S3 checks it when the
/// request starts, so a long upload that starts in time completes). Short,
/// because until then the URL can replace the source.
fn put_lifetime(app: &App) -> Duration {
    Duration::from_secs(app.config.limits.upload_expiry_seconds.min(3600))
}

/// `POST /v1/videos?upload=direct`: the video, `uploading`, and where to
/// put its bytes.
pub async fn start(
    app: &App,
    who: &Identity,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    if app.config.storage.kind != StorageKind::S3 {
        return Err(ApiError::DirectUploadUnavailable(
            "direct upload needs the S3 store (storage.type = \"s3\")",
        ));
    }
    let options = parse_options(query, app.config.media.frames_every)?;
    // The size is known only at completion: here, room for any upload,
    // and a place among the open uploads, held until the video exists.
    let opening = app.quotas.reserve(&app.handle, &who.sub, 1, true).await?;
    check_disk(app).await?;
    let filename = filename(query.get("filename").map(String::as_str))?;
    remember_contact(app, who).await;
    let video = app
        .handle
        .begin_direct_upload(&who.sub, &filename, options)
        .await?;
    drop(opening);
    let valid = put_lifetime(app);
    let presigned = match app
        .store
        .presign(PresignMethod::Put, &object_key(&video.id, STAGING), valid)
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => {
            let _ = app.handle.delete(&who.sub, &video.id).await;
            return Err(ApiError::DirectUploadUnavailable(
                "direct upload needs the S3 store (storage.type = \"s3\")",
            ));
        }
        Err(e) => {
            let _ = app.handle.delete(&who.sub, &video.id).await;
            return Err(ApiError::Internal(e.to_string()));
        }
    };
    let expires_at = DateTime::from_secs((unix_now() + valid.as_secs()) as i64)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_default();
    let mut body = render::video(app, &video, None);
    body["upload"] = serde_json::json!({
        "method": "PUT",
        "url": presigned.url,
        "headers": presigned.headers.into_iter().collect::<HashMap<_, _>>(),
        "expires_at": expires_at,
    });
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(location) = format!("/v1/videos/{}", video.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Direct upload finished
///
/// Checks the object the client put with its presigned URL, probes it and
/// queues the video; anything but a video is refused with 415 and removed.
#[utoipa::path(
    post,
    path = "/v1/videos/{id}/complete",
    tag = "videos",
    params(("id" = String, Path, description = "Video id")),
    responses(
        (status = 200, description = "Queued", body = doc::Video),
        (status = 404, description = "`video-not-found` (also another owner's) or `upload-not-found` (not awaiting a direct upload)",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`not-ready`: nothing was put at the presigned URL yet; \
            `direct-upload-unavailable`: the file store, or a resumable (tus) upload, which finishes with its last PATCH",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 413, description = "`upload-too-large`: over `limits.max_upload_bytes`; or \
            `limit-exceeded`: past the caller's `limits.quota_stored_bytes` or \
            `limits.quota_upload_bytes_per_day` (named in `limit`); removed",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit-exceeded`, named in `limit`: a count quota \
            (`limits.quota_uploads_in_progress`; retry once one ends), or a media limit (`limits.max_duration_seconds`, \
            `limits.max_pixels`, `limits.max_frame_rate`, `limits.max_frames`; removed)",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media`: not a video vidmill can read; removed",
            body = doc::Problem, content_type = "application/problem+json"),
        doc::Failures,
    ),
    security(("bearer" = [])),
)]
pub async fn complete(
    State(app): State<App>,
    who: Identity,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let video = app.handle.get(&who.sub, &id).await?;
    let _sending = app.quotas.upload_in_progress(&who.sub)?;
    if app.config.storage.kind != StorageKind::S3 {
        return Err(ApiError::DirectUploadUnavailable(
            "direct upload needs the S3 store (storage.type = \"s3\"); \
             uploads here finish with their last byte",
        ));
    }
    // A tus upload (it has a partial file) finishes through its PATCHes.
    // Asked before claiming the upload: a claim would stop a PATCH that is
    // writing to it.
    if app.handle.partial_upload(&who.sub, &id).await.is_ok() {
        return Err(ApiError::DirectUploadUnavailable(
            "this is a resumable (tus) upload: it finishes with its last PATCH, not here",
        ));
    }
    // One completion at a time per video: a retried call waits for the
    // first, then finds the video queued.
    let _one_at_a_time = app.uploads.claim(&id).await?;
    let video = app.handle.get(&who.sub, &video.id).await?;
    if video.state != vidmill_actors::VideoState::Uploading {
        return Err(ApiError::UploadNotFound);
    }
    let key = object_key(&id, STAGING);
    let size = match app.store.len(&key).await {
        Ok(size) => size,
        Err(StoreError::NotFound(_)) => return Err(ApiError::NotReady("the uploaded source")),
        Err(e) => return Err(e.into()),
    };
    let limit = app.config.limits.max_upload_bytes;
    if size > limit {
        app.handle.delete(&who.sub, &id).await?;
        return Err(ApiError::UploadTooLarge(limit));
    }
    // Held until the video is queued (which charges the bytes), against
    // uploads finishing beside it.
    let _reservation = match app.quotas.reserve(&app.handle, &who.sub, size, false).await {
        Ok(r) => r,
        Err(over @ ApiError::QuotaExceeded { .. }) => {
            app.handle.delete(&who.sub, &id).await?;
            return Err(over);
        }
        Err(e) => return Err(e),
    };
    let scratch = app
        .config
        .data_dir()
        .join("uploads")
        .join(format!("direct-{id}-{}", vidmill_actors::new_id()));
    // Recorded, so a crash mid-copy leaves nothing after the next start.
    app.handle
        .track_temp(&scratch, "direct upload probe")
        .await?;
    let probed = match app.store.local_copy(&key, &scratch).await {
        Ok(copy) => probe_for(&app, &copy, &video.options).await,
        Err(StoreError::NotFound(_)) => Err(ApiError::NotReady("the uploaded source")),
        Err(e) => Err(e.into()),
    };
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    let _ = app.handle.untrack_temp(&scratch).await;
    match probed {
        Ok(_) => {}
        Err(e @ (ApiError::UnsupportedMedia(_) | ApiError::LimitExceeded { .. })) => {
            app.handle.delete(&who.sub, &id).await?;
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    // Only now does it become the source: what was probed is what runs.
    app.store.rename(&key, &object_key(&id, "source")).await?;
    let video = app
        .handle
        .queue_uploaded(&who.sub, &id, size)
        .await
        .map_err(|e| match e {
            CoreError::WrongState { .. } => ApiError::UploadNotFound,
            other => other.into(),
        })?;
    Ok(Json(render::video(&app, &video, None)).into_response())
}
