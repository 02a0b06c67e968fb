//! Serving outputs (`video.mp4`, `frames.zip`, `poster.jpg`) with full
//! range semantics (API.md "Ranges"): 206/416, If-Range, strong ETag,
//! Last-Modified, 304, HEAD. Bytes stream from the file; nothing is read
//! whole into memory. Access is by bearer token or by a signed link.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use vidmill_actors::{object_key, Video};

use super::error::ApiError;
use super::file_body;
use super::identity::bearer;
use super::openapi as doc;
use super::range::{decide, RangeAnswer};
use crate::app::{unix_now, App};
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
    let mut parts = axum::http::Request::new(()).into_parts().0;
    parts.headers = headers.clone();
    let token = bearer(&parts)
        .ok_or_else(|| ApiError::InvalidToken("send a bearer token or use a signed link".into()))?;
    let who = app
        .auth
        .verify(token)
        .map_err(|e| ApiError::InvalidToken(e.to_string()))?;
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

/// The converted MP4
///
/// With byte ranges; `HEAD` answers the same headers without a body. The
/// same handler serves `frames.zip` and `poster.jpg`. Auth: a bearer token,
/// or the signed query (`?exp=…&sig=…`) of the video's `outputs.mp4.url`.
#[utoipa::path(
    method(get, head),
    path = "/v1/videos/{id}/video.mp4",
    tag = "outputs",
    params(
        ("id" = String, Path, description = "Video id"),
        ("Range" = Option<String>, Header, nullable = false, description = "`bytes=a-b`, `a-` or `-n`: answered `206`. \
            Syntactically invalid, or more than one range: ignored, `200` full body"),
        ("If-Range" = Option<String>, Header, nullable = false, description = "The current ETag or `Last-Modified` date: \
            the range is honoured; anything else: `200` full body"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "Matching ETag (or `*`): `304`"),
    ),
    responses(
        (status = 200, description = "The whole MP4", content(("video/mp4")), headers(
            ("Accept-Ranges" = String, description = "`bytes`"),
            ("ETag" = String, description = "Strong ETag"),
            ("Last-Modified" = String, description = "HTTP date"),
            ("Content-Length" = u64, description = "Bytes in this answer"),
        )),
        (status = 206, description = "The requested range of the MP4", content(("video/mp4")), headers(
            ("Content-Range" = String, description = "`bytes a-b/LEN`"),
            ("Accept-Ranges" = String, description = "`bytes`"),
            ("ETag" = String, description = "Strong ETag"),
            ("Last-Modified" = String, description = "HTTP date"),
            ("Content-Length" = u64, description = "Bytes in this answer"),
        )),
        (status = 304, description = "Not modified: `If-None-Match` matched", headers(
            ("ETag" = String, description = "Strong ETag"),
        )),
        (status = 401, description = "`invalid-token`: neither a valid bearer token nor a signed link",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 403, description = "`bad-signature`: the signed link is expired or tampered with",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`video-not-found` (also for another owner's video)",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`not-ready`: the MP4 does not exist yet",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 416, description = "`range-not-satisfiable`", body = doc::Problem,
            content_type = "application/problem+json", headers(
            ("Content-Range" = String, description = "`bytes */LEN`"),
        )),
        (status = 500, description = "`internal`", body = doc::Problem,
            content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("signed_url_exp" = [], "signed_url_sig" = [])),
)]
pub async fn serve(
    State(app): State<App>,
    method: Method,
    Path((id, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
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
    let video = authorize(&app, &id, &path, &headers, &query).await?;
    if !present(&video) {
        return Err(ApiError::NotReady(object));
    }
    let file_path = app
        .store
        .path(&object_key(&video.id, object))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let file = match file_body::open(&file_path).await {
        Ok(f) => f,
        // Deleted between the lookup and the open: it is gone.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ApiError::VideoNotFound),
        Err(e) => return Err(ApiError::Internal(format!("{}: {e}", file_path.display()))),
    };
    let (len, modified) = (file.len, file.modified);
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
        file.body(start, count)
    };
    response
        .body(body)
        .map_err(|e| ApiError::Internal(e.to_string()))
        .map(IntoResponse::into_response)
}

// `serve` answers all three outputs on one route; these document the other
// two paths (one `#[utoipa::path]` describes one path).

/// The frames archive
///
/// A ZIP of `frames/000001.jpg` (or `.png`), … plus `index.csv`, with byte
/// ranges; `HEAD` answers the same headers without a body. Auth: a bearer
/// token, or the signed query of the video's `outputs.frames.url`.
#[utoipa::path(
    method(get, head),
    path = "/v1/videos/{id}/frames.zip",
    tag = "outputs",
    params(
        ("id" = String, Path, description = "Video id"),
        ("Range" = Option<String>, Header, nullable = false, description = "`bytes=a-b`, `a-` or `-n`: answered `206`. \
            Syntactically invalid, or more than one range: ignored, `200` full body"),
        ("If-Range" = Option<String>, Header, nullable = false, description = "The current ETag or `Last-Modified` date: \
            the range is honoured; anything else: `200` full body"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "Matching ETag (or `*`): `304`"),
    ),
    responses(
        (status = 200, description = "The whole archive", content(("application/zip")), headers(
            ("Accept-Ranges" = String, description = "`bytes`"),
            ("ETag" = String, description = "Strong ETag"),
            ("Last-Modified" = String, description = "HTTP date"),
            ("Content-Length" = u64, description = "Bytes in this answer"),
        )),
        (status = 206, description = "The requested range of the archive", content(("application/zip")), headers(
            ("Content-Range" = String, description = "`bytes a-b/LEN`"),
            ("Accept-Ranges" = String, description = "`bytes`"),
            ("ETag" = String, description = "Strong ETag"),
            ("Last-Modified" = String, description = "HTTP date"),
            ("Content-Length" = u64, description = "Bytes in this answer"),
        )),
        (status = 304, description = "Not modified: `If-None-Match` matched", headers(
            ("ETag" = String, description = "Strong ETag"),
        )),
        (status = 401, description = "`invalid-token`: neither a valid bearer token nor a signed link",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 403, description = "`bad-signature`: the signed link is expired or tampered with",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`video-not-found` (also for another owner's video)",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`not-ready`: the archive does not exist yet",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 416, description = "`range-not-satisfiable`", body = doc::Problem,
            content_type = "application/problem+json", headers(
            ("Content-Range" = String, description = "`bytes */LEN`"),
        )),
        (status = 500, description = "`internal`", body = doc::Problem,
            content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("signed_url_exp" = [], "signed_url_sig" = [])),
)]
#[allow(dead_code)]
fn frames_zip() {}

/// The poster image
///
/// One representative frame. Auth: a bearer token, or the signed query of
/// the video's `outputs.poster.url`.
#[utoipa::path(
    get,
    path = "/v1/videos/{id}/poster.jpg",
    tag = "outputs",
    params(
        ("id" = String, Path, description = "Video id"),
        ("Range" = Option<String>, Header, nullable = false, description = "`bytes=a-b`, `a-` or `-n`: answered `206`. \
            Syntactically invalid, or more than one range: ignored, `200` full body"),
        ("If-Range" = Option<String>, Header, nullable = false, description = "The current ETag or `Last-Modified` date: \
            the range is honoured; anything else: `200` full body"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "Matching ETag (or `*`): `304`"),
    ),
    responses(
        (status = 200, description = "The whole poster", content(("image/jpeg")), headers(
            ("Accept-Ranges" = String, description = "`bytes`"),
            ("ETag" = String, description = "Strong ETag"),
            ("Last-Modified" = String, description = "HTTP date"),
            ("Content-Length" = u64, description = "Bytes in this answer"),
        )),
        (status = 206, description = "The requested range of the poster", content(("image/jpeg")), headers(
            ("Content-Range" = String, description = "`bytes a-b/LEN`"),
            ("Accept-Ranges" = String, description = "`bytes`"),
            ("ETag" = String, description = "Strong ETag"),
            ("Last-Modified" = String, description = "HTTP date"),
            ("Content-Length" = u64, description = "Bytes in this answer"),
        )),
        (status = 304, description = "Not modified: `If-None-Match` matched", headers(
            ("ETag" = String, description = "Strong ETag"),
        )),
        (status = 401, description = "`invalid-token`: neither a valid bearer token nor a signed link",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 403, description = "`bad-signature`: the signed link is expired or tampered with",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`video-not-found` (also for another owner's video)",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`not-ready`: the poster does not exist yet",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 416, description = "`range-not-satisfiable`", body = doc::Problem,
            content_type = "application/problem+json", headers(
            ("Content-Range" = String, description = "`bytes */LEN`"),
        )),
        (status = 500, description = "`internal`", body = doc::Problem,
            content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("signed_url_exp" = [], "signed_url_sig" = [])),
)]
#[allow(dead_code)]
fn poster_jpg() {}
