//! tus resumable uploads at /v1/uploads: the protocol byte by byte with the
//! raw client (pieces, wrong offsets, a cut connection, a restart, bad
//! media, termination, expiry, isolation), and the stock tus-js-client
//! under Node uploading, stopping and resuming.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::support::{webm, Response, Server};

fn tus(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Authorization", format!("Bearer {token}")),
        ("Tus-Resumable", "1.0.0".into()),
    ]
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn create(server: &Server, token: &str, length: usize, meta: &str) -> Response {
    let mut h = tus(token);
    h.push(("Upload-Length", length.to_string()));
    h.push(("Upload-Metadata", meta.to_string()));
    server.request("POST", "/v1/uploads", &h, b"")
}

fn id_of(created: &Response) -> String {
    let location = created.header("location").expect("location");
    location.rsplit('/').next().expect("id").to_string()
}

fn patch(server: &Server, token: &str, id: &str, offset: usize, bytes: &[u8]) -> Response {
    let mut h = tus(token);
    h.push(("Upload-Offset", offset.to_string()));
    h.push(("Content-Type", "application/offset+octet-stream".into()));
    server.request("PATCH", &format!("/v1/uploads/{id}"), &h, bytes)
}

fn head(server: &Server, token: &str, id: &str) -> Response {
    server.request("HEAD", &format!("/v1/uploads/{id}"), &tus(token), b"")
}

