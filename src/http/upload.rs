//! `POST /v1/videos`: an upload streamed to a temporary file (never held in
//! memory), size-limited, probed before answering, then handed to the core.
//! Every refusal leaves nothing behind: no record, no object, no temp file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use vidmill_actors::{new_id, EngineError, Options, OutputKind, SourceInfo};
use vidmill_pipelines as media;

use super::disk::{check_disk, write_error, DiskGuard};
use super::error::ApiError;
use super::multipart_cap::{form_error, FormPrefixCap};
use super::openapi as doc;
use super::render;
use crate::app::App;
use crate::auth::Identity;
use crate::quotas::Reservation;

/// Parses the upload options of API.md from the query string.
pub fn parse_options(
    query: &HashMap<String, String>,
    default_every: f64,
) -> Result<Options, ApiError> {
    let invalid = |name: &'static str, why: &str| ApiError::InvalidOption {
        name,
        why: why.into(),
    };
    for key in query.keys() {
        if ![
            "outputs",
            "frames_every",
            "frames_format",
            "frames_accuracy",
            "filename",
            "upload",
        ]
        .contains(&key.as_str())
        {
            return Err(ApiError::InvalidOption {
                name: "query",
                why: format!("unknown option `{key}`"),
            });
        }
    }
    let mut options = Options {
        frames_every: default_every,
        ..Options::default()
    };
    if let Some(list) = query.get("outputs") {
        let mut outputs = Vec::new();
        for name in list.split(',').map(str::trim) {
            let kind = match name {
                "mp4" => OutputKind::Mp4,
                "frames" => OutputKind::Frames,
                _ => return Err(invalid("outputs", "expected a list of mp4, frames")),
            };
            if !outputs.contains(&kind) {
                outputs.push(kind);
            }
        }
        if outputs.is_empty() {
            return Err(invalid("outputs", "name at least one of mp4, frames"));
        }
        options.outputs = outputs;
    }
    if let Some(every) = query.get("frames_every") {
        options.frames_every = every
            .parse::<f64>()
            .ok()
            .filter(|e| e.is_finite() && *e >= media::MIN_EVERY && *e <= 86_400.0)
            .ok_or_else(|| invalid("frames_every", "expected seconds between 0.01 and 86400"))?;
    }
    if let Some(format) = query.get("frames_format") {
        options.frames_format = format
            .parse()
            .map_err(|why: String| invalid("frames_format", &why))?;
    }
    if let Some(accuracy) = query.get("frames_accuracy") {
        options.frames_accuracy = accuracy
            .parse()
            .map_err(|why: String| invalid("frames_accuracy", &why))?;
    }
    Ok(options)
}

/// A temporary upload file that removes itself (and its record) unless
/// handed over to the core.
struct TempUpload {
    path: PathBuf,
    app: App,
    kept: bool,
}

impl TempUpload {
    async fn create(app: &App) -> Result<(Self, tokio::fs::File), ApiError> {
        let dir = app.config.data_dir().join("uploads");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| ApiError::Internal(format!("{}: {e}", dir.display())))?;
        let path = dir.join(format!("{}.part", new_id()));
        app.handle.track_temp(&path, "upload").await?;
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
        Ok((
            Self {
                path,
                app: app.clone(),
                kept: false,
            },
            file,
        ))
    }
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let _ = std::fs::remove_file(&self.path);
        let (app, path) = (self.app.clone(), self.path.clone());
        tokio::spawn(async move {
            let _ = app.handle.untrack_temp(&path).await;
        });
    }
}

/// Copies a body stream to `file`, enforcing the size limit, the user's
/// byte quotas (the reservation grows to cover what arrived) and the free
/// disk floor as it goes.
async fn receive<S, E>(
    app: &App,
    mut stream: S,
    file: &mut tokio::fs::File,
    limit: u64,
    reservation: &mut Reservation,
) -> Result<u64, ApiError>
where
    S: futures_util::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let mut total = 0u64;
    let mut disk = DiskGuard::new(app);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| form_error(&e))?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(ApiError::UploadTooLarge(limit));
        }
        reservation.cover(total).await?;
        disk.writing(chunk.len()).await?;
        file.write_all(&chunk).await.map_err(write_error)?;
    }
    file.flush().await.map_err(write_error)?;
    Ok(total)
}

/// The longest file name kept, in bytes: the longest a file system takes
/// (NAME_MAX), and more than any real name needs.
pub const MAX_FILENAME_BYTES: usize = 255;

/// The upload's name as given, or `upload`; a longer one than
/// [`MAX_FILENAME_BYTES`] is refused (it would be stored, listed and sent
/// with every video).
pub fn filename(given: Option<&str>) -> Result<String, ApiError> {
    match given.filter(|n| !n.is_empty()) {
        None => Ok("upload".into()),
        Some(name) if name.len() > MAX_FILENAME_BYTES => Err(ApiError::InvalidOption {
            name: "filename",
            why: format!(
                "{} bytes is longer than the {MAX_FILENAME_BYTES} allowed; send a shorter name",
                name.len()
            ),
        }),
        Some(name) => Ok(name.to_string()),
    }
}

