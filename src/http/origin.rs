//! Which web pages may open a WebSocket here. Browsers send cookies and
//! query tokens with a WebSocket from any page, and the same-origin policy
//! does not cover WebSockets, so the upgrade checks `Origin`: the server's
//! own origin (the `Host` the request came to, or `server.public_url`) and
//! those in `server.allowed_origins` are accepted. A request without
//! `Origin` comes from no browser page (a CLI, a server) and is accepted.

use axum::http::{header, HeaderMap};

use super::error::ApiError;
use crate::app::App;

/// Accepts the request when its `Origin` may open a WebSocket here.
pub fn check(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default().trim();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let config = &app.config.server;
    if allowed(origin, host, &app.public_url, &config.allowed_origins) {
        return Ok(());
    }
    Err(ApiError::OriginNotAllowed(format!(
        "pages from {} may not open WebSockets here; list the origin in server.allowed_origins",
        origin.chars().take(200).collect::<String>()
    )))
}

/// The rule, apart from the request: same host as the request or the
/// public URL, or listed.
fn allowed(origin: &str, host: &str, public_url: &str, listed: &[String]) -> bool {
    let Some(origin) = normalize(origin) else {
        // `null` (sandboxed pages, files) or garbage: no origin to trust.
        return false;
    };
    let same_host = reqwest::Url::parse(&origin)
        .ok()
        .and_then(|u| authority(&u))
        .is_some_and(|a| !host.is_empty() && a.eq_ignore_ascii_case(host));
    same_host
        || normalize(public_url).is_some_and(|own| own == origin)
        || listed
            .iter()
            .any(|l| normalize(l).is_some_and(|l| l == origin))
}

/// `scheme://host[:port]` in lower case without a default port, as
/// browsers serialize origins.
fn normalize(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

/// `host[:port]` as a `Host` header carries it (the port only when it is
/// not the scheme's default).
fn authority(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_own_origin_is_allowed() {
        assert!(allowed("http://127.0.0.1:8080", "127.0.0.1:8080", "", &[]));
        assert!(allowed("https://Video.Example", "video.example", "", &[]));
        // Behind a proxy that rewrites Host: the public URL says who we are.
        assert!(allowed(
            "https://video.example",
            "127.0.0.1:8080",
            "https://video.example/",
            &[]
        ));
    }

    #[test]
    fn listed_origins_are_allowed_and_others_refused() {
        let listed = vec!["https://app.example".to_string()];
        assert!(allowed("https://app.example", "video.example", "", &listed));
        for foreign in [
            "https://evil.example",
            "http://app.example",
            "https://app.example:8443",
            "null",
            "",
            "file://",
        ] {
            assert!(
                !allowed(foreign, "video.example", "https://video.example", &listed),
                "{foreign}"
            );
        }
    }
}
