//! Quotas and rates per user against the real server (issue 10 item 4),
//! each with a small quota in the test's config: request rate (429 with
//! `Retry-After`), failed tokens per address, WebSocket streams, uploads in
//! progress, open uploads, bytes per day and bytes stored. Every refusal is
//! a `limit-exceeded` or `rate-limited` problem naming its key, and leaves
//! nothing behind.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("Authorization", format!("Bearer {token}"))]
}

/// Asserts a `limit-exceeded` answer with `status` naming `key`.
fn assert_quota(response: &Response, status: u16, key: &str) {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(response.code(), "limit-exceeded");
    let problem = response.json();
    assert_eq!(problem["limit"], key, "{problem}");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains(key)),
        "{problem}"
    );
}

/// Asserts a `rate-limited` answer with a `Retry-After` of whole seconds.
fn assert_rate_limited(response: &Response) {
    assert_eq!(response.status, 429, "{response:?}");
    assert_eq!(response.code(), "rate-limited");
    let wait: u64 = response
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {response:?}"));
    assert!((1..=60).contains(&wait), "{wait}");
}

/// Files of uploads being received (not the work of accepted videos).
fn upload_spool(server: &Server) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(server.dir.join("data/uploads"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

fn video_count(server: &Server, token: &str) -> usize {
    let list = server.get("/v1/videos", token).json();
    list["videos"].as_array().expect("videos").len()
}

fn tus_create(server: &Server, token: &str, length: u64) -> Response {
    let mut headers = bearer(token);
    headers.push(("Tus-Resumable", "1.0.0".into()));
    headers.push(("Upload-Length", length.to_string()));
    server.request("POST", "/v1/uploads", &headers, b"")
}

#[test]
fn a_user_over_the_request_rate_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        "rate_requests_per_second = 1\nrate_request_burst = 3\n",
    );
    let (alice, bob) = (server.token("alice"), server.token("bob"));
    for _ in 0..3 {
        assert_eq!(server.get("/v1/videos", &alice).status, 200);
    }
    assert_rate_limited(&server.get("/v1/videos", &alice));
    assert_eq!(
        server.get("/v1/videos", &bob).status,
        200,
        "another user has a rate of their own"
    );
}

#[test]
fn an_address_sending_bad_tokens_is_slowed_before_tokens_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "rate_auth_failures_per_minute = 3\n");
    let good = server.token("alice");
    assert_eq!(server.get("/v1/videos", &good).status, 200);
    // Every route that takes a token counts: REST, WebSocket, outputs.
    for path in ["/v1/videos", "/v1/events", "/v1/videos/x/video.mp4"] {
        let r = server.get(path, "not-a-token");
        assert_eq!(r.status, 401, "{path}: {r:?}");
    }
    assert_rate_limited(&server.get("/v1/videos", "not-a-token"));
    assert_rate_limited(&server.request("GET", "/v1/videos", &[], b""));
    // Until the allowance comes back, not even a good token is tried.
    assert_rate_limited(&server.get("/v1/videos", &good));
    assert_eq!(
        server.get("/healthz", "").status,
        200,
        "public routes stay open"
    );
}