/// Keeps the address in the caller's token for emailing them results; a
/// failure only costs that email.
pub(super) async fn remember_contact(app: &App, who: &Identity) {
    if let Some(email) = who.email.as_deref().filter(|e| !e.is_empty()) {
        if let Err(e) = app.handle.set_contact(&who.sub, email).await {
            tracing::warn!(owner = %who.sub, error = %e, "could not remember the owner's address");
        }
    }
}

/// Probes a complete upload (plain, tus or direct) and holds it to the
/// media limits, the frames archive's included: what is known now is
/// refused now (422 naming the limit), not failed later.
pub(super) async fn probe_for(
    app: &App,
    path: &Path,
    options: &Options,
) -> Result<SourceInfo, ApiError> {
    let info = probe(app, path).await?;
    if options.wants(OutputKind::Frames) {
        app.config
            .limits
            .media()
            .check_frames(options.frames_every, info.duration)
            .map_err(media_limit)?;
    }
    Ok(info)
}

/// A media limit as the API answers it, its key carried as a value.
fn media_limit(e: media::MediaError) -> ApiError {
    match e {
        media::MediaError::LimitExceeded { limit, why } => ApiError::LimitExceeded {
            limit: limit.key().into(),
            why,
        },
        other => ApiError::Internal(other.to_string()),
    }
}

/// Probes an upload in a worker process (the server itself never reads
/// media). A file whose probe crashes its worker or runs over a worker's
/// limit is no video vidmill can read either.
async fn probe(app: &App, path: &Path) -> Result<SourceInfo, ApiError> {
    let (engine, path) = (app.engine.clone(), path.to_path_buf());
    let probed = tokio::task::spawn_blocking(move || engine.probe(&path))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match probed {
        Ok(info) => Ok(info),
        Err(e @ (EngineError::Unsupported(_) | EngineError::Corrupt(_))) => Err(
            ApiError::UnsupportedMedia(format!("the file is not a video vidmill can read: {e}")),
        ),
        Err(EngineError::LimitExceeded { limit, why }) => Err(ApiError::LimitExceeded {
            why: format!("the video is over a limit of this server: {why}"),
            limit,
        }),
        Err(e @ EngineError::Crashed(_)) => Err(ApiError::UnsupportedMedia(format!(
            "the file is not a video vidmill can read: probing it failed ({}): {e}",
            e.code()
        ))),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"))
}

fn is_raw_media(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("video/") || v.starts_with("application/octet-stream"))
}

