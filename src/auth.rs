//! Bearer-token authentication (API.md "Authentication and isolation").
//!
//! HS256 tokens are checked with the configured secret; RS256 and ES256
//! tokens with keys from a JWKS file, picked by `kid` and re-read (at most
//! once every 30 s) when a token names a key it does not know. The
//! algorithm always comes from the key, never from the token header: `none`
//! and HS/RS confusion are rejected. `sub` and `exp` are required, `nbf` is
//! honoured, `iss` and `aud` are checked when configured.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Refresh the JWKS at most this often when unknown key ids arrive, so a
/// stream of bad tokens cannot turn into a stream of key fetches.
const JWKS_REFRESH_EVERY: Duration = Duration::from_secs(30);

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

struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    /// When an unknown key id last made us re-read the JWKS.
    refreshed_at: Option<Instant>,
}

pub struct Authenticator {
    hs256: Option<(EncodingKey, DecodingKey)>,
    jwks_path: Option<PathBuf>,
    keys: Mutex<Keys>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("jwks_path", &self.jwks_path)
            .finish_non_exhaustive()
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The keys of a JWKS document that vidmill accepts, with the algorithm
/// each key dictates.
fn parse_jwks(text: &str) -> Result<HashMap<String, (DecodingKey, Algorithm)>, AuthError> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| AuthError(format!("JWKS: {e}")))?;
    let mut keys = HashMap::new();
    for jwk in set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            keys.insert(kid, (key, alg));
        }
    }
    Ok(keys)
}

impl Authenticator {
    pub fn new(
        hs256_secret: Option<&[u8]>,
        jwks_path: Option<PathBuf>,
        issuer: &str,
        audience: &str,
        leeway: u64,
    ) -> Result<Self, AuthError> {
        let auth = Self {
            hs256: hs256_secret.map(|s| (EncodingKey::from_secret(s), DecodingKey::from_secret(s))),
            jwks_path,
            keys: Mutex::new(Keys {
                by_kid: HashMap::new(),
                refreshed_at: None,
            }),
            issuer: non_empty(issuer),
            audience: non_empty(audience),
            leeway,
        };
        if auth.jwks_path.is_some() {
            auth.reload_jwks()?;
        }
        Ok(auth)
    }