#[test]
fn websocket_streams_per_user_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "quota_websocket_connections = 1\n");
    let (alice, bob) = (server.token("alice"), server.token("bob"));
    let url = |token: &str| format!("ws://{}/v1/events?access_token={token}", server.addr);
    let (first, _) = tungstenite::connect(url(&alice)).expect("first stream");
    match tungstenite::connect(url(&alice)) {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 422);
            let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default());
            assert!(
                body.contains("limits.quota_websocket_connections"),
                "{body}"
            );
        }
        other => panic!("a second stream was not refused: {:?}", other.map(|_| ())),
    }
    let (_bobs, _) = tungstenite::connect(url(&bob)).expect("another user's stream");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tungstenite::connect(url(&alice)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the closed stream's place never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn uploads_in_progress_per_user_are_capped_and_refusals_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "quota_uploads_in_progress = 1\n");
    let (alice, bob) = (server.token("alice"), server.token("bob"));
    // An upload that has sent its head and a few bytes, and holds on.
    let mut held = TcpStream::connect(&server.addr).expect("connect");
    write!(
        held,
        "POST /v1/videos?filename=a.webm HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\
         Content-Type: video/webm\r\nContent-Length: 100000\r\n\r\n0123456789"
    )
    .expect("send");
    let source = webm(dir.path(), 1.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let r = server.upload(&alice, "filename=b.webm", &source);
        if r.status == 422 {
            break r;
        }
        assert!(Instant::now() < deadline, "never refused: {r:?}");
        // The held upload had not reached its handler yet: undo this one.
        let id = r.json()["id"].as_str().expect("id").to_string();
        server.request("DELETE", &format!("/v1/videos/{id}"), &bearer(&alice), b"");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_quota(&refused, 422, "limits.quota_uploads_in_progress");
    let tus = tus_create(&server, &alice, 10);
    assert_eq!(tus.status, 201, "an upload sending no bytes takes no slot");
    let mut patch = bearer(&alice);
    patch.extend([
        ("Tus-Resumable", "1.0.0".to_string()),
        ("Upload-Offset", "0".into()),
        ("Content-Type", "application/offset+octet-stream".into()),
    ]);
    let location = tus.header("location").expect("location").to_string();
    let r = server.request("PATCH", &location, &patch, b"0123456789");
    assert_quota(&r, 422, "limits.quota_uploads_in_progress");
    assert_eq!(
        server.upload(&bob, "filename=c.webm", &source).status,
        201,
        "another user is not affected"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !upload_spool(&server).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left: {:?}",
            upload_spool(&server)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = server.upload(&alice, "filename=d.webm", &source);
    assert_eq!(r.status, 201, "the slot came back: {r:?}");
}

#[test]
fn open_uploads_per_user_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "quota_open_uploads = 2\n");
    let alice = server.token("alice");
    for _ in 0..2 {
        assert_eq!(tus_create(&server, &alice, 10).status, 201);
    }
    assert_quota(
        &tus_create(&server, &alice, 10),
        422,
        "limits.quota_open_uploads",
    );
    assert_eq!(video_count(&server, &alice), 2, "no record for the refusal");
    assert_eq!(tus_create(&server, &server.token("bob"), 10).status, 201);

    // Created at the same moment, carol's uploads still stop at two.
    let carol = server.token("carol");
    let go = std::sync::Arc::new(std::sync::Barrier::new(8));
    let created: Vec<u16> = (0..8)
        .map(|_| {
            let (addr, token, go) = (server.addr.clone(), carol.clone(), go.clone());
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&addr).expect("connect");
                go.wait();
                write!(
                    stream,
                    "POST /v1/uploads HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                     Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n\
                     Upload-Length: 10\r\nContent-Length: 0\r\n\r\n"
                )
                .expect("send");
                read_response(stream, false)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("thread").status)
        .collect();
    assert_eq!(
        created.iter().filter(|s| **s == 201).count(),
        2,
        "{created:?}"
    );
    assert_eq!(video_count(&server, &carol), 2);
}

#[test]
fn stored_bytes_are_capped_and_a_refused_upload_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = webm(dir.path(), 1.0);
    let quota = source.len() as u64 * 3 / 2;
    let server = Server::start(dir.path(), &format!("quota_stored_bytes = {quota}\n"));
    let alice = server.token("alice");
    assert_eq!(
        server.upload(&alice, "filename=a.webm", &source).status,
        201
    );
    let r = server.upload(&alice, "filename=b.webm", &source);
    assert_quota(&r, 413, "limits.quota_stored_bytes");
    // Without a declared length the cap holds while the bytes arrive.
    let mut chunked = bearer(&alice);
    chunked.extend([
        ("Content-Type", "video/webm".to_string()),
        ("Transfer-Encoding", "chunked".into()),
    ]);
    let mut body = format!("{:x}\r\n", source.len()).into_bytes();
    body.extend_from_slice(&source);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = server.request("POST", "/v1/videos?filename=c.webm", &chunked, &body);
    assert_quota(&r, 413, "limits.quota_stored_bytes");
    assert_quota(
        &tus_create(&server, &alice, source.len() as u64),
        413,
        "limits.quota_stored_bytes",
    );
    assert_eq!(video_count(&server, &alice), 1);
    assert!(
        upload_spool(&server).is_empty(),
        "{:?}",
        upload_spool(&server)
    );
}

#[test]
fn bytes_per_day_count_deleted_videos_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = webm(dir.path(), 1.0);
    let quota = source.len() as u64 * 3 / 2;
    let server = Server::start(
        dir.path(),
        &format!("quota_upload_bytes_per_day = {quota}\n"),
    );
    let alice = server.token("alice");
    let first = server.upload(&alice, "filename=a.webm", &source);
    assert_eq!(first.status, 201);
    let id = first.json()["id"].as_str().expect("id").to_string();
    let deleted = server.request("DELETE", &format!("/v1/videos/{id}"), &bearer(&alice), b"");
    assert_eq!(deleted.status, 204);
    let r = server.upload(&alice, "filename=b.webm", &source);
    assert_quota(&r, 413, "limits.quota_upload_bytes_per_day");
    assert_eq!(video_count(&server, &alice), 0);
    assert_eq!(
        server
            .upload(&server.token("bob"), "filename=c.webm", &source)
            .status,
        201
    );
}

