//! The JWKS document parser (`src/auth/jwks.rs`) on any text an identity
//! provider's URL or a key file could hold: it answers keys or an error,
//! never panics, and keeps only what verification may use: RSA keys as
//! RS256 and P-256 keys as ES256, each from an entry of its own.
//! Input: the document's bytes (UTF-8, as the fetch and the file read
//! insist on).

#![no_main]

use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use vidmill::fuzzing::parse_jwks;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(keys) = parse_jwks(text) else {
        return;
    };
    // Every key kept came from an object of its own (a `kid` may be
    // spelt with escapes, a brace may not).
    assert!(keys.len() < text.matches('{').count(), "{text}");
    for (kid, (_, alg)) in &keys {
        assert!(
            matches!(alg, Algorithm::RS256 | Algorithm::ES256),
            "{kid}: {alg:?} from {text}"
        );
    }
});
