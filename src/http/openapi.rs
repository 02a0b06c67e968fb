//! `GET /openapi.json`: the OpenAPI 3.1 description of the router, generated
//! by `utoipa` from the `#[utoipa::path]` annotations on the handlers and the
//! wire shapes below. These types only describe the JSON (API.md); the
//! handlers build it themselves (`render.rs`, `error.rs`), so nothing here
//! changes what goes over the wire.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

// ---------------------------------------------------------------------------
// Security schemes (API.md "Authentication and isolation").

/// Names of the security schemes, as the handlers' `security(...)` spell
/// them: `Authorization: Bearer <JWT>`; `?access_token=<JWT>` (WebSocket
/// routes); and the two halves of a signed output link (`?exp=…&sig=…`),
/// which an operation requires together.
const BEARER: &str = "bearer";
const ACCESS_TOKEN: &str = "access_token";
const SIGNED_EXP: &str = "signed_url_exp";
const SIGNED_SIG: &str = "signed_url_sig";

// ---------------------------------------------------------------------------
// The video resource (API.md "Video resource").

/// Lifecycle state: `uploading` → `queued` → `processing` → `ready` | `failed`.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VideoState {
    Uploading,
    Queued,
    Processing,
    Ready,
    Failed,
}

/// Processing stage, only while `processing`.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Probing,
    Converting,
    ExtractingFrames,
    Verifying,
    Finalizing,
}

/// An output that can be asked for at upload.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputName {
    Mp4,
    Frames,
}

/// Image format of the extracted frames.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FramesFormat {
    Jpeg,
    Png,
}

/// `exact`: the frame displayed at each requested time; `keyframe`: the
/// nearest preceding keyframe (faster).
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FramesAccuracy {
    Exact,
    Keyframe,
}

/// How the MP4 was made: `remux` (no re-encoding) or `transcode`.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mp4Method {
    Remux,
    Transcode,
}

/// Progress of the current run.
#[derive(Debug, ToSchema)]
pub struct Progress {
    /// 0 to 100; 100 once ready.
    #[schema(minimum = 0.0, maximum = 100.0, example = 42.5)]
    pub percent: f64,
    /// Media seconds processed per wall-clock second, while processing.
    #[schema(required = true, example = 3.1)]
    pub speed: Option<f64>,
    /// Estimated seconds left, while processing.
    #[schema(required = true, example = 12.0)]
    pub eta_seconds: Option<f64>,
    /// While `queued`: how many videos start before this one (0 = next).
    #[schema(required = true, minimum = 0)]
    pub queue_position: Option<u64>,
}

/// The processing options chosen at upload.
#[derive(Debug, ToSchema)]
pub struct VideoOptions {
    #[schema(min_items = 1)]
    pub outputs: Vec<OutputName>,
    /// Seconds between extracted frames.
    #[schema(example = 1.0)]
    pub frames_every: f64,
    pub frames_format: FramesFormat,
    pub frames_accuracy: FramesAccuracy,
}

/// What probing learned about the uploaded file.
#[derive(Debug, ToSchema)]
pub struct Source {
    pub size_bytes: u64,
    /// Container format, e.g. `quicktime`, `matroska`, `mp4`.
    #[schema(example = "quicktime")]
    pub container: String,
    /// Seconds.
    #[schema(required = true, example = 61.2)]
    pub duration: Option<f64>,
    /// Display width (rotation applied).
    pub width: u32,
    /// Display height (rotation applied).
    pub height: u32,
    #[schema(example = "h264")]
    pub video_codec: String,
    /// Null when the source has no audio.
    #[schema(required = true, example = "aac")]
    pub audio_codec: Option<String>,
}

/// The converted MP4.
#[derive(Debug, ToSchema)]
pub struct Mp4Output {
    /// Signed link to `/v1/videos/{id}/video.mp4`, usable without a header.
    #[schema(format = "uri")]
    pub url: String,
    pub size_bytes: u64,
    #[schema(required = true)]
    pub duration: Option<f64>,
    pub width: u32,
    pub height: u32,
    pub method: Mp4Method,
}

/// The frames archive.
#[derive(Debug, ToSchema)]
pub struct FramesOutput {
    /// Signed link to `/v1/videos/{id}/frames.zip`.
    #[schema(format = "uri")]
    pub url: String,
    pub size_bytes: u64,
    /// Number of frames in the archive.
    pub count: u64,
    /// Seconds between frames.
    pub every: f64,
}