    fn reload_jwks(&self) -> Result<(), AuthError> {
        let Some(path) = &self.jwks_path else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError(format!("{}: {e}", path.display())))?;
        let by_kid = parse_jwks(&text)?;
        if let Ok(mut keys) = self.keys.lock() {
            keys.by_kid = by_kid;
        }
        Ok(())
    }

    fn jwks_key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        let lookup = |s: &Self| s.keys.lock().ok().and_then(|k| k.by_kid.get(kid).cloned());
        if let Some(found) = lookup(self) {
            return Some(found);
        }
        // The first unknown key after a quiet spell triggers one re-read
        // (a rotation); a flood of unknown keys gets one per interval.
        let may_refresh = self
            .keys
            .lock()
            .map(|mut k| {
                let due = k
                    .refreshed_at
                    .is_none_or(|t| t.elapsed() >= JWKS_REFRESH_EVERY);
                if due {
                    k.refreshed_at = Some(Instant::now());
                }
                due
            })
            .unwrap_or(false);
        if may_refresh && self.jwks_path.is_some() {
            if let Err(e) = self.reload_jwks() {
                tracing::warn!(error = %e, "could not re-read the JWKS");
            }
            return lookup(self);
        }
        None
    }

    /// Checks a bearer token and says who it belongs to.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError(format!("malformed token: {e}")))?;
        let (key, alg) = match (&header.kid, header.alg) {
            (Some(kid), _) if self.jwks_path.is_some() => self
                .jwks_key(kid)
                .ok_or_else(|| AuthError(format!("unknown signing key `{kid}`")))?,
            (_, Algorithm::HS256) => match &self.hs256 {
                Some((_, key)) => (key.clone(), Algorithm::HS256),
                None => return Err(AuthError("HS256 tokens are not accepted".into())),
            },
            (_, other) => {
                return Err(AuthError(format!(
                    "{other:?} tokens must name their key (kid)"
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

    #[test]
    fn a_minted_token_verifies() {
        let a = auth();
        let t = a
            .mint("alice", Duration::from_secs(60), Some("a@example.org"))
            .expect("mint");
        assert_eq!(
            a.verify(&t),
            Ok(Identity {
                sub: "alice".into(),
                email: Some("a@example.org".into())
            })
        );
    }

    #[test]
    fn bad_tokens_are_rejected() {
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
            assert!(a.verify(&t).is_err(), "{name} accepted");
        }
    }

    #[test]
    fn issuer_and_audience_are_checked_when_set() {
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
        assert!(a.verify(&good).is_ok());
        assert!(a.verify(&wrong_iss).is_err());
        assert!(a.verify(&wrong_aud).is_err());
    }

    mod jwks {
        use super::*;
        use base64::Engine;
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::EncodePrivateKey;

        pub struct EcKey {
            pub kid: String,
            secret: p256::SecretKey,
        }

        impl EcKey {
            pub fn new(kid: &str) -> Self {
                Self {
                    kid: kid.into(),
                    secret: p256::SecretKey::random(&mut rand_core::OsRng),
                }
            }

            pub fn jwk(&self) -> serde_json::Value {
                let point = self.secret.public_key().to_encoded_point(false);
                let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
                serde_json::json!({
                    "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
                    "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")),
                })
            }

            pub fn sign(&self, claims: serde_json::Value) -> String {
                let der = self.secret.to_pkcs8_der().expect("pkcs8");
                let mut header = Header::new(Algorithm::ES256);
                header.kid = Some(self.kid.clone());
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(der.as_bytes()))
                    .expect("sign")
            }

            /// An HS256 token keyed with this key's public point: the
            /// classic algorithm-confusion forgery.
            pub fn confused(&self, claims: serde_json::Value, with_kid: bool) -> String {
                let public = self.secret.public_key().to_encoded_point(false);
                let mut header = Header::new(Algorithm::HS256);
                if with_kid {
                    header.kid = Some(self.kid.clone());
                }
                jsonwebtoken::encode(
                    &header,
                    &claims,
                    &EncodingKey::from_secret(public.as_bytes()),
                )
                .expect("sign")
            }
        }

        pub fn write(path: &std::path::Path, keys: &[&EcKey]) {
            let set = serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
            std::fs::write(path, set.to_string()).expect("write jwks");
        }
    }

    #[test]
    fn es256_keys_come_from_the_jwks_by_kid_and_rotate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        let old = jwks::EcKey::new("2026-old");
        jwks::write(&path, &[&old]);
        let a = Authenticator::new(Some(SECRET), Some(path.clone()), "", "", 0).expect("auth");
        let claims = serde_json::json!({"sub": "carol", "exp": now() + 100});
        assert_eq!(
            a.verify(&old.sign(claims.clone())).map(|i| i.sub),
            Ok("carol".into())
        );
        // The identity provider rotates: the new key is found by re-reading.
        let new = jwks::EcKey::new("2026-new");
        jwks::write(&path, &[&new]);
        assert_eq!(
            a.verify(&new.sign(claims.clone())).map(|i| i.sub),
            Ok("carol".into())
        );
        // Right after, another unknown kid does not cause another read.
        let stranger = jwks::EcKey::new("stranger");
        jwks::write(&path, &[&new, &stranger]);
        assert!(
            a.verify(&stranger.sign(claims.clone())).is_err(),
            "refresh is rate-limited"
        );
        // HS256 keyed with the public key, with or without the kid: refused.
        assert!(a.verify(&new.confused(claims.clone(), true)).is_err());
        assert!(a.verify(&new.confused(claims, false)).is_err());
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
