//! Bearer-token authentication (API.md "Authentication and isolation").
//!
//! HS256 tokens are checked with the configured secret; RS256 and ES256
//! tokens with keys from a JWKS file or URL, picked by `kid` and re-read
//! (at most once every 30 s) when a token names a key it does not know. The
//! algorithm always comes from the key, never from the token header: `none`
//! and HS/RS confusion are rejected. `sub` and `exp` are required, `nbf` is
//! honoured, `iss` and `aud` are checked when configured.

pub(crate) mod jwks;

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
pub use jwks::{KeyCache, KeySource};
use serde::{Deserialize, Serialize};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub sub: String,
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

pub struct Authenticator {
    hs256: Option<(EncodingKey, DecodingKey)>,
    jwks: Option<KeyCache>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// A token's header, read before any key is chosen or signature checked:
/// everything an unauthenticated caller controls is looked at here first.
/// Public for the fuzz target (through [`crate::fuzzing`]).
pub fn token_header(token: &str) -> Result<Header, AuthError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| AuthError(format!("malformed token: {e}")))?;
    // `crit` lists extensions the recipient must understand or refuse the
    // token (RFC 7515 section 4.1.11); vidmill understands none.
    if let Some(crit) = &header.crit {
        return Err(AuthError(format!(
            "the token's `crit` header names extensions this server does not support: {crit:?}"
        )));
    }
    Ok(header)
}

