//! The caller's identity from `Authorization: Bearer`, or from the
//! `access_token` query parameter where API.md allows it (WebSockets).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::error::ApiError;
use crate::app::App;
use crate::auth::Identity;

/// The bearer token in a request's headers, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `access_token` from the query string.
pub fn query_token(parts: &Parts) -> Option<String> {
    let Query(mut query) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri).ok()?;
    query.remove("access_token")
}

impl FromRequestParts<App> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::InvalidToken("send `Authorization: Bearer <token>`".into()))?;
        app.auth
            .verify(token)
            .await
            .map_err(|e| ApiError::InvalidToken(e.to_string()))
    }
}