/// Upload a video
///
/// Streams the body to storage (never held in memory), probes it, and
/// creates the video in state `queued`. Every refusal leaves nothing behind.
#[utoipa::path(
    post,
    path = "/v1/videos",
    tag = "videos",
    params(doc::UploadQuery),
    request_body(
        description = "`multipart/form-data` with one `file` part, or the raw bytes as `video/*` \
                       or `application/octet-stream` (name in `?filename=`)",
        content(
            (doc::UploadForm = "multipart/form-data"),
            ("video/*"),
            ("application/octet-stream"),
        ),
    ),
    responses(
        (status = 201, description = "Created; state `queued` (with `?upload=direct`: `uploading`, plus \
            `upload`: the presigned PUT to send the bytes to, then `POST /v1/videos/{id}/complete`)", body = doc::Video,
            headers(("Location" = String, description = "`/v1/videos/{id}`"))),
        (status = 400, description = "`invalid-option` (naming the option; `filename` over 255 bytes; \
            `body` when a form holds more than `server.max_header_bytes` before its `file` part), \
            `empty-upload`, or `upload-interrupted` (body cut off before its declared length)",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`direct-upload-unavailable`: `?upload=direct` needs the S3 store",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 413, description = "`upload-too-large`: over `limits.max_upload_bytes`; or \
            `limit-exceeded`: past the caller's `limits.quota_stored_bytes` or \
            `limits.quota_upload_bytes_per_day` (named in `limit`)",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit-exceeded`: a count quota, named in `limit` (`limits.quota_uploads_in_progress`; with `?upload=direct`, `limits.quota_open_uploads`); retry once one ends",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media`: not a video vidmill can read, or another content type",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit-exceeded`: the video is over a media limit (`limits.max_duration_seconds`, \
            `limits.max_pixels`, `limits.max_frame_rate`, `limits.max_frames`; or a worker's `limits.worker_memory_bytes`, \
            `limits.worker_timeout_factor` while probing), named in `limit` and the detail; nothing is kept",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 408, description = "`body-too-slow`: the body came slower than \
            `server.min_body_bytes_per_second`", body = doc::Problem,
            content_type = "application/problem+json"),
        doc::Failures,
        (status = 507, description = "`insufficient-storage`: free disk below `limits.min_free_disk`, \
            refused before any byte is stored, or reached while the body arrived (nothing is kept)", body = doc::Problem,
            content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(app): State<App>,
    who: Identity,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    if query.get("upload").is_some_and(|u| u == "direct") {
        return super::direct::start(&app, &who, &query).await;
    }
    let options = parse_options(&query, app.config.media.frames_every)?;
    let limit = app.config.limits.max_upload_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::UploadTooLarge(limit));
    }
    if declared == Some(0) {
        return Err(ApiError::EmptyUpload);
    }
    let multipart = is_multipart(request.headers());
    let _sending = app.quotas.upload_in_progress(&who.sub)?;
    // A raw body's declared length is the file's, reserved whole now; a
    // form's includes its framing, so a form (like a chunked body) reserves
    // as its file's bytes arrive. Held until the video is created (which
    // charges them) or the request ends.
    let mut reservation = app
        .quotas
        .reserve(
            &app.handle,
            &who.sub,
            declared.filter(|_| !multipart).unwrap_or(0),
            false,
        )
        .await?;
    check_disk(&app).await?;
    if !multipart && !is_raw_media(request.headers()) {
        return Err(ApiError::UnsupportedMedia(
            "send multipart/form-data with a `file` part, or the raw bytes as video/* or application/octet-stream".into(),
        ));
    }
    let mut name = query
        .get("filename")
        .map(|n| filename(Some(n)))
        .transpose()?;
    let (mut temp, mut file) = TempUpload::create(&app).await?;
    let size = if multipart {
        let (parts, body) = request.into_parts();
        let (capped, file_found) =
            FormPrefixCap::new(body.into_data_stream(), app.config.server.max_header_bytes);
        let request = Request::from_parts(parts, Body::from_stream(capped));
        let mut form =
            Multipart::from_request(request, &app)
                .await
                .map_err(|e| ApiError::InvalidOption {
                    name: "body",
                    why: e.to_string(),
                })?;
        let mut size = None;
        while let Some(field) = form.next_field().await.map_err(|e| form_error(&e))? {
            if field.name() != Some("file") {
                continue;
            }
            file_found.mark();
            if name.is_none() {
                name = Some(filename(field.file_name())?);
            }
            size = Some(receive(&app, field, &mut file, limit, &mut reservation).await?);
            break;
        }
        size.ok_or_else(|| ApiError::InvalidOption {
            name: "file",
            why: "the form has no `file` part".into(),
        })?
    } else {
        let body: Body = request.into_body();
        receive(
            &app,
            body.into_data_stream(),
            &mut file,
            limit,
            &mut reservation,
        )
        .await?
    };
    drop(file);
    if size == 0 {
        return Err(ApiError::EmptyUpload);
    }
    // A raw body shorter than declared was cut off (a multipart body's
    // length covers the whole form; its parser notices a cut itself).
    if !multipart && declared.is_some_and(|n| n != size) {
        return Err(ApiError::UploadInterrupted);
    }
    probe_for(&app, &temp.path, &options).await?;
    let name = name.unwrap_or_else(|| "upload".into());
    remember_contact(&app, &who).await;
    let video = app
        .handle
        .create(&who.sub, &name, options, &temp.path)
        .await?;
    temp.kept = true;
    // Charged by the catalog now: the reservation may go.
    drop(reservation);
    // The video exists now; a failure to forget the temp record is only
    // worth a log line (the next start sweeps records of missing files).
    if let Err(e) = app.handle.untrack_temp(&temp.path).await {
        tracing::warn!(error = %e, "could not forget an upload's temp record");
    }
    let location = format!("/v1/videos/{}", video.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(render::video(&app, &video, None)),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vidmill_actors::{FramesAccuracy, FramesFormat};

    #[test]
    fn a_filename_is_kept_up_to_255_bytes() {
        assert_eq!(filename(None).ok().as_deref(), Some("upload"));
        assert_eq!(filename(Some("")).ok().as_deref(), Some("upload"));
        let longest = "é".repeat(127) + "a";
        assert_eq!(filename(Some(&longest)).ok(), Some(longest.clone()));
        assert!(matches!(
            filename(Some(&(longest + "a"))),
            Err(ApiError::InvalidOption {
                name: "filename",
                ..
            })
        ));
    }

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_parse_and_name_the_bad_one() {
        let o = parse_options(
            &q(&[
                ("outputs", "frames"),
                ("frames_every", "2.5"),
                ("frames_format", "png"),
                ("frames_accuracy", "keyframe"),
            ]),
            10.0,
        )
        .expect("valid");
        assert_eq!(o.outputs, vec![OutputKind::Frames]);
        assert_eq!(
            (o.frames_every, o.frames_format, o.frames_accuracy),
            (2.5, FramesFormat::Png, FramesAccuracy::Keyframe)
        );
        for (k, v) in [
            ("frames_every", "0"),
            ("frames_every", "abc"),
            ("outputs", "gif"),
            ("frames_format", "bmp"),
            ("frames_accuracy", "roughly"),
            ("colour", "blue"),
        ] {
            match parse_options(&q(&[(k, v)]), 10.0) {
                Err(ApiError::InvalidOption { name, .. }) => {
                    assert!(name == k || name == "query", "{k}: {name}")
                }
                other => panic!("{k}={v} accepted: {other:?}"),
            }
        }
    }
}
