//! `GET /`: the web page (`web/index.html`, built into the binary): sign in
//! with a token, upload (resumable), watch progress live, play and download.
//! Its one inline script is allowed by hash in the Content-Security-Policy,
//! so nothing else can run in the page.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

const PAGE: &str = include_str!("../../web/index.html");

/// The policy, with the hash of the page's script.
static POLICY: LazyLock<String> = LazyLock::new(|| {
    let script = PAGE
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map_or("", |(script, _)| script);
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script.as_bytes()));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
         connect-src 'self'; media-src *; img-src * data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
});

/// The web page
///
/// One HTML page; it uses only the public API with the token the user
/// enters (or passes as `#token=…`).
#[utoipa::path(
    get,
    path = "/",
    tag = "web",
    responses((status = 200, description = "The page", content_type = "text/html")),
)]
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY.as_str()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_pages_script() {
        assert!(PAGE.matches("<script>").count() == 1, "one inline script");
        let hash = POLICY
            .split("'sha256-")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .expect("hash");
        assert_eq!(hash.len(), 44, "{hash}");
        assert!(
            !POLICY.contains("'unsafe-inline'; connect")
                || POLICY.contains("style-src 'unsafe-inline'")
        );
        assert!(!POLICY.contains("script-src 'unsafe"));
    }
}