impl Authenticator {
    pub fn new(
        hs256_secret: Option<&[u8]>,
        jwks: Option<KeySource>,
        issuer: &str,
        audience: &str,
        leeway: u64,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            hs256: hs256_secret.map(|s| (EncodingKey::from_secret(s), DecodingKey::from_secret(s))),
            jwks: jwks.map(KeyCache::new).transpose()?,
            issuer: non_empty(issuer),
            audience: non_empty(audience),
            leeway,
        })
    }

    /// The JWKS key cache, when RS256/ES256 keys are configured.
    pub fn jwks(&self) -> Option<&KeyCache> {
        self.jwks.as_ref()
    }

    /// Checks a bearer token and says who it belongs to.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = token_header(token)?;
        // HS256 is checked with the shared secret whatever `kid` it names
        // (its key is never in a JWKS); everything else by its `kid`.
        let (key, alg) = match (&header.kid, &self.jwks) {
            _ if header.alg == Algorithm::HS256 => match &self.hs256 {
                Some((_, key)) => (key.clone(), Algorithm::HS256),
                None => return Err(AuthError("HS256 tokens are not accepted".into())),
            },
            (Some(kid), Some(jwks)) => jwks
                .key(kid)
                .await
                .ok_or_else(|| AuthError(format!("unknown signing key `{kid}`")))?,
            (_, None) => {
                return Err(AuthError(format!(
                    "{:?} tokens are not accepted: no JWKS is configured",
                    header.alg
                )))
            }
            (None, Some(_)) => {
                return Err(AuthError(format!(
                    "{:?} tokens must name their key (kid)",
                    header.alg
                )))
            }
        };
        if header.alg != alg {
            return Err(AuthError(format!(
                "the key is for {alg:?}, the token says {:?}",
                header.alg
            )));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| AuthError(format!("token rejected: {e}")))?;
        if data.claims.sub.is_empty() {
            return Err(AuthError("token has an empty `sub`".into()));
        }
        Ok(Identity {
            sub: data.claims.sub,
            email: data.claims.email,
        })
    }

    /// Mints an HS256 token (for `vidmill token` and tests).
    pub fn mint(&self, sub: &str, ttl: Duration, email: Option<&str>) -> Result<String, AuthError> {
        let (key, _) = self
            .hs256
            .as_ref()
            .ok_or_else(|| AuthError("no HS256 secret configured".into()))?;
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| AuthError(e.to_string()))?
            .as_secs()
            + ttl.as_secs();
        let claims = Claims {
            sub: sub.into(),
            exp,
            email: email.map(String::from),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| AuthError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-test-secret-of-enough-length";

    fn auth() -> Authenticator {
        Authenticator::new(Some(SECRET), None, "", "", 0).expect("auth")
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("encode")
    }

    #[tokio::test]
    async fn a_minted_token_verifies() {
        let a = auth();
        let t = a
            .mint("alice", Duration::from_secs(60), Some("a@example.org"))
            .expect("mint");
        assert_eq!(
            a.verify(&t).await,
            Ok(Identity {
                sub: "alice".into(),
                email: Some("a@example.org".into())
            })
        );
    }

    #[tokio::test]
    async fn bad_tokens_are_rejected() {
        let a = auth();
        let expired = token(serde_json::json!({"sub": "a", "exp": now() - 100}));
        let not_yet = token(serde_json::json!({"sub": "a", "exp": now() + 100, "nbf": now() + 50}));
        let no_sub = token(serde_json::json!({"exp": now() + 100}));
        let no_exp = token(serde_json::json!({"sub": "a"}));
        let other_key = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a", "exp": now() + 100}),
            &EncodingKey::from_secret(b"another-secret-entirely"),
        )
        .expect("encode");
        // alg none: header {"alg":"none"}, claims, empty signature.
        let b64 = |s: &str| {
            use base64_engine::*;
            encode(s.as_bytes())
        };
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"a","exp":{}}}"#, now() + 100))
        );
        for (name, t) in [
            ("expired", expired),
            ("nbf", not_yet),
            ("no sub", no_sub),
            ("no exp", no_exp),
            ("wrong key", other_key),
            ("alg none", none),
            ("garbage", "abc.def".into()),
        ] {
            assert!(a.verify(&t).await.is_err(), "{name} accepted");
        }
    }

    #[tokio::test]
    async fn a_token_with_critical_extensions_is_refused() {
        let a = auth();
        let claims = serde_json::json!({"sub": "a", "exp": now() + 100});
        for crit in [vec!["b64".to_string()], vec!["exp".to_string()], vec![]] {
            let mut header = Header::new(Algorithm::HS256);
            header.crit = Some(crit.clone());
            let t = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET))
                .expect("encode");
            let err = a.verify(&t).await.expect_err("crit accepted");
            assert!(err.0.contains("crit"), "{crit:?}: {err}");
        }
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_set() {
        let a = Authenticator::new(Some(SECRET), None, "https://id", "vidmill", 0).expect("auth");
        let good = token(
            serde_json::json!({"sub": "a", "exp": now() + 100, "iss": "https://id", "aud": "vidmill"}),
        );
        let wrong_iss = token(
            serde_json::json!({"sub": "a", "exp": now() + 100, "iss": "https://evil", "aud": "vidmill"}),
        );
        let wrong_aud = token(
            serde_json::json!({"sub": "a", "exp": now() + 100, "iss": "https://id", "aud": "other"}),
        );
        assert!(a.verify(&good).await.is_ok());
        assert!(a.verify(&wrong_iss).await.is_err());
        assert!(a.verify(&wrong_aud).await.is_err());
    }

    #[tokio::test]
    async fn hs256_with_a_kid_is_checked_with_the_secret_beside_a_jwks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        let mut jwk: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/integration/fixtures/rsa-test-jwk.json"
        ))
        .expect("jwk");
        jwk["kid"] = "rsa-1".into();
        std::fs::write(&path, serde_json::json!({ "keys": [jwk] }).to_string()).expect("write");
        let a =
            Authenticator::new(Some(SECRET), Some(KeySource::File(path)), "", "", 0).expect("auth");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("some-kid".into());
        let t = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": "a", "exp": now() + 100}),
            &EncodingKey::from_secret(SECRET),
        )
        .expect("encode");
        assert_eq!(a.verify(&t).await.map(|i| i.sub), Ok("a".into()));
    }

    /// Minimal URL-safe base64 without padding, for hand-made tokens.
    mod base64_engine {
        pub fn encode(input: &[u8]) -> String {
            const T: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in input.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
                for i in 0..=chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
