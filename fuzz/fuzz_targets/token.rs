//! What looks at a bearer token before its signature is checked
//! (`src/http/identity.rs` `bearer`, `src/auth` `token_header`), and
//! `Authenticator::verify` behind them with an HS256 secret (no JWKS, so no
//! I/O). No input may be accepted: the fuzzer cannot know the secret.
//! Input: an `Authorization` header value.

#![no_main]

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use vidmill::auth::Authenticator;
use vidmill::fuzzing::{bearer, token_header};

const SECRET: &[u8] = b"a fuzz target's secret, 32 bytes or more";

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| Authenticator::new(Some(SECRET), None, "", "", 0).expect("authenticator"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    // The bare value is a token too: `access_token` in a query reaches
    // `verify` without the scheme.
    let text = std::str::from_utf8(data).ok();
    for token in [bearer(&headers), text].into_iter().flatten() {
        if let Ok(h) = token_header(token) {
            assert!(h.crit.is_none(), "crit accepted");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let verified = runtime.block_on(authenticator().verify(token));
        assert!(verified.is_err(), "a forged token was accepted: {token:?}");
    }
});
