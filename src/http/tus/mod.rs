//! tus 1.0.0 resumable uploads at `/v1/uploads` (API.md "tus resumable
//! upload"): the core protocol with creation, creation-with-upload,
//! termination and expiration. An upload is a video in state `uploading`
//! whose bytes the core keeps in a partial file; each PATCH appends to it
//! and makes what it wrote durable before answering, so the offset a
//! client is told survives a crash. The last byte triggers the probe: media
//! is queued, anything else is refused with 415 and removed.

pub(crate) mod headers;
mod sink;
mod writers;

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::StreamExt;
use vidmill_actors::{CoreError, PartialUpload};

use self::headers::{byte_count, carries_bytes, check_version, metadata, EXTENSIONS, VERSION};
use self::sink::Sink;
pub use self::writers::{Uploads, Writing};
use super::disk::check_disk;
use super::error::ApiError;
use super::openapi as doc;
use super::render;
use super::upload::{filename, parse_options, probe_for, remember_contact};
use crate::app::App;
use crate::auth::Identity;

/// The options an upload's metadata may carry, as `POST /v1/videos` takes
/// them in its query string.
const OPTION_KEYS: [&str; 4] = [
    "outputs",
    "frames_every",
    "frames_format",
    "frames_accuracy",
];

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/uploads", post(create).options(discover))
        .route(
            "/v1/uploads/{id}",
            axum::routing::head(offset).patch(append).delete(terminate),
        )
        .layer(map_response(|mut response: Response| async move {
            response
                .headers_mut()
                .insert("tus-resumable", HeaderValue::from_static(VERSION));
            response
        }))
}

fn set(response: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        response.headers_mut().insert(name, v);
    }
}

fn expires(partial: &PartialUpload) -> String {
    httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(partial.expires_at_ms),
    )
}

/// The upload of `owner`, or `upload-not-found` (also for another owner's).
async fn partial(app: &App, owner: &str, id: &str) -> Result<PartialUpload, ApiError> {
    app.handle
        .partial_upload(owner, id)
        .await
        .map_err(|e| match e {
            CoreError::NotFound(_) => ApiError::UploadNotFound,
            other => other.into(),
        })
}

/// What this server's tus supports
///
/// Discovery; needs no token.
#[utoipa::path(
    options,
    path = "/v1/uploads",
    operation_id = "upload_options",
    tag = "uploads",
    responses(
        (status = 204, description = "tus capabilities", headers(
            ("Tus-Version" = String, description = "`1.0.0`"),
            ("Tus-Extension" = String, description = "`creation,creation-with-upload,termination,expiration`"),
            ("Tus-Max-Size" = u64, description = "`limits.max_upload_bytes`"),
        )),
    ),
)]
pub async fn discover(State(app): State<App>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    set(&mut response, "tus-version", VERSION);
    set(&mut response, "tus-extension", EXTENSIONS);
    set(
        &mut response,
        "tus-max-size",
        app.config.limits.max_upload_bytes,
    );
    response
}

