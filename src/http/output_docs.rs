//! OpenAPI descriptions of the three output paths. One handler serves them
//! on one route (`/v1/videos/{id}/{output}`), but an OpenAPI path item is
//! one concrete path, so a macro writes the same description three times
//! with each output's name and content type.

use super::openapi as doc;

macro_rules! output_doc {
    ($name:ident, $methods:tt, $path:literal, $content_type:literal, $summary:literal, $description:literal) => {
        #[doc = $summary]
        ///
        #[doc = $description]
        #[utoipa::path(
            method $methods,
            path = $path,
            tag = "outputs",
            params(
                ("id" = String, Path, description = "Video id"),
                ("Range" = Option<String>, Header, nullable = false, description = "`bytes=a-b`, `a-` or `-n`: \
                    answered `206`. Syntactically invalid, or more than one range: ignored, `200` full body"),
                ("If-Range" = Option<String>, Header, nullable = false, description = "The current ETag or \
                    `Last-Modified` date: the range is honoured; anything else: `200` full body"),
                ("If-None-Match" = Option<String>, Header, nullable = false, description = "Matching ETag (or `*`): `304`"),
            ),
            responses(
                (status = 200, description = "The whole output", content(($content_type)), headers(
                    ("Accept-Ranges" = String, description = "`bytes`"),
                    ("ETag" = String, description = "Strong ETag"),
                    ("Last-Modified" = String, description = "HTTP date"),
                    ("Content-Length" = u64, description = "Bytes in this answer"),
                )),
                (status = 206, description = "The requested range", content(($content_type)), headers(
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
                (status = 409, description = "`not-ready`: the output does not exist yet",
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
        pub fn $name() {}
    };
}

output_doc!(
    video_mp4,
    (get, head),
    "/v1/videos/{id}/video.mp4",
    "video/mp4",
    "The converted MP4",
    "With byte ranges; `HEAD` answers the same headers without a body. Auth: a bearer token, \
     or the signed query (`?exp=…&sig=…`) of the video's `outputs.mp4.url`."
);

output_doc!(
    frames_zip,
    (get, head),
    "/v1/videos/{id}/frames.zip",
    "application/zip",
    "The frames archive",
    "A ZIP of `frames/000001.jpg` (or `.png`), … plus `index.csv`, with byte ranges; `HEAD` \
     answers the same headers without a body. Auth: a bearer token, or the signed query of the \
     video's `outputs.frames.url`."
);

output_doc!(
    poster_jpg,
    (get),
    "/v1/videos/{id}/poster.jpg",
    "image/jpeg",
    "The poster image",
    "One representative frame. Auth: a bearer token, or the signed query of the video's \
     `outputs.poster.url`."
);
