//! Serving outputs (`video.mp4`, `frames.zip`, `poster.jpg`) with full
//! range semantics (API.md "Ranges"): 206/416, If-Range, strong ETag,
//! Last-Modified, 304, HEAD. Bytes stream from the file; nothing is read
//! whole into memory. Access is by bearer token or by a signed link.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use vidmill_actors::{ByteChunks, PresignMethod, Video};

use super::error::ApiError;
use super::identity::{authenticate, bearer, client};
use super::range::{decide, RangeAnswer};
use crate::app::{unix_now, App};
use crate::config::StorageKind;
use crate::signing::SignatureError;

/// One servable output: its object name, content type, and whether a
/// video has it yet.
struct Output {
    object: &'static str,
    content_type: &'static str,
    present: fn(&Video) -> bool,
}

fn output(name: &str) -> Option<Output> {
    let (object, content_type, present): (_, _, fn(&Video) -> bool) = match name {
        "video.mp4" => ("video.mp4", "video/mp4", |v| v.outputs.mp4.is_some()),
        "frames.zip" => ("frames.zip", "application/zip", |v| {
            v.outputs.frames.is_some()
        }),
        "poster.jpg" => ("poster.jpg", "image/jpeg", |v| v.outputs.poster.is_some()),
        _ => return None,
    };
    Some(Output {
        object,
        content_type,
        present,
    })
}

/// The video, if the request may read it: a bearer token of its owner, or
/// a valid signature for this very path.
async fn authorize(
    app: &App,
    id: &str,
    path: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    client: Option<IpAddr>,
) -> Result<Video, ApiError> {
    if let (Some(exp), Some(sig)) = (query.get("exp"), query.get("sig")) {
        let exp: u64 = exp.parse().map_err(|_| ApiError::BadSignature)?;
        // A missing video answers like a bad signature: a link reveals nothing.
        let video = ready_video(app, id).await?.ok_or(ApiError::BadSignature)?;
        return match app.signer.verify(&video.owner, path, exp, sig, unix_now()) {
            Ok(()) => Ok(video),
            Err(SignatureError::Expired | SignatureError::Invalid) => Err(ApiError::BadSignature),
        };
    }
    let who = authenticate(
        app,
        client,
        bearer(headers),
        "send a bearer token or use a signed link",
    )
    .await?;
    match ready_video(app, id).await? {
        Some(video) if video.owner == who.sub => Ok(video),
        // Another owner's video answers exactly like a missing one.
        _ => Ok(app.handle.get(&who.sub, id).await?),
    }
}

/// The video, from the short-lived cache of ready videos when it is there:
/// a player's burst of range requests then costs one catalog read.
async fn ready_video(app: &App, id: &str) -> Result<Option<Video>, ApiError> {
    if let Some(video) = app.recent.get(id) {
        return Ok(Some(video));
    }
    let video = app.handle.get_any(id).await?;
    if let Some(v) = video
        .as_ref()
        .filter(|v| v.state == vidmill_actors::VideoState::Ready)
    {
        app.recent.put(v.clone());
    }
    Ok(video)
}

fn etag_matches(header: Option<&HeaderValue>, etag: &str) -> bool {
    header.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.trim() == "*"
            || v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
    })
}

/// If-Range holds when it names the current strong ETag or the exact
/// Last-Modified date.
fn if_range_holds(header: Option<&HeaderValue>, etag: &str, last_modified: &str) -> bool {
    match header.and_then(|v| v.to_str().ok()).map(str::trim) {
        None => true,
        Some(v) if v.starts_with('"') => v == etag,
        Some(v) => v == last_modified,
    }
}

/// A stored range as a streamed response body. A failed read ends the
/// body early, which the client sees as a cut response.
fn body_of(chunks: Box<dyn ByteChunks>) -> Body {
    Body::from_stream(futures_util::stream::unfold(
        chunks,
        |mut chunks| async move {
            match chunks.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(Bytes::from(chunk)), chunks)),
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e)), chunks)),
            }
        },
    ))
}

/// Serves `video.mp4`, `frames.zip` and `poster.jpg` of a video; their
/// OpenAPI descriptions are in `output_docs`.
pub async fn serve(
    State(app): State<App>,
    method: Method,
    Path((id, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, ApiError> {
    let Some(Output {
        object,
        content_type,
        present,
    }) = output(&name)
    else {
        return Err(ApiError::VideoNotFound);
    };
    let path = format!("/v1/videos/{id}/{object}");
    let client = client(peer.as_ref().map(|Extension(p)| p));
    let video = authorize(&app, &id, &path, &headers, &query, client).await?;
    if !present(&video) {
        return Err(ApiError::NotReady(object));
    }
    // A GET may go to the bucket itself; a HEAD is answered here (a URL
    // presigned for GET refuses HEAD).
    if method == Method::GET
        && app.config.storage.kind == StorageKind::S3
        && app.config.storage.s3.redirect
    {
        // As long as the signed link: players keep asking for ranges.
        let valid = app
            .link_lifetime(&video)
            .min(std::time::Duration::from_secs(7 * 24 * 3600));
        if let Some(to) = app
            .store
            .presign(
                PresignMethod::Get,
                &video.outputs.key(&video.id, object),
                valid,
            )
            .await?
        {
            // The bucket answers ranges itself; the link is per request.
            return Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, to.url)
                .header(header::CACHE_CONTROL, "private, no-store")
                .body(Body::empty())
                .map_err(|e| ApiError::Internal(e.to_string()));
        }
    }
    let stored = match app.store.open(&video.outputs.key(&video.id, object)).await {
        Ok(o) => o,
        // Deleted between the lookup and the open: it is gone.
        Err(e) => return Err(e.into()),
    };
    let (len, modified) = (stored.size_bytes(), stored.modified());
    let nanos = modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let etag = format!("\"{len:x}-{nanos:x}\"");
    let last_modified = httpdate::fmt_http_date(modified);

    let mut response = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::LAST_MODIFIED, &last_modified)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "private, max-age=3600");
    if etag_matches(headers.get(header::IF_NONE_MATCH), &etag) {
        return response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(|e| ApiError::Internal(e.to_string()));
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let answer = match if_range_holds(headers.get(header::IF_RANGE), &etag, &last_modified) {
        true => decide(range, len),
        false => RangeAnswer::Full,
    };
    let (status, start, count) = match answer {
        RangeAnswer::Full => (StatusCode::OK, 0, len),
        RangeAnswer::Partial { start, end } => {
            response = response.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeAnswer::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable(len)),
    };
    response = response
        .status(status)
        .header(header::CONTENT_LENGTH, count);
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        app.metrics.bytes_served(count);
        body_of(stored.range(start, count))
    };
    response
        .body(body)
        .map_err(|e| ApiError::Internal(e.to_string()))
        .map(IntoResponse::into_response)
}
