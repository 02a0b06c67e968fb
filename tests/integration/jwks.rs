//! RS256/ES256 tokens checked against a JWKS from a file or a URL served by
//! a small HTTP server in the test: keys found by `kid`, rotation, the
//! refresh rate limit, algorithm confusion, and an identity provider that is
//! down when vidmill starts.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;

use crate::support::Server;

/// An identity provider's P-256 signing key.
struct EcKey {
    kid: String,
    secret: p256::SecretKey,
}

impl EcKey {
    fn new(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            secret: p256::SecretKey::random(&mut rand_core::OsRng),
        }
    }

    fn jwk(&self) -> serde_json::Value {
        let point = self.secret.public_key().to_encoded_point(false);
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")),
        })
    }

    fn token(&self, sub: &str) -> String {
        let der = self.secret.to_pkcs8_der().expect("pkcs8");
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            &claims(sub),
            &EncodingKey::from_ec_der(der.as_bytes()),
        )
        .expect("sign")
    }

    /// An HS256 token keyed with this key's public point, the classic
    /// algorithm-confusion forgery, naming the key or not.
    fn confused(&self, sub: &str, with_kid: bool) -> String {
        let public = self.secret.public_key().to_encoded_point(false);
        let mut header = Header::new(Algorithm::HS256);
        if with_kid {
            header.kid = Some(self.kid.clone());
        }
        jsonwebtoken::encode(
            &header,
            &claims(sub),
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .expect("sign")
    }
}

fn claims(sub: &str) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    serde_json::json!({"sub": sub, "exp": now + 300})
}

fn key_set(keys: &[&EcKey]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

/// Serves whatever key set it holds at `/jwks` and counts the fetches.
struct IdentityProvider {
    url: String,
    keys: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl IdentityProvider {
    fn start(keys: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (held, count) = (keys.clone(), fetches.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                count.fetch_add(1, Ordering::SeqCst);
                let body = held.lock().expect("keys").clone();
                let _ = (&stream).write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Self { url, keys, fetches }
    }

    fn publish(&self, keys: String) {
        *self.keys.lock().expect("keys") = keys;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn status(server: &Server, token: &str) -> u16 {
    server.get("/v1/videos", token).status
}

/// What both sources must do: accept the held key, find a rotated-in key
/// with one re-read, not re-read again right after (a key published then is
/// still refused: the rate limit, visible from outside), refuse HS256 forged
/// with a public key, and keep HS256 dev tokens working.
fn rotates(server: &Server, old: &EcKey, publish: &dyn Fn(String)) {
    assert_eq!(status(server, &old.token("carol")), 200);
    let new = EcKey::new("2026-new");
    publish(key_set(&[&new]));
    assert_eq!(status(server, &new.token("carol")), 200, "rotated key");
    assert_eq!(status(server, &old.token("carol")), 401, "removed key");
    let stranger = EcKey::new("stranger");
    publish(key_set(&[&new, &stranger]));
    for _ in 0..5 {
        assert_eq!(status(server, &stranger.token("carol")), 401);
    }
    assert_eq!(status(server, &new.token("carol")), 200);
    assert_eq!(status(server, &new.confused("carol", true)), 401);
    assert_eq!(status(server, &new.confused("carol", false)), 401);
    assert_eq!(
        status(server, &server.token("dave")),
        200,
        "HS256 still works"
    );
}

#[test]
fn keys_come_from_a_jwks_url_and_rotate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = EcKey::new("2026-old");
    let idp = IdentityProvider::start(key_set(&[&old]));
    let server = Server::start_with_env(dir.path(), "", &[("VIDMILL__AUTH__JWKS_URL", &idp.url)]);
    // The first read happens in the background after the start; a token
    // arriving before it ends waits for it rather than failing.
    assert_eq!(status(&server, &old.token("carol")), 200);
    rotates(&server, &old, &|keys| idp.publish(keys));
    assert_eq!(idp.fetches(), 2, "the first read and one for the rotation");
}

#[test]
fn keys_come_from_a_jwks_file_and_rotate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    let old = EcKey::new("2026-old");
    std::fs::write(&path, key_set(&[&old])).expect("write");
    let server = Server::start_with_env(
        dir.path(),
        "",
        &[("VIDMILL__AUTH__JWKS_PATH", &path.display().to_string())],
    );
    rotates(&server, &old, &|keys| {
        std::fs::write(&path, keys).expect("write")
    });
}

#[test]
fn an_unreachable_identity_provider_does_not_stop_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nobody listens on: bound, then closed.
    let url = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/jwks", l.local_addr().expect("addr"))
    };
    let server = Server::start_with_env(dir.path(), "", &[("VIDMILL__AUTH__JWKS_URL", &url)]);
    assert_eq!(server.get("/healthz", "").status, 200);
    let r = server.get("/v1/videos", &EcKey::new("k1").token("carol"));
    assert_eq!((r.status, r.code().as_str()), (401, "invalid-token"));
    assert_eq!(
        status(&server, &server.token("dave")),
        200,
        "HS256 still works"
    );
}

/// An RS256 token from the committed test key (fixtures/README.md).
fn rs256(kid: Option<&str>, sub: &str) -> String {
    let key = EncodingKey::from_rsa_der(include_bytes!("fixtures/rsa-test-private.der"));
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, &claims(sub), &key).expect("sign")
}

#[test]
fn rs256_verifies_and_hs256_keyed_with_the_rsa_public_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    let mut rsa: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/rsa-test-jwk.json")).expect("jwk");
    rsa["kid"] = "rsa-1".into();
    let ec = EcKey::new("ec-1");
    let set = serde_json::json!({"keys": [rsa, ec.jwk()]});
    std::fs::write(&path, set.to_string()).expect("write");
    let server = Server::start_with_env(
        dir.path(),
        "",
        &[("VIDMILL__AUTH__JWKS_PATH", &path.display().to_string())],
    );
    assert_eq!(status(&server, &rs256(Some("rsa-1"), "erin")), 200);
    // The public key as an HMAC secret: the classic RS/HS confusion.
    let public_pem = include_bytes!("fixtures/rsa-test-public.pem");
    for kid in [Some("rsa-1"), None] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(String::from);
        let forged = jsonwebtoken::encode(
            &header,
            &claims("erin"),
            &EncodingKey::from_secret(public_pem),
        )
        .expect("sign");
        let r = server.get("/v1/videos", &forged);
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "invalid-token"),
            "{kid:?}"
        );
    }
    assert_eq!(status(&server, &rs256(None, "erin")), 401, "no kid");
    assert_eq!(
        status(&server, &rs256(Some("ec-1"), "erin")),
        401,
        "another key's kid"
    );
}
