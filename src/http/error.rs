//! The one table that maps every API error to its HTTP status and stable
//! code (API.md "Error codes"), rendered as RFC 9457 problem details. A 5xx
//! answer never carries internals: the full error goes to the log.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidToken(String),
    #[error("no video with that id")]
    VideoNotFound,
    #[error("the upload is larger than the {0}-byte limit")]
    UploadTooLarge(u64),
    #[error("the upload is empty")]
    EmptyUpload,
    #[error("{0}")]
    UnsupportedMedia(String),
    /// A media or worker limit: `limit` is its configuration key (the
    /// problem's `limit` field), which the message names too.
    #[error("{why}")]
    LimitExceeded { limit: String, why: String },
    #[error("option `{name}`: {why}")]
    InvalidOption { name: &'static str, why: String },
    #[error("the link's signature is invalid or has expired")]
    BadSignature,
    #[error("the requested range lies outside the {0}-byte object")]
    RangeNotSatisfiable(u64),
    #[error("{0} is not available yet")]
    NotReady(&'static str),
    #[error("only a failed video can be retried; this one is {0}")]
    NotFailed(String),
    #[error("the server is short of disk space; try again later")]
    InsufficientStorage,
    #[error("the upload was cut off before it was complete")]
    UploadInterrupted,
    #[error("{0}")]
    DirectUploadUnavailable(&'static str),
    #[error("no unfinished upload with that id")]
    UploadNotFound,
    #[error("{0}")]
    OffsetMismatch(String),
    #[error("send `Tus-Resumable: 1.0.0`: it is the tus version this server speaks")]
    TusVersion,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    #[error("no route {0}; /openapi.json lists the routes")]
    NoRoute(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("the request body arrived slower than {0} bytes per second; send it faster or in a resumable upload (tus)")]
    BodyTooSlow(u64),
    #[error("{0}")]
    OriginNotAllowed(String),
    /// Over a per-user quota: `key` names its config key; `too_large` when
    /// it is a byte quota this request's content would pass (413), else a
    /// count that frees up when something ends (422).
    #[error("{why} ({key})")]
    QuotaExceeded {
        key: &'static str,
        too_large: bool,
        why: String,
    },
    #[error("{why}; retry after {} s", retry_after_seconds(*.retry_after))]
    RateLimited { retry_after: Duration, why: String },
}

/// `Retry-After` in whole seconds, rounded up and at least 1, so a client
/// that waits that long is let through.
fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0 || wait.is_zero())
}

impl ApiError {
    /// Status, code and title: the table.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Self::InvalidToken(_) => (S::UNAUTHORIZED, "invalid-token", "Invalid or missing token"),
            Self::VideoNotFound => (S::NOT_FOUND, "video-not-found", "Video not found"),
            Self::UploadTooLarge(_) => {
                (S::PAYLOAD_TOO_LARGE, "upload-too-large", "Upload too large")
            }
            Self::EmptyUpload => (S::BAD_REQUEST, "empty-upload", "Empty upload"),
            Self::UnsupportedMedia(_) => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media",
                "Unsupported media",
            ),
            Self::LimitExceeded { .. } => {
                (S::UNPROCESSABLE_ENTITY, "limit-exceeded", "Limit exceeded")
            }
            Self::InvalidOption { .. } => (S::BAD_REQUEST, "invalid-option", "Invalid option"),
            Self::BadSignature => (S::FORBIDDEN, "bad-signature", "Bad signature"),
            Self::RangeNotSatisfiable(_) => (
                S::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                "Range not satisfiable",
            ),
            Self::NotReady(_) => (S::CONFLICT, "not-ready", "Not ready"),
            Self::NotFailed(_) => (S::CONFLICT, "not-failed", "Video has not failed"),
            Self::InsufficientStorage => (
                S::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                "Insufficient storage",
            ),
            Self::UploadInterrupted => (S::BAD_REQUEST, "upload-interrupted", "Upload interrupted"),
            Self::DirectUploadUnavailable(_) => (
                S::CONFLICT,
                "direct-upload-unavailable",
                "Direct upload unavailable",
            ),
            Self::UploadNotFound => (S::NOT_FOUND, "upload-not-found", "Upload not found"),
            Self::OffsetMismatch(_) => (S::CONFLICT, "offset-mismatch", "Offset mismatch"),
            Self::TusVersion => (
                S::PRECONDITION_FAILED,
                "invalid-option",
                "Unsupported tus version",
            ),
            Self::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
            Self::NoRoute(_) => (S::NOT_FOUND, "not-found", "Not found"),
            Self::MethodNotAllowed(_) => (
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::BodyTooSlow(_) => (S::REQUEST_TIMEOUT, "body-too-slow", "Request body too slow"),
            Self::OriginNotAllowed(_) => (S::FORBIDDEN, "origin-not-allowed", "Origin not allowed"),
            Self::QuotaExceeded { too_large, .. } => (
                if *too_large {
                    S::PAYLOAD_TOO_LARGE
                } else {
                    S::UNPROCESSABLE_ENTITY
                },
                "limit-exceeded",
                "Quota exceeded",
            ),
            Self::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: &'a str,
    /// The config key of the limit or quota a `limit-exceeded` answer is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let detail = if status.is_server_error() {
            tracing::error!(code, error = %self, "request failed");
            match &self {
                Self::Unavailable(_) => {
                    "The service is busy or starting; try again shortly.".to_string()
                }
                _ => "Something went wrong on our side; it has been logged.".to_string(),
            }
        } else {
            self.to_string()
        };
        let body = serde_json::to_vec(&Problem {
            kind: format!("https://vidmill.dev/errors/{code}"),
            title,
            status: status.as_u16(),
            detail,
            code,
            limit: match &self {
                Self::QuotaExceeded { key, .. } => Some(*key),
                Self::LimitExceeded { limit, .. } => Some(limit.as_str()),
                _ => None,
            },
        })
        .unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Self::InvalidToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            Self::RangeNotSatisfiable(len) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            Self::TusVersion => {
                headers.insert("tus-version", HeaderValue::from_static("1.0.0"));
            }
            Self::RateLimited { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_seconds(*retry_after)),
                );
            }
            Self::Unavailable(_) | Self::InsufficientStorage => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// The answer to a path no route matches.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NoRoute(uri.path().chars().take(200).collect())
}

/// The answer to a method a route does not take (axum adds `Allow`).
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{method} is not allowed on {}; the Allow header lists the methods that are",
        uri.path().chars().take(200).collect::<String>()
    ))
}

impl From<vidmill_actors::StoreError> for ApiError {
    fn from(e: vidmill_actors::StoreError) -> Self {
        match e {
            vidmill_actors::StoreError::NotFound(_) => Self::VideoNotFound,
            // The store is down or unreachable: try again, not a bug.
            vidmill_actors::StoreError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<vidmill_actors::CoreError> for ApiError {
    fn from(e: vidmill_actors::CoreError) -> Self {
        use vidmill_actors::CoreError as C;
        match e {
            C::NotFound(_) => Self::VideoNotFound,
            e @ C::WrongState {
                wanted: vidmill_actors::VideoState::Failed,
                ..
            } => Self::NotFailed(e.to_string()),
            C::WrongState { .. } => Self::UploadNotFound,
            e @ C::Incomplete { .. } => Self::OffsetMismatch(e.to_string()),
            C::InsufficientStorage(_) => Self::InsufficientStorage,
            C::Unavailable(m) => Self::Unavailable(m),
            other => Self::Internal(other.to_string()),
        }
    }
}
