//! RS256/ES256 verification keys from a JWKS file or URL, held by `kid` and
//! re-read when a token names a key the cache does not hold (rotation).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::AuthError;

/// Re-read the JWKS at most this often because of unknown key ids, so a
/// stream of bad tokens cannot turn into a stream of key fetches.
pub const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(30);

/// A JWKS larger than this is not a key set.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// How long one fetch of a JWKS URL may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub type Key = (DecodingKey, Algorithm);

/// Where the key set comes from.
#[derive(Debug)]
pub enum KeySource {
    File(PathBuf),
    Url {
        url: reqwest::Url,
        client: reqwest::Client,
    },
}

impl KeySource {
    /// A URL source with a client that refuses to leave HTTPS when the URL
    /// is HTTPS (plain HTTP is only accepted for loopback by the config).
    pub fn url(url: &str) -> Result<Self, AuthError> {
        let url = reqwest::Url::parse(url).map_err(|e| AuthError(format!("JWKS URL: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // HTTPS may redirect (to HTTPS only); plain HTTP, allowed only
            // to this machine, must not be sent anywhere else.
            .redirect(if url.scheme() == "https" {
                reqwest::redirect::Policy::limited(3)
            } else {
                reqwest::redirect::Policy::none()
            })
            .https_only(url.scheme() == "https")
            .user_agent(concat!("vidmill/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuthError(format!("JWKS client: {e}")))?;
        Ok(Self::Url { url, client })
    }

    fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Url { url, .. } => url.to_string(),
        }
    }

    fn read_file(path: &PathBuf) -> Result<String, AuthError> {
        std::fs::read_to_string(path).map_err(|e| AuthError(format!("{}: {e}", path.display())))
    }

    async fn read(&self) -> Result<String, AuthError> {
        match self {
            Self::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || Self::read_file(&path))
                    .await
                    .map_err(|e| AuthError(e.to_string()))?
            }
            Self::Url { url, client } => fetch(client, url)
                .await
                .map_err(|e| AuthError(format!("{url}: {e}"))),
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &reqwest::Url) -> Result<String, String> {
    let mut response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "not UTF-8 text".to_string())
}

/// The keys of a JWKS document that vidmill accepts, with the algorithm
/// each key dictates. Keys without a `kid`, or of other types, are skipped.
/// Public for the fuzz target (`vidmill::fuzzing::parse_jwks`).
pub fn parse(text: &str) -> Result<HashMap<String, Key>, AuthError> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| AuthError(format!("JWKS: {e}")))?;
    // A JWK Set is an object with a `keys` array (RFC 7517 section 5).
    // Deserialized directly, serde would also take an array as the set's
    // fields in order (`[[]]`: no keys), so an answer that is no key set
    // at all would replace the held keys instead of failing the read.
    if !doc.get("keys").is_some_and(serde_json::Value::is_array) {
        return Err(AuthError(
            "JWKS: not a JWK Set (a JSON object with a `keys` array)".into(),
        ));
    }
    let set: JwkSet = serde_json::from_value(doc).map_err(|e| AuthError(format!("JWKS: {e}")))?;
    let mut keys = HashMap::new();
    for jwk in set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        // A key published for encryption does not sign tokens.
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
        {
            continue;
        }
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

/// The current key set and the rules for re-reading it.
#[derive(Debug)]
pub struct KeyCache {
    source: KeySource,
    keys: RwLock<HashMap<String, Key>>,
    /// Held while a refresh runs, so concurrent requests naming a new key
    /// wait for one read instead of each starting their own; remembers when
    /// the last refresh started.
    refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl KeyCache {
    /// A cache over `source`. A file is read now (a bad file stops the
    /// start); a URL is fetched by [`KeyCache::refresh`], which the server
    /// calls once it runs, so an unreachable identity provider does not keep
    /// vidmill from starting.
    pub fn new(source: KeySource) -> Result<Self, AuthError> {
        let keys = match &source {
            KeySource::File(path) => parse(&KeySource::read_file(path)?)?,
            KeySource::Url { .. } => HashMap::new(),
        };
        Ok(Self {
            source,
            keys: RwLock::new(keys),
            refresh: tokio::sync::Mutex::new(None),
        })
    }

    fn get(&self, kid: &str) -> Option<Key> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    /// How many keys are held.
    pub fn held(&self) -> usize {
        self.keys.read().map(|k| k.len()).unwrap_or(0)
    }

    /// Re-reads the source now (the start and the periodic refresh that
    /// lets removed keys go). Keeps the old keys when the read fails. It
    /// does not count against the unknown-key rate limit: that limit bounds
    /// what callers can cause, and a rotation right after a routine read
    /// must still be found.
    pub async fn refresh(&self) -> Result<usize, AuthError> {
        let _one_at_a_time = self.refresh.lock().await;
        self.reload().await
    }

    async fn reload(&self) -> Result<usize, AuthError> {
        let keys = parse(&self.source.read().await?)?;
        let n = keys.len();
        if let Ok(mut held) = self.keys.write() {
            *held = keys;
        }
        Ok(n)
    }

    /// The key named `kid`. An unknown key id after a quiet spell causes one
    /// re-read (a rotation); within [`REFRESH_AT_MOST_EVERY`] of the last one
    /// it is simply unknown.
    pub async fn key(&self, kid: &str) -> Option<Key> {
        if let Some(key) = self.get(kid) {
            return Some(key);
        }
        let mut last = self.refresh.lock().await;
        // Another request may have re-read the set while this one waited.
        if let Some(key) = self.get(kid) {
            return Some(key);
        }
        if last.is_some_and(|t| t.elapsed() < REFRESH_AT_MOST_EVERY) {
            return None;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.reload().await {
            tracing::warn!(source = %self.source.describe(), error = %e, "could not re-read the JWKS");
        }
        self.get(kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_JWK: &str = include_str!("../../tests/integration/fixtures/rsa-test-jwk.json");

    fn set_with(kid: &str, key_use: &str) -> String {
        let mut jwk: serde_json::Value = serde_json::from_str(RSA_JWK).expect("jwk");
        jwk["kid"] = kid.into();
        jwk["use"] = key_use.into();
        serde_json::json!({ "keys": [jwk] }).to_string()
    }

    #[test]
    fn only_signing_keys_with_an_id_are_kept() {
        assert_eq!(parse(&set_with("k1", "sig")).expect("parse").len(), 1);
        assert!(parse(&set_with("k1", "enc")).expect("parse").is_empty());
        let mut no_kid: serde_json::Value = serde_json::from_str(RSA_JWK).expect("jwk");
        no_kid["use"] = "sig".into();
        let set = serde_json::json!({ "keys": [no_kid] }).to_string();
        assert!(parse(&set).expect("parse").is_empty());
    }

    /// Found by the `jwks` fuzz target: serde took a JSON array as the
    /// set's fields in order, so `[[]]` read as a set of no keys.
    #[test]
    fn fuzz_a_json_array_is_not_a_key_set() {
        for text in ["\n\n [[]]\r", "[[]]", "[]", "{}", r#"{"keys": {}}"#, "null"] {
            assert!(parse(text).is_err(), "{text:?} read as a key set");
        }
        let mut jwk: serde_json::Value = serde_json::from_str(RSA_JWK).expect("jwk");
        jwk["kid"] = "k1".into();
        let array = serde_json::json!([[jwk]]).to_string();
        assert!(parse(&array).is_err(), "{array}");
        assert!(parse(r#"{"keys": []}"#).expect("an empty set").is_empty());
    }
}
