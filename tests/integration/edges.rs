//! The smaller defects of issue 10 against the real server, one test each:
//! empty keys refused at start, link lifetimes capped, the disk floor held
//! while bytes arrive, long file names, `since` past i64, concurrent
//! readiness checks, `complete` beside a running PATCH, `crit` and the
//! bearer scheme, problem bodies for 404 and 405, and WebSocket origins.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;

use crate::support::*;

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("Authorization", format!("Bearer {token}"))]
}

/// `vidmill serve` on `config` is expected to refuse to start: its stderr.
fn refused_start(dir: &Path, auth: &str) -> String {
    let config = write_config(dir, auth, "");
    let out = Command::new(env!("CARGO_BIN_EXE_vidmill"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("VIDMILL_LOG", "error")
        .output()
        .expect("run");
    assert!(!out.status.success(), "started with {auth:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "listened with {auth:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_empty_key_stops_the_start_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, blank) in ["", "  \n\t\n"].iter().enumerate() {
        let key = dir.path().join(format!("key-{i}"));
        std::fs::write(&key, blank).expect("key");
        let err = refused_start(
            &dir.path().join(format!("file-{i}")),
            &format!("hs256_secret_file = \"{}\"", key.display()),
        );
        assert!(
            err.contains("auth.hs256_secret_file") && err.contains("empty"),
            "{err}"
        );
    }
    // A generated key a failed write left empty.
    let generated = dir.path().join("generated");
    std::fs::create_dir_all(generated.join("data")).expect("dir");
    std::fs::write(generated.join("data/hs256.secret"), b"").expect("empty key");
    let err = refused_start(&generated, "");
    assert!(
        err.contains("hs256.secret") && err.contains("empty"),
        "{err}"
    );
}

/// `exp` of a signed URL.
fn exp_of(url: &str) -> u64 {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix("exp="))
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("no exp in {url}"))
}

#[test]
fn a_signed_link_never_outlives_the_configured_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        "[signing]\nttl_seconds = 3600\nmax_ttl_seconds = 3600\n",
    );
    let token = server.token("alice");
    let created = server.upload(
        &token,
        "filename=a.webm&outputs=mp4",
        &webm(dir.path(), 2.0),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["id"].as_str().expect("id").to_string();
    let ready = server.wait_for(&token, &id, |v| v["state"] == "ready");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let exp = exp_of(ready["outputs"]["mp4"]["url"].as_str().expect("url"));
    // ttl + 2 s of video would be 3602 s; the cap holds it to 3600.
    assert!(exp <= now + 3600, "link lives {} s", exp - now);
}

fn free_disk(dir: &Path) -> u64 {
    let s = rustix::fs::statvfs(dir).expect("statvfs");
    s.f_bavail * s.f_frsize
}

#[test]
fn the_disk_floor_holds_while_an_upload_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    server.stop();
    // A floor the upload crosses after about 6 MiB of its 16.
    let floor = free_disk(dir.path()) - (6 << 20);
    let server = Server::start_with_env(
        dir.path(),
        "",
        &[("VIDMILL__LIMITS__MIN_FREE_DISK_BYTES", &floor.to_string())],
    );
    let body = vec![0u8; 16 << 20];
    let head = format!(
        "POST /v1/videos?filename=a.webm HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: video/webm\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let r = server.request_while_sending(head, body);
    assert_eq!(
        (r.status, r.code().as_str()),
        (507, "insufficient-storage"),
        "{r:?}"
    );
    assert_eq!(
        server.temp_files(),
        Vec::<PathBuf>::new(),
        "no partial file"
    );
    let listed = server.get("/v1/videos", &token).json();
    assert_eq!(listed["videos"].as_array().map(Vec::len), Some(0));
}

#[test]
fn a_filename_over_255_bytes_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let long = "a".repeat(256);
    let r = server.upload(&token, &format!("filename={long}"), &webm(dir.path(), 0.5));
    assert_eq!((r.status, r.code().as_str()), (400, "invalid-option"));
    assert!(r.json()["detail"]
        .as_str()
        .is_some_and(|d| d.contains("filename")));
    let mut tus = bearer(&token);
    tus.push(("Tus-Resumable", "1.0.0".into()));
    tus.push(("Upload-Length", "100".into()));
    tus.push((
        "Upload-Metadata",
        format!(
            "filename {}",
            base64::engine::general_purpose::STANDARD.encode(&long)
        ),
    ));
    let r = server.request("POST", "/v1/uploads", &tus, b"");
    assert_eq!((r.status, r.code().as_str()), (400, "invalid-option"));
    assert_eq!(server.temp_files(), Vec::<PathBuf>::new());
    let listed = server.get("/v1/videos", &token).json();
    assert_eq!(listed["videos"].as_array().map(Vec::len), Some(0));
}

/// A WebSocket upgrade request with `extra` headers.
fn upgrade(server: &Server, path: &str, extra: &[(&str, String)]) -> Response {
    let mut headers = vec![
        ("Connection", "Upgrade".to_string()),
        ("Upgrade", "websocket".into()),
        ("Sec-WebSocket-Version", "13".into()),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".into()),
    ];
    headers.extend(extra.iter().cloned());
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", server.addr);
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    read_response(stream, false)
}