/// The poster image.
#[derive(Debug, ToSchema)]
pub struct PosterOutput {
    /// Signed link to `/v1/videos/{id}/poster.jpg`.
    #[schema(format = "uri")]
    pub url: String,
    pub size_bytes: u64,
}

/// Finished outputs; each key appears once that output is verified (the MP4
/// may be listed while frames are still being extracted).
#[derive(Debug, ToSchema)]
pub struct Outputs {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub mp4: Option<Mp4Output>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub frames: Option<FramesOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub poster: Option<PosterOutput>,
}

/// Why a video failed.
#[derive(Debug, ToSchema)]
pub struct VideoError {
    /// e.g. `unsupported-media`, `corrupt-media`, `limit-exceeded`,
    /// `pipeline-failed`, `pipeline-crashed`, `crashed-repeatedly`,
    /// `pipeline-stalled`, `verification-failed`, `storage-unavailable`.
    #[schema(example = "pipeline-failed")]
    pub code: String,
    pub message: String,
}

/// One video (API.md "Video resource").
#[derive(Debug, ToSchema)]
pub struct Video {
    /// Opaque URL-safe id (ULID).
    #[schema(example = "01J9Z8Q4K7X3V5N2M6P8R0T1W3")]
    pub id: String,
    #[schema(example = "holiday.mov")]
    pub filename: String,
    pub state: VideoState,
    /// Only while `processing`.
    #[schema(required = true)]
    pub stage: Option<Stage>,
    pub progress: Progress,
    /// Processing runs so far; a retry adds one.
    pub attempts: u32,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub options: VideoOptions,
    /// Null until the upload has been probed.
    #[schema(required = true)]
    pub source: Option<Source>,
    pub outputs: Outputs,
    /// Set when `failed`.
    #[schema(required = true)]
    pub error: Option<VideoError>,
}

/// One page of the caller's videos, newest first.
#[derive(Debug, ToSchema)]
pub struct VideoList {
    pub videos: Vec<Video>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------------------
// Errors (API.md "Conventions" and "Error codes").

/// The stable error codes this server answers with.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    InvalidToken,
    VideoNotFound,
    UploadTooLarge,
    EmptyUpload,
    UnsupportedMedia,
    LimitExceeded,
    InvalidOption,
    BadSignature,
    RangeNotSatisfiable,
    NotReady,
    NotFailed,
    InsufficientStorage,
    UploadInterrupted,
    DirectUploadUnavailable,
    UploadNotFound,
    OffsetMismatch,
    Unavailable,
    Internal,
    NotFound,
    MethodNotAllowed,
    BodyTooSlow,
    OriginNotAllowed,
    RateLimited,
}

/// RFC 9457 problem details (`application/problem+json`). A 5xx `detail`
/// never carries internals.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "type": "https://vidmill.dev/errors/video-not-found",
    "title": "Video not found",
    "status": 404,
    "detail": "no video with that id",
    "code": "video-not-found"
}))]
pub struct Problem {
    /// `https://vidmill.dev/errors/<code>`.
    #[serde(rename = "type")]
    #[schema(format = "uri")]
    pub kind: String,
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// A human sentence.
    pub detail: String,
    pub code: ErrorCode,
    /// With `limit-exceeded`: the config key of the quota or media limit,
    /// e.g. `limits.quota_stored_bytes`, `limits.max_pixels`.
    pub limit: Option<String>,
}

/// The failures every bearer-authenticated REST route can answer with,
/// listed once for all of their `responses(...)`. Only a description: the
/// variants are never built.
#[allow(dead_code)]
#[derive(Debug, utoipa::IntoResponses)]
pub enum Failures {
    /// `invalid-token`
    #[response(status = 401, content_type = "application/problem+json")]
    InvalidToken(Problem),
    /// `rate-limited`, with `Retry-After`: over the caller's request rate
    /// (`limits.rate_requests_per_second`), or too many failed tokens from
    /// the client's address (`limits.rate_auth_failures_per_minute`)
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// `internal`
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
    /// `unavailable`, with `Retry-After`
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

// ---------------------------------------------------------------------------
// Request shapes.

/// Query options of `POST /v1/videos`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Comma-separated outputs to make, from `mp4`, `frames` (default both).
    #[param(example = "mp4,frames", pattern = r"^(mp4|frames)(,(mp4|frames))*$")]
    pub outputs: Option<String>,
    /// Seconds between extracted frames, 0.01 to 86400 (default from the
    /// server's `media.frames_every`).
    #[param(minimum = 0.01, maximum = 86400.0, example = 2.5)]
    pub frames_every: Option<f64>,
    /// `jpeg` (default) or `png`.
    #[param(inline)]
    pub frames_format: Option<FramesFormat>,
    /// `exact` (default) or `keyframe`.
    #[param(inline)]
    pub frames_accuracy: Option<FramesAccuracy>,
    /// The file's name; for a raw body it is the only way to give one (a
    /// multipart `file` part's own file name is used otherwise).
    #[param(example = "holiday.mov")]
    pub filename: Option<String>,
    /// `direct`: direct-to-S3 upload; with the file store this answers
    /// `409 direct-upload-unavailable`.
    #[param(inline)]
    pub upload: Option<UploadMode>,
}