fn offset(r: &Response) -> usize {
    r.header("upload-offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("no Upload-Offset: {r:?}"))
}

/// Entries under `data/partial` (unfinished uploads' bytes).
fn partials(server: &Server) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(server.dir.join("data/partial"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn an_upload_in_pieces_is_queued_and_processed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let media = webm(dir.path(), 1.0);

    let options = server.request("OPTIONS", "/v1/uploads", &[], b"");
    assert_eq!(options.status, 204);
    assert_eq!(options.header("tus-version"), Some("1.0.0"));
    assert_eq!(options.header("tus-max-size"), Some("20000000"));
    assert!(options
        .header("tus-extension")
        .is_some_and(|e| e.contains("creation-with-upload")));

    let meta = format!(
        "filename {},frames_every {},filetype {}",
        b64("clip.webm"),
        b64("0.5"),
        b64("video/webm")
    );
    let created = create(&server, &token, media.len(), &meta);
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.header("tus-resumable"), Some("1.0.0"));
    assert!(created.header("upload-expires").is_some());
    assert!(
        created
            .header("location")
            .is_some_and(|l| l.starts_with("/v1/uploads/")),
        "relative, so clients stay on the origin they used: {created:?}"
    );
    let id = id_of(&created);
    let video = server.get(&format!("/v1/videos/{id}"), &token).json();
    assert_eq!(video["state"], "uploading");
    assert_eq!(video["filename"], "clip.webm");
    assert_eq!(video["options"]["frames_every"], 0.5);
    let h = head(&server, &token, &id);
    assert_eq!((h.status, offset(&h)), (200, 0));
    assert_eq!(
        h.header("upload-length"),
        Some(media.len().to_string().as_str())
    );
    assert_eq!(h.header("cache-control"), Some("no-store"));

    let half = media.len() / 2;
    let first = patch(&server, &token, &id, 0, &media[..half]);
    assert_eq!((first.status, offset(&first)), (204, half));
    let percent = server.get(&format!("/v1/videos/{id}"), &token).json()["progress"]["percent"]
        .as_f64()
        .expect("percent");
    assert!((percent - 50.0).abs() < 1.0, "{percent}");

    let stale = patch(&server, &token, &id, 0, &media[..10]);
    assert_eq!(
        (stale.status, stale.code().as_str()),
        (409, "offset-mismatch")
    );
    let mut wrong_type = tus(&token);
    wrong_type.push(("Upload-Offset", half.to_string()));
    wrong_type.push(("Content-Type", "video/webm".into()));
    let r = server.request(
        "PATCH",
        &format!("/v1/uploads/{id}"),
        &wrong_type,
        &media[half..],
    );
    assert_eq!((r.status, r.code().as_str()), (415, "unsupported-media"));

    let last = patch(&server, &token, &id, half, &media[half..]);
    assert_eq!((last.status, offset(&last)), (204, media.len()));
    // Asked at once (queued, not probed by its actor yet): all there, so a
    // client that lost the last answer does not send it again.
    let at_once = head(&server, &token, &id);
    assert_eq!((at_once.status, offset(&at_once)), (200, media.len()));
    let ready = server.wait_for(&token, &id, |v| v["state"] == "ready");
    assert!(ready["outputs"]["mp4"]["url"].is_string());
    assert!(partials(&server).is_empty(), "{:?}", partials(&server));
    // Asking again after the end: everything is there.
    let after = head(&server, &token, &id);
    assert_eq!((after.status, offset(&after)), (200, media.len()));
}

/// Sends a PATCH from 0 that declares `declared` bytes and sends `bytes`,
/// leaving the connection open (a client gone silent).
fn stalled_patch(
    server: &Server,
    token: &str,
    id: &str,
    bytes: &[u8],
    declared: usize,
) -> TcpStream {
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    let head = format!(
        "PATCH /v1/uploads/{id} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: {declared}\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(bytes).expect("body");
    stream.flush().expect("flush");
    stream
}

/// Like [`stalled_patch`], then drops the connection.
fn cut_patch(server: &Server, token: &str, id: &str, bytes: &[u8], declared: usize) {
    let stream = stalled_patch(server, token, id, bytes, declared);
    std::thread::sleep(Duration::from_millis(200));
    drop(stream);
}

fn wait_for_offset(server: &Server, token: &str, id: &str, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while offset(&head(server, token, id)) != want {
        assert!(
            Instant::now() < deadline,
            "the received bytes were not kept"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_client_gone_silent_mid_patch_does_not_block_its_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let media = webm(dir.path(), 1.0);
    let id = id_of(&create(&server, &token, media.len(), ""));
    let sent = media.len() / 2;
    // The connection stays open: the server still waits for the rest.
    let _silent = stalled_patch(&server, &token, &id, &media[..sent], media.len());
    wait_for_offset(&server, &token, &id, sent);
    let started = Instant::now();
    let resumed = patch(&server, &token, &id, sent, &media[sent..]);
    assert_eq!(
        (resumed.status, offset(&resumed)),
        (204, media.len()),
        "{resumed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took over in {:?}",
        started.elapsed()
    );
    server.wait_for(&token, &id, |v| v["state"] == "ready");
}

#[test]
fn a_cut_patch_keeps_what_arrived_and_a_restart_keeps_the_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let media = webm(dir.path(), 1.0);
    let id = id_of(&create(
        &server,
        &token,
        media.len(),
        &format!("filename {}", b64("a.webm")),
    ));
    let sent = media.len() / 3;
    cut_patch(&server, &token, &id, &media[..sent], media.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    while offset(&head(&server, &token, &id)) != sent {
        assert!(
            Instant::now() < deadline,
            "the received bytes were not kept"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();

    let server = Server::start(dir.path(), "");
    let h = head(&server, &token, &id);
    assert_eq!(
        (h.status, offset(&h)),
        (200, sent),
        "the offset survives a restart"
    );
    let rest = patch(&server, &token, &id, sent, &media[sent..]);
    assert_eq!((rest.status, offset(&rest)), (204, media.len()));
    server.wait_for(&token, &id, |v| v["state"] == "ready");
}

#[test]
fn not_media_is_refused_on_the_last_byte_and_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let junk = vec![7u8; 50_000];
    // Creation with upload: the whole body in the POST.
    let mut h = tus(&token);
    h.push(("Upload-Length", junk.len().to_string()));
    h.push(("Content-Type", "application/offset+octet-stream".into()));
    let r = server.request("POST", "/v1/uploads", &h, &junk);
    assert_eq!((r.status, r.code().as_str()), (415, "unsupported-media"));
    let list = server.get("/v1/videos", &token).json();
    assert_eq!(list["videos"], serde_json::json!([]), "no video left");
    assert!(partials(&server).is_empty(), "{:?}", partials(&server));
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());

    // A body longer than the declared length: refused before anything is
    // created.
    let mut h_short = tus(&token);
    h_short.push(("Upload-Length", "10".into()));
    h_short.push(("Content-Type", "application/offset+octet-stream".into()));
    let r = server.request("POST", "/v1/uploads", &h_short, &junk[..100]);
    assert_eq!((r.status, r.code().as_str()), (413, "upload-too-large"));
    assert_eq!(
        server.get("/v1/videos", &token).json()["videos"],
        serde_json::json!([])
    );

    // The same with media: created and queued in one request.
    let media = webm(dir.path(), 1.0);
    h[2] = ("Upload-Length", media.len().to_string());
    let r = server.request("POST", "/v1/uploads", &h, &media);
    assert_eq!((r.status, offset(&r)), (201, media.len()), "{r:?}");
    server.wait_for(&token, &id_of(&r), |v| v["state"] == "ready");
}

#[test]
fn bad_requests_foreign_uploads_termination_and_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_env(
        dir.path(),
        "",
        &[("VIDMILL__LIMITS__UPLOAD_EXPIRY_SECONDS", "2")],
    );
    let (alice, bob) = (server.token("alice"), server.token("bob"));

    let no_version = server.request(
        "POST",
        "/v1/uploads",
        &[
            ("Authorization", format!("Bearer {alice}")),
            ("Upload-Length", "10".into()),
        ],
        b"",
    );
    assert_eq!(no_version.status, 412);
    assert_eq!(no_version.header("tus-version"), Some("1.0.0"));
    let no_length = server.request("POST", "/v1/uploads", &tus(&alice), b"");
    assert_eq!(
        (no_length.status, no_length.code().as_str()),
        (400, "invalid-option")
    );
    let huge = create(&server, &alice, 30_000_000, "");
    assert_eq!(
        (huge.status, huge.code().as_str()),
        (413, "upload-too-large")
    );
    let empty = create(&server, &alice, 0, "");
    assert_eq!((empty.status, empty.code().as_str()), (400, "empty-upload"));
    let bad_option = create(
        &server,
        &alice,
        10,
        &format!("frames_every {}", b64("often")),
    );
    assert_eq!(
        (bad_option.status, bad_option.code().as_str()),
        (400, "invalid-option")
    );
    let no_token = server.request(
        "POST",
        "/v1/uploads",
        &[
            ("Tus-Resumable", "1.0.0".into()),
            ("Upload-Length", "10".into()),
        ],
        b"",
    );
    assert_eq!(no_token.status, 401);

    let id = id_of(&create(&server, &alice, 100, ""));
    assert_eq!(patch(&server, &alice, &id, 0, &[1; 10]).status, 204);
    for r in [
        head(&server, &bob, &id),
        patch(&server, &bob, &id, 10, &[1; 10]),
        server.request("DELETE", &format!("/v1/uploads/{id}"), &tus(&bob), b""),
    ] {
        assert_eq!(r.status, 404, "{r:?}");
    }
    let too_much = patch(&server, &alice, &id, 10, &[1; 200]);
    assert_eq!(
        (too_much.status, too_much.code().as_str()),
        (413, "upload-too-large")
    );
    assert_eq!(
        offset(&head(&server, &alice, &id)),
        10,
        "nothing of it was kept"
    );

    let gone = server.request("DELETE", &format!("/v1/uploads/{id}"), &tus(&alice), b"");
    assert_eq!(gone.status, 204);
    let r = head(&server, &alice, &id);
    assert_eq!(r.status, 404);
    assert!(server.get(&format!("/v1/videos/{id}"), &alice).status == 404);

    // Left alone, an upload expires with everything it holds.
    let idle = id_of(&create(&server, &alice, 100, ""));
    assert_eq!(patch(&server, &alice, &idle, 0, &[1; 10]).status, 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.get(&format!("/v1/videos/{idle}"), &alice).status != 404 {
        assert!(Instant::now() < deadline, "the upload did not expire");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(partials(&server).is_empty(), "{:?}", partials(&server));
}

/// A stock tus client, run as a program with the same arguments:
/// `ENDPOINT TOKEN FILE [--chunk N] [--stop-after N] [--resume URL] [--meta K=V]`.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// tus-js-client under Node (`clients/tus-upload.mjs`).
    TusJs,
    /// tuspy in the venv `make test` builds (`clients/tuspy_upload.py`).
    Tuspy,
}

impl Client {
    fn run(self, server: &Server, token: &str, file: &Path, extra: &[&str]) -> serde_json::Value {
        let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients");
        let mut command = match self {
            Self::TusJs => {
                let mut c = std::process::Command::new("node");
                c.arg(clients.join("tus-upload.mjs"));
                c
            }
            Self::Tuspy => {
                let mut c = std::process::Command::new(clients.join(".venv/bin/python"));
                c.arg(clients.join("tuspy_upload.py"));
                c
            }
        };
        let out = command
            .arg(format!("http://{}/v1/uploads", server.addr))
            .arg(token)
            .arg(file)
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("{self:?} ({e}): `make test-clients` installs it"));
        assert!(
            out.status.success(),
            "{self:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON line")
    }
}

/// Uploads a whole file with options, then another stopped part-way and
/// resumed by a second run of the client from the upload's URL.
fn uploads_stops_and_resumes(client: Client) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let file = dir.path().join("holiday.webm");
    std::fs::write(&file, webm(dir.path(), 2.0)).expect("write");
    let len = std::fs::metadata(&file).expect("len").len();
    let id_of_url = |v: &serde_json::Value| {
        let url = v["url"].as_str().expect("url").to_string();
        (url.rsplit('/').next().expect("id").to_string(), url)
    };

    let whole = client.run(
        &server,
        &token,
        &file,
        &["--chunk", "65536", "--meta", "frames_every=1"],
    );
    assert_eq!(whole["done"], true);
    let (id, _) = id_of_url(&whole);
    let ready = server.wait_for(&token, &id, |v| v["state"] == "ready");
    assert_eq!(ready["filename"], "holiday.webm");
    assert_eq!(ready["options"]["frames_every"], 1.0);

    let stopped = client.run(
        &server,
        &token,
        &file,
        &["--chunk", "16384", "--stop-after", "30000"],
    );
    assert_eq!(stopped["done"], false);
    let (id, url) = id_of_url(&stopped);
    let held = offset(&head(&server, &token, &id)) as u64;
    assert!(held > 0 && held < len, "{held} of {len}");
    let resumed = client.run(
        &server,
        &token,
        &file,
        &["--chunk", "16384", "--resume", &url],
    );
    assert_eq!(resumed["done"], true);
    let (again, _) = id_of_url(&resumed);
    assert_eq!(again, id, "resumed, not started over");
    server.wait_for(&token, &id, |v| v["state"] == "ready");
}

#[test]
fn the_stock_tus_js_client_uploads_stops_and_resumes() {
    uploads_stops_and_resumes(Client::TusJs);
}

#[test]
fn the_stock_tuspy_client_uploads_stops_and_resumes() {
    uploads_stops_and_resumes(Client::Tuspy);
}
