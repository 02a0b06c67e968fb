//! The caller's identity from `Authorization: Bearer`, or from the
//! `access_token` query parameter where API.md allows it (WebSockets).

use std::collections::HashMap;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::error::ApiError;
use crate::app::App;
use crate::auth::Identity;

/// The bearer token in a request's headers, if it has one. The scheme is
/// matched without regard to case (RFC 9110 section 11.1): `bearer` and
/// `BEARER` are the same scheme.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `access_token` from the query string.
pub fn query_token(parts: &Parts) -> Option<String> {
    let Query(mut query) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri).ok()?;
    query.remove("access_token")
}

/// The client a request came from (see [`crate::connections::client_of`]),
/// when it came over a connection the server accepted.
pub fn client(peer: Option<&ConnectInfo<SocketAddr>>) -> Option<IpAddr> {
    peer.map(|c| crate::connections::client_of(c.0.ip()))
}

/// The caller behind `token` (`missing` says how to send one), within
/// their request rate. A client address that has failed authentication
/// too often is refused before its token is looked at.
pub async fn authenticate(
    app: &App,
    client: Option<IpAddr>,
    token: Option<&str>,
    missing: &str,
) -> Result<Identity, ApiError> {
    if let Some(client) = client {
        app.quotas.refuse_blocked(client)?;
    }
    let verified = match token {
        Some(token) => app
            .auth
            .verify(token)
            .await
            .map_err(|e| ApiError::InvalidToken(e.to_string())),
        None => Err(ApiError::InvalidToken(missing.into())),
    };
    let who = match (verified, client) {
        (Ok(who), _) => who,
        (Err(e), Some(client)) => {
            app.quotas.auth_failed(client)?;
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    app.quotas.request(&who.sub)?;
    Ok(who)
}

impl FromRequestParts<App> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).map(String::from);
        authenticate(
            app,
            client(parts.extensions.get()),
            token.as_deref(),
            "send `Authorization: Bearer <token>`",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().expect("header value"));
        h
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR   abc "] {
            assert_eq!(bearer(&with(value)), Some("abc"), "{value}");
        }
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_no_bearer_token() {
        for value in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "Token abc"] {
            assert_eq!(bearer(&with(value)), None, "{value}");
        }
    }
}