/// Start a resumable upload (tus)
///
/// Creates the video in state `uploading` (same id). `Upload-Metadata`
/// carries `filename` and the options of `POST /v1/videos`; a body of
/// `application/offset+octet-stream` is stored as the first bytes.
#[utoipa::path(
    post,
    path = "/v1/uploads",
    operation_id = "create_upload",
    tag = "uploads",
    params(
        ("Tus-Resumable" = String, Header, description = "`1.0.0`"),
        ("Upload-Length" = u64, Header, description = "Size of the whole upload in bytes"),
        ("Upload-Metadata" = Option<String>, Header, description = "`key base64(value)` pairs, comma-separated"),
    ),
    responses(
        (status = 201, description = "Created", body = doc::Video, headers(
            ("Location" = String, description = "`/v1/uploads/{id}`"),
            ("Upload-Expires" = String, description = "When an unfinished upload is removed"),
            ("Upload-Offset" = u64, description = "Bytes stored, when the request carried some"),
        )),
        (status = 400, description = "`invalid-option` (naming the header or option) or `empty-upload`", body = doc::Problem, content_type = "application/problem+json"),
        (status = 412, description = "`invalid-option`: not `Tus-Resumable: 1.0.0`", body = doc::Problem, content_type = "application/problem+json"),
        (status = 413, description = "`upload-too-large`: over `limits.max_upload_bytes`; or `limit-exceeded`: `Upload-Length` past the caller's `limits.quota_stored_bytes` or `limits.quota_upload_bytes_per_day` (named in `limit`)", body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit-exceeded`: `limits.quota_open_uploads`, or with bytes `limits.quota_uploads_in_progress`; or, when the request brings the last byte, a media limit (`limits.max_duration_seconds`, `limits.max_pixels`, `limits.max_frame_rate`, `limits.max_frames`; removed); named in `limit`", body = doc::Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media`: the complete upload is not a video vidmill can read; removed", body = doc::Problem, content_type = "application/problem+json"),
        doc::Failures,
        (status = 507, description = "`insufficient-storage`", body = doc::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(app): State<App>,
    who: Identity,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::InvalidOption {
            name: "Upload-Defer-Length",
            why: "not supported: send Upload-Length".into(),
        });
    }
    let length = byte_count(&headers, "upload-length")?.ok_or(ApiError::InvalidOption {
        name: "Upload-Length",
        why: "required: the size of the upload in bytes".into(),
    })?;
    let limit = app.config.limits.max_upload_bytes;
    if length == 0 {
        return Err(ApiError::EmptyUpload);
    }
    if length > limit {
        return Err(ApiError::UploadTooLarge(limit));
    }
    // Its whole declared length is promised: reserved now, against uploads
    // starting beside it, until the catalog charges it (at creation).
    let reservation = app
        .quotas
        .reserve(&app.handle, &who.sub, length, true)
        .await?;
    let meta = metadata(&headers)?;
    let options = parse_options(
        &meta
            .iter()
            .filter(|(k, _)| OPTION_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>(),
        app.config.media.frames_every,
    )?;
    let filename = filename(
        ["filename", "name"]
            .iter()
            .find_map(|k| meta.get(*k).filter(|n| !n.is_empty()))
            .map(String::as_str),
    )?;
    check_disk(&app).await?;
    remember_contact(&app, &who).await;
    let with_bytes = carries_bytes(&headers);
    if with_bytes && byte_count(&headers, "content-length")?.is_some_and(|n| n > length) {
        return Err(ApiError::UploadTooLarge(length));
    }
    let _sending = with_bytes
        .then(|| app.quotas.upload_in_progress(&who.sub))
        .transpose()?;
    let video = app
        .handle
        .begin_upload(&who.sub, &filename, options, length)
        .await?;
    drop(reservation);
    app.uploads.record(&video.id, 0, length);
    let mut offset = None;
    if with_bytes {
        let received = match app.uploads.claim(&video.id).await {
            Ok(mut writing) => {
                receive(&app, &who.sub, &video.id, 0, &headers, body, &mut writing).await
            }
            Err(e) => Err(e),
        };
        match received {
            Ok(o) => offset = Some(o),
            Err(e) => {
                // The client never learnt where the upload is: it cannot
                // resume it, so it must not linger.
                let _ = app.handle.delete(&who.sub, &video.id).await;
                app.uploads.forget(&video.id);
                return Err(e);
            }
        }
    }
    let latest = app.handle.get(&who.sub, &video.id).await.unwrap_or(video);
    let mut response = (
        StatusCode::CREATED,
        Json(render::video(&app, &latest, None)),
    )
        .into_response();
    // Relative, so clients stay on the origin they reached the server by
    // (tus clients resolve it against the endpoint).
    set(
        &mut response,
        "location",
        format!("/v1/uploads/{}", latest.id),
    );
    if let Ok(p) = partial(&app, &who.sub, &latest.id).await {
        set(&mut response, "upload-expires", expires(&p));
    }
    if let Some(offset) = offset {
        set(&mut response, "upload-offset", offset);
    }
    Ok(response)
}

/// How many bytes of an upload the server holds
///
/// A finished upload answers with its full length, so a client resuming it
/// learns there is nothing left to send.
#[utoipa::path(
    head,
    path = "/v1/uploads/{id}",
    operation_id = "upload_offset",
    tag = "uploads",
    params(
        ("id" = String, Path, description = "Upload (and video) id"),
        ("Tus-Resumable" = String, Header, description = "`1.0.0`"),
    ),
    responses(
        (status = 200, description = "The offset", headers(
            ("Upload-Offset" = u64, description = "Bytes stored"),
            ("Upload-Length" = u64, description = "Declared size"),
            ("Upload-Expires" = String, description = "When it is removed if unfinished"),
        )),
        (status = 404, description = "`upload-not-found` (also another owner's)", body = doc::Problem, content_type = "application/problem+json"),
        doc::Failures,
    ),
    security(("bearer" = [])),
)]
pub async fn offset(
    State(app): State<App>,
    who: Identity,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    let mut response = StatusCode::OK.into_response();
    set(&mut response, "cache-control", "no-store");
    match partial(&app, &who.sub, &id).await {
        // Every byte is here but the upload never finished (its last
        // request broke off during the probe, or the server stopped): a
        // client asking now would take it as done, so finish it now.
        Ok(p) if p.offset == p.length => {
            let mut writing = app.uploads.claim(&id).await?;
            let done = receive(
                &app,
                &who.sub,
                &id,
                p.offset,
                &headers,
                Body::empty(),
                &mut writing,
            )
            .await?;
            set(&mut response, "upload-offset", done);
            set(&mut response, "upload-length", p.length);
        }
        Ok(p) => {
            app.uploads.record(&id, p.offset, p.length);
            set(&mut response, "upload-offset", p.offset);
            set(&mut response, "upload-length", p.length);
            set(&mut response, "upload-expires", expires(&p));
        }
        // Finished: the whole source is stored.
        Err(ApiError::UploadNotFound) => {
            app.handle
                .get(&who.sub, &id)
                .await
                .map_err(|_| ApiError::UploadNotFound)?;
            let size = app
                .store
                .len(&vidmill_actors::object_key(&id, "source"))
                .await
                .map_err(|_| ApiError::UploadNotFound)?;
            set(&mut response, "upload-offset", size);
            set(&mut response, "upload-length", size);
        }
        Err(e) => return Err(e),
    }
    Ok(response)
}