/// Upload modes other than streaming the body.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UploadMode {
    Direct,
}

/// Query of `GET /v1/videos`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only videos in this state.
    #[param(inline)]
    pub state: Option<VideoState>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The `multipart/form-data` upload: one `file` part (other parts are
/// ignored).
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// The video file.
    #[schema(value_type = String, content_media_type = "application/octet-stream")]
    pub file: Vec<u8>,
}

// ---------------------------------------------------------------------------
// WebSocket messages (API.md "WebSocket events"): text frames, JSON, sent
// after the `101` upgrade. OpenAPI cannot attach them to the `101`, so they
// are listed as schemas.

/// A server → client message on `/v1/videos/{id}/events` and `/v1/events`.
#[derive(Debug, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventMessage {
    /// First, one per subscribed video.
    Snapshot { video: Box<Video> },
    /// At most 4 per second per video; a slow client may miss some.
    Progress {
        video_id: String,
        seq: u64,
        state: VideoState,
        #[schema(required = true)]
        stage: Option<Stage>,
        percent: f64,
        speed: f64,
        #[schema(required = true)]
        eta_seconds: Option<f64>,
    },
    /// On every state or stage change; never dropped, replayed after
    /// `?since=`.
    State {
        video_id: String,
        seq: u64,
        state: VideoState,
        #[schema(required = true)]
        stage: Option<Stage>,
        #[schema(required = true)]
        error: Option<VideoError>,
        outputs: Outputs,
    },
}

// ---------------------------------------------------------------------------
// Operations.

/// `/readyz`: each check, `ok` or that it failed (the database and storage
/// checks say why only in the server log: no paths for anonymous callers;
/// GStreamer names the missing elements).
#[derive(Debug, ToSchema)]
#[schema(example = json!({"database": "ok", "storage": "ok", "gstreamer": "ok"}))]
pub struct ReadyChecks {
    pub database: String,
    pub storage: String,
    pub gstreamer: String,
}

// ---------------------------------------------------------------------------
// The document.

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "vidmill",
        description = "Self-hosted video processing and streaming server. The contract is API.md; \
                       every error is RFC 9457 problem details (`application/problem+json`)."
    ),
    paths(
        super::upload::create,
        super::videos::list,
        super::videos::get,
        super::videos::delete,
        super::videos::retry,
        super::direct::complete,
        super::output_docs::video_mp4,
        super::output_docs::frames_zip,
        super::output_docs::poster_jpg,
        super::ws::video_events,
        super::ws::owner_events,
        super::tus::discover,
        super::tus::create,
        super::tus::offset,
        super::tus::append,
        super::tus::terminate,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        document,
        super::web::page,
    ),
    components(schemas(EventMessage)),
    modifiers(&Finish),
    tags(
        (name = "videos", description = "Upload, list, read, delete and retry videos"),
        (name = "uploads", description = "tus 1.0.0 resumable uploads"),
        (name = "web", description = "The web page"),
        (name = "outputs", description = "Converted outputs, with byte ranges; bearer token or signed link"),
        (name = "events", description = "WebSocket event streams"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// Adds the security schemes and gives a `HEAD` that shares its handler
/// with `GET` an operation id of its own (ids must be unique).
#[derive(Debug)]
struct Finish;

impl Modify for Finish {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "`Authorization: Bearer <JWT>`: HS256, RS256 or ES256; claims `sub` \
                         (the owner) and `exp` required. A bad token answers 401 with \
                         `WWW-Authenticate: Bearer error=\"invalid_token\"`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ACCESS_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "access_token",
                "The same JWT as a query parameter, for WebSocket routes (browsers cannot set \
                 headers on a WebSocket).",
            ))),
        );
        components.add_security_scheme(
            SIGNED_EXP,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "exp",
                "Signed link, part 1: expiry in Unix seconds. Used together with `sig`, as \
                 handed out in a video's `outputs.*.url`.",
            ))),
        );
        components.add_security_scheme(
            SIGNED_SIG,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "sig",
                "Signed link, part 2: hex HMAC-SHA256 over the path and `exp`. Expired or \
                 tampered answers 403 `bad-signature`.",
            ))),
        );
        for item in doc.paths.paths.values_mut() {
            unique_head_id(item);
        }
    }
}