#[test]
fn a_since_past_the_largest_sequence_is_a_400_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    for since in ["9223372036854775808", "18446744073709551615"] {
        let r = upgrade(
            &server,
            &format!("/v1/videos/01JAAAAAAAAAAAAAAAAAAAAAAA/events?since={since}"),
            &bearer(&token),
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid-option"),
            "{since}"
        );
    }
}

#[test]
fn concurrent_readiness_checks_all_pass_and_no_answer_shows_a_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = std::sync::Arc::new(Server::start(dir.path(), ""));
    let checks: Vec<_> = (0..16)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || {
                (0..8)
                    .map(|_| server.request("GET", "/readyz", &[], b""))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for check in checks {
        for r in check.join().expect("thread") {
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        }
    }
    // Storage broken: 503, saying which check failed but not where.
    let objects = dir.path().join("data/objects");
    std::fs::remove_dir_all(&objects).expect("remove");
    std::fs::write(&objects, b"not a directory").expect("file");
    let r = server.request("GET", "/readyz", &[], b"");
    assert_eq!(r.status, 503);
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("storage"), "{body}");
    assert!(!body.contains(&*dir.path().to_string_lossy()), "{body}");
    assert!(!body.contains("/data"), "{body}");
}

#[test]
fn complete_on_a_running_tus_upload_leaves_its_patch_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let media = webm(dir.path(), 1.0);
    let mut create = bearer(&token);
    create.push(("Tus-Resumable", "1.0.0".into()));
    create.push(("Upload-Length", media.len().to_string()));
    let created = server.request("POST", "/v1/uploads", &create, b"");
    assert_eq!(created.status, 201, "{created:?}");
    let id = created
        .header("location")
        .and_then(|l| l.rsplit('/').next())
        .expect("id")
        .to_string();
    // A PATCH that has sent half its body and is still sending.
    let mut patch = TcpStream::connect(&server.addr).expect("connect");
    patch
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        patch,
        "PATCH /v1/uploads/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        media.len()
    )
    .expect("head");
    let half = media.len() / 2;
    patch.write_all(&media[..half]).expect("first half");
    std::thread::sleep(Duration::from_millis(300));
    let r = server.request(
        "POST",
        &format!("/v1/videos/{id}/complete"),
        &bearer(&token),
        b"",
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (409, "direct-upload-unavailable")
    );
    patch.write_all(&media[half..]).expect("second half");
    let done = read_response(patch, false);
    assert_eq!(done.status, 204, "{done:?}");
    assert_eq!(
        done.header("upload-offset"),
        Some(media.len().to_string().as_str())
    );
}

/// An HS256 token with `header` as its JOSE header.
fn token_with_header(header: serde_json::Value, sub: &str) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 300;
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(serde_json::json!({"sub": sub, "exp": exp})
            .to_string()
            .as_bytes())
    );
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

#[test]
fn crit_tokens_are_refused_and_the_bearer_scheme_ignores_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let plain = token_with_header(serde_json::json!({"alg": "HS256", "typ": "JWT"}), "alice");
    assert_eq!(server.get("/v1/videos", &plain).status, 200);
    let crit = token_with_header(
        serde_json::json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"], "exp": 1}),
        "alice",
    );
    let r = server.get("/v1/videos", &crit);
    assert_eq!((r.status, r.code().as_str()), (401, "invalid-token"));
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let r = server.request(
            "GET",
            "/v1/videos",
            &[("Authorization", format!("{scheme} {plain}"))],
            b"",
        );
        assert_eq!(r.status, 200, "{scheme}");
    }
}

#[test]
fn unknown_routes_and_methods_answer_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let r = server.request("GET", "/no/such/route", &[], b"");
    assert_eq!((r.status, r.code().as_str()), (404, "not-found"));
    let r = server.request("DELETE", "/healthz", &[], b"");
    assert_eq!((r.status, r.code().as_str()), (405, "method-not-allowed"));
    assert!(
        r.header("allow").is_some_and(|a| a.contains("GET")),
        "{r:?}"
    );
    let token = server.token("alice");
    let r = server.request("PUT", "/v1/videos", &bearer(&token), b"");
    assert_eq!((r.status, r.code().as_str()), (405, "method-not-allowed"));
}

#[test]
fn websocket_upgrades_check_the_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_env(
        dir.path(),
        "",
        &[(
            "VIDMILL__SERVER__ALLOWED_ORIGINS",
            "[\"https://app.example\"]",
        )],
    );
    let token = server.token("alice");
    let with_origin = |origin: Option<String>| {
        let mut h = bearer(&token);
        if let Some(o) = origin {
            h.push(("Origin", o));
        }
        upgrade(&server, "/v1/events", &h)
    };
    assert_eq!(with_origin(None).status, 101, "no Origin: not a browser");
    assert_eq!(
        with_origin(Some(format!("http://{}", server.addr))).status,
        101
    );
    assert_eq!(with_origin(Some("https://app.example".into())).status, 101);
    for foreign in ["https://evil.example", "null"] {
        let r = with_origin(Some(foreign.into()));
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "origin-not-allowed"),
            "{foreign}"
        );
    }
}