/// One upload sent over its own connection in two halves, the second held
/// back until `go` opens; the answer is read meanwhile (a refusal comes
/// before the body is through).
fn upload_in_halves(
    server: &Server,
    token: &str,
    name: &str,
    source: &[u8],
    chunked: bool,
    go: std::sync::Arc<std::sync::Barrier>,
) -> std::thread::JoinHandle<Response> {
    let stream = TcpStream::connect(&server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let length = match chunked {
        true => "Transfer-Encoding: chunked".to_string(),
        false => format!("Content-Length: {}", source.len()),
    };
    let head = format!(
        "POST /v1/videos?filename={name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: video/webm\r\n{length}\r\n\r\n"
    );
    let frame = |part: &[u8]| match chunked {
        true => [format!("{:x}\r\n", part.len()).as_bytes(), part, b"\r\n"].concat(),
        false => part.to_vec(),
    };
    let (first, second) = source.split_at(source.len() / 2);
    let mut first = [head.as_bytes(), &frame(first)].concat();
    let mut second = frame(second);
    if chunked {
        second.extend_from_slice(b"0\r\n\r\n");
    }
    let mut writer = stream.try_clone().expect("clone");
    std::thread::spawn(move || {
        // Write errors are the server's early answer closing the door.
        let _ = writer.write_all(&std::mem::take(&mut first));
        go.wait();
        let _ = writer.write_all(&second);
    });
    std::thread::spawn(move || read_response(stream, false))
}

#[test]
fn concurrent_uploads_never_pass_the_byte_quota_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = webm(dir.path(), 1.0);
    let len = source.len() as u64;
    // Room for two of the eight uploads below.
    let quota = len * 5 / 2;
    let server = Server::start(
        dir.path(),
        &format!("quota_stored_bytes = {quota}\nquota_uploads_in_progress = 16\n"),
    );
    let alice = server.token("alice");
    let uploads = 6;
    // Held until every upload has either been answered or has begun to
    // store its bytes: each passed its check at the start, as uploads
    // arriving together do.
    let go = std::sync::Arc::new(std::sync::Barrier::new(uploads + 1));
    let sending: Vec<_> = (0..uploads)
        .map(|i| {
            let name = format!("u{i}.webm");
            upload_in_halves(&server, &alice, &name, &source, i % 2 == 1, go.clone())
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answered = sending.iter().filter(|h| h.is_finished()).count();
        if answered + upload_spool(&server).len() >= uploads {
            break;
        }
        assert!(Instant::now() < deadline, "the uploads never settled");
        std::thread::sleep(Duration::from_millis(20));
    }
    go.wait();
    // Resumable uploads are charged their declared length when created.
    let tus: Vec<_> = (0..2)
        .map(|_| {
            let (server_addr, token) = (server.addr.clone(), alice.clone());
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&server_addr).expect("connect");
                write!(
                    stream,
                    "POST /v1/uploads HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                     Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n\
                     Upload-Length: {len}\r\nContent-Length: 0\r\n\r\n"
                )
                .expect("send");
                read_response(stream, false)
            })
        })
        .collect();
    let answers: Vec<Response> = sending
        .into_iter()
        .chain(tus)
        .map(|h| h.join().expect("upload thread"))
        .collect();
    let accepted = answers.iter().filter(|r| r.status == 201).count() as u64;
    for refused in answers.iter().filter(|r| r.status != 201) {
        assert_quota(refused, 413, "limits.quota_stored_bytes");
    }
    assert!(accepted >= 1, "{answers:?}");
    assert!(
        accepted * len <= quota,
        "{accepted} uploads of {len} bytes accepted against a quota of {quota}"
    );
    assert_eq!(video_count(&server, &alice), accepted as usize);
    assert!(
        upload_spool(&server).is_empty(),
        "{:?}",
        upload_spool(&server)
    );
}

#[test]
fn an_upload_cut_off_gives_its_reserved_bytes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = webm(dir.path(), 1.0);
    let quota = source.len() as u64 * 3 / 2;
    let server = Server::start(dir.path(), &format!("quota_stored_bytes = {quota}\n"));
    let alice = server.token("alice");
    // Declares the whole file, sends a little of it, and goes away.
    let mut cut = TcpStream::connect(&server.addr).expect("connect");
    write!(
        cut,
        "POST /v1/videos?filename=a.webm HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\
         Content-Type: video/webm\r\nContent-Length: {}\r\n\r\n0123456789",
        source.len()
    )
    .expect("send");
    let deadline = Instant::now() + Duration::from_secs(10);
    while upload_spool(&server).is_empty() {
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // While it is held, another upload of the same size does not fit.
    let r = server.upload(&alice, "filename=b.webm", &source);
    assert_quota(&r, 413, "limits.quota_stored_bytes");
    drop(cut);
    while !upload_spool(&server).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", upload_spool(&server));
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = server.upload(&alice, "filename=c.webm", &source);
    assert_eq!(r.status, 201, "the reservation came back: {r:?}");
}