/// Append bytes to an upload
///
/// The body (`application/offset+octet-stream`) is stored at
/// `Upload-Offset`; what arrives is kept even when the connection breaks.
/// The last byte is probed: a video is queued, anything else is refused
/// with 415 and removed.
#[utoipa::path(
    patch,
    path = "/v1/uploads/{id}",
    operation_id = "append_to_upload",
    tag = "uploads",
    params(
        ("id" = String, Path, description = "Upload (and video) id"),
        ("Tus-Resumable" = String, Header, description = "`1.0.0`"),
        ("Upload-Offset" = u64, Header, description = "Where these bytes start; must equal the stored offset"),
    ),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Stored", headers(("Upload-Offset" = u64, description = "The new offset"))),
        (status = 400, description = "`invalid-option` (no `Upload-Offset`) or `upload-interrupted`", body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`upload-not-found` (also another owner's)", body = doc::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`offset-mismatch`: not the stored offset, or another request is writing", body = doc::Problem, content_type = "application/problem+json"),
        (status = 412, description = "`invalid-option`: not `Tus-Resumable: 1.0.0`", body = doc::Problem, content_type = "application/problem+json"),
        (status = 413, description = "`upload-too-large`: past `Upload-Length`", body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit-exceeded`: `limits.quota_uploads_in_progress` (retry once one ends); or, on the last byte, a media limit (`limits.max_duration_seconds`, `limits.max_pixels`, `limits.max_frame_rate`, `limits.max_frames`; removed); named in `limit`", body = doc::Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media`: another content type, or the complete upload is not a video (removed)", body = doc::Problem, content_type = "application/problem+json"),
        doc::Failures,
        (status = 507, description = "`insufficient-storage`", body = doc::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub async fn append(
    State(app): State<App>,
    who: Identity,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    if !carries_bytes(&headers) {
        return Err(ApiError::UnsupportedMedia(
            "send the bytes as Content-Type: application/offset+octet-stream".into(),
        ));
    }
    let at = byte_count(&headers, "upload-offset")?.ok_or(ApiError::InvalidOption {
        name: "Upload-Offset",
        why: "required: where these bytes start".into(),
    })?;
    // Ownership first, so nobody else's request can hold the upload.
    let known = partial(&app, &who.sub, &id).await?;
    let mut writing = app.uploads.claim(&id).await?;
    // After the claim: a request this one took over from (a dead
    // connection, typically) gives its slot back first.
    let _sending = app.quotas.upload_in_progress(&who.sub)?;
    let offset = receive(&app, &who.sub, &id, at, &headers, body, &mut writing).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    set(&mut response, "upload-offset", offset);
    if offset < known.length {
        set(&mut response, "upload-expires", expires(&known));
    }
    Ok(response)
}

/// Abandon an unfinished upload
///
/// Removes the upload and its video with every byte received.
#[utoipa::path(
    delete,
    path = "/v1/uploads/{id}",
    operation_id = "terminate_upload",
    tag = "uploads",
    params(
        ("id" = String, Path, description = "Upload (and video) id"),
        ("Tus-Resumable" = String, Header, description = "`1.0.0`"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "`upload-not-found` (also another owner's, or finished)", body = doc::Problem, content_type = "application/problem+json"),
        doc::Failures,
    ),
    security(("bearer" = [])),
)]
pub async fn terminate(
    State(app): State<App>,
    who: Identity,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    partial(&app, &who.sub, &id).await?;
    // Stop any writer first, so nothing is written after the delete.
    let writing = app.uploads.claim(&id).await?;
    app.handle.delete(&who.sub, &id).await?;
    drop(writing);
    app.uploads.forget(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Appends `body` to upload `id` at `at` and makes it durable; on the last
/// byte, probes and queues the video (or removes it: 415). Returns the new
/// offset. A cut body keeps what arrived: the client resumes from there.
async fn receive(
    app: &App,
    owner: &str,
    id: &str,
    at: u64,
    headers: &HeaderMap,
    body: Body,
    writing: &mut Writing,
) -> Result<u64, ApiError> {
    let upload = partial(app, owner, id).await?;
    let mut sink = Sink::open(app, owner, &upload).await?;
    let received = append_to(app, id, at, headers, body, writing, &upload, &mut sink).await;
    // The last byte is probed while the upload is still held, so that no
    // other request finishes it meanwhile.
    let done = match received {
        Ok(offset) if offset == upload.length => complete(app, owner, id).await.map(|()| offset),
        other => other,
    };
    sink.close().await;
    done
}

/// The body of [`receive`]: the bytes into `sink`.
#[allow(clippy::too_many_arguments)]
async fn append_to(
    app: &App,
    id: &str,
    at: u64,
    headers: &HeaderMap,
    body: Body,
    writing: &mut Writing,
    upload: &PartialUpload,
    sink: &mut Sink<'_>,
) -> Result<u64, ApiError> {
    // The store's record, read under the hold, is the truth there.
    let stored = sink.recorded().unwrap_or(upload.offset);
    if at != stored {
        return Err(ApiError::OffsetMismatch(format!(
            "the upload holds {stored} bytes; send from Upload-Offset: {stored}"
        )));
    }
    let room = upload.length - stored;
    if byte_count(headers, "content-length")?.is_some_and(|n| n > room) {
        return Err(ApiError::UploadTooLarge(upload.length));
    }
    let mut offset = stored;
    let mut stream = body.into_data_stream();
    let mut ended = Ok(());
    loop {
        let chunk = tokio::select! {
            chunk = stream.next() => chunk,
            () = writing.superseded() => {
                ended = Err(taken_over());
                break;
            }
            () = sink.superseded() => {
                ended = Err(taken_over());
                break;
            }
        };
        let Some(chunk) = chunk else { break };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                ended = Err(super::body_rate::broken_body(&e));
                break;
            }
        };
        if chunk.len() as u64 > upload.length - offset {
            ended = Err(ApiError::UploadTooLarge(upload.length));
            break;
        }
        if let Err(e) = sink.write(&chunk).await {
            ended = Err(e);
            break;
        }
        offset += chunk.len() as u64;
        app.uploads.record(id, offset, upload.length);
    }
    // What was written is kept, whatever ended the body: it is the offset
    // the client resumes from, so it must be durable first.
    if let Some(recorded) = sink.settle().await? {
        offset = recorded;
        app.uploads.record(id, offset, upload.length);
    }
    ended?;
    Ok(offset)
}

fn taken_over() -> ApiError {
    ApiError::OffsetMismatch("another request took over this upload".into())
}

/// Probes a complete upload: media within the limits is queued, anything
/// else removed (415, or 422 naming the limit).
/// Any other failure leaves it complete and `uploading`, to be finished by
/// the next HEAD or PATCH (on any node), or at the next start.
pub async fn complete(app: &App, owner: &str, id: &str) -> Result<(), ApiError> {
    let options = app.handle.get(owner, id).await?.options;
    let assembled = app.handle.assemble_upload(owner, id).await?;
    let probed = probe_for(app, &assembled.path, &options).await;
    app.handle.put_away(assembled).await;
    match probed {
        Ok(_) => {
            app.handle.finish_upload(owner, id).await?;
        }
        Err(e @ (ApiError::UnsupportedMedia(_) | ApiError::LimitExceeded { .. })) => {
            app.handle.delete(owner, id).await?;
            app.uploads.forget(id);
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    app.uploads.forget(id);
    Ok(())
}