fn unique_head_id(item: &mut PathItem) {
    let (Some(get), Some(head)) = (&item.get, &mut item.head) else {
        return;
    };
    if head.operation_id.is_some() && head.operation_id == get.operation_id {
        head.operation_id = head.operation_id.take().map(|id| format!("{id}_head"));
    }
}

static DOCUMENT: LazyLock<Vec<u8>> =
    LazyLock::new(|| serde_json::to_vec(&ApiDoc::openapi()).unwrap_or_default());

/// This document
///
/// The OpenAPI 3.1 description of every route, generated from the code.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub async fn document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_slice(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::super::error::ApiError;
    use super::*;

    /// Every code the error table can answer with is in the `ErrorCode`
    /// schema. The match breaks the build when a variant is added, so the
    /// list below cannot fall behind.
    #[test]
    fn error_codes_cover_the_table() {
        fn sample(e: &ApiError) -> ApiError {
            match e {
                ApiError::InvalidToken(_)
                | ApiError::VideoNotFound
                | ApiError::UploadTooLarge(_)
                | ApiError::EmptyUpload
                | ApiError::UnsupportedMedia(_)
                | ApiError::LimitExceeded { .. }
                | ApiError::InvalidOption { .. }
                | ApiError::BadSignature
                | ApiError::RangeNotSatisfiable(_)
                | ApiError::NotReady(_)
                | ApiError::NotFailed(_)
                | ApiError::InsufficientStorage
                | ApiError::UploadInterrupted
                | ApiError::DirectUploadUnavailable(_)
                | ApiError::UploadNotFound
                | ApiError::OffsetMismatch(_)
                | ApiError::TusVersion
                | ApiError::Unavailable(_)
                | ApiError::Internal(_)
                | ApiError::NoRoute(_)
                | ApiError::MethodNotAllowed(_)
                | ApiError::BodyTooSlow(_)
                | ApiError::OriginNotAllowed(_)
                | ApiError::QuotaExceeded { .. }
                | ApiError::RateLimited { .. } => ApiError::Internal(String::new()),
            }
        }
        let all = [
            ApiError::InvalidToken(String::new()),
            ApiError::VideoNotFound,
            ApiError::UploadTooLarge(1),
            ApiError::EmptyUpload,
            ApiError::UnsupportedMedia(String::new()),
            ApiError::LimitExceeded {
                limit: String::new(),
                why: String::new(),
            },
            ApiError::InvalidOption {
                name: "x",
                why: String::new(),
            },
            ApiError::BadSignature,
            ApiError::RangeNotSatisfiable(1),
            ApiError::NotReady("video.mp4"),
            ApiError::NotFailed(String::new()),
            ApiError::InsufficientStorage,
            ApiError::UploadInterrupted,
            ApiError::DirectUploadUnavailable(""),
            ApiError::UploadNotFound,
            ApiError::OffsetMismatch(String::new()),
            ApiError::TusVersion,
            ApiError::Unavailable(String::new()),
            ApiError::Internal(String::new()),
            ApiError::NoRoute(String::new()),
            ApiError::MethodNotAllowed(String::new()),
            ApiError::BodyTooSlow(1),
            ApiError::OriginNotAllowed(String::new()),
            ApiError::QuotaExceeded {
                key: "limits.quota_stored_bytes",
                too_large: true,
                why: String::new(),
            },
            ApiError::RateLimited {
                retry_after: std::time::Duration::from_secs(1),
                why: String::new(),
            },
        ];
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serializes");
        let codes = doc["components"]["schemas"]["ErrorCode"]["enum"].clone();
        let codes: Vec<String> = serde_json::from_value(codes).expect("an enum of strings");
        let answered: std::collections::BTreeSet<&str> = all
            .iter()
            .map(|e| {
                let _ = sample(e);
                e.parts().1
            })
            .collect();
        let listed: std::collections::BTreeSet<&str> = codes.iter().map(String::as_str).collect();
        assert_eq!(
            answered, listed,
            "the schema lists exactly the codes answered"
        );
    }
}
