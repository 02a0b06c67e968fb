//! The real server on 127.0.0.1:0, driven over HTTP and WebSocket as a
//! client would: the full flow, every upload rejection, token checks,
//! isolation between owners, signed links, the range table, and a restart
//! in the middle of processing.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

fn ws_url(server: &Server, path: &str, token: &str) -> String {
    format!("ws://{}{path}?access_token={token}", server.addr)
}

/// Reads WebSocket JSON messages until `stop` says so.
fn read_until(
    socket: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    stop: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    loop {
        match socket.read().expect("websocket read") {
            tungstenite::Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("json event");
                let done = stop(&v);
                seen.push(v);
                if done {
                    return seen;
                }
            }
            tungstenite::Message::Close(f) => panic!("closed early: {f:?}; seen {seen:?}"),
            _ => {}
        }
    }
}

fn path_of(url: &str) -> String {
    url.splitn(4, '/')
        .nth(3)
        .map(|p| format!("/{p}"))
        .expect("path")
}

#[test]
fn upload_watch_stream_download_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let source = webm(dir.path(), 2.0);

    let created = server.upload(&token, "filename=clip.webm&frames_every=0.5", &source);
    assert_eq!(
        created.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&created.body)
    );
    let video = created.json();
    let id = video["id"].as_str().expect("id").to_string();
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/videos/{id}").as_str())
    );
    assert_eq!(video["state"], "queued");

    let (mut socket, _) =
        tungstenite::connect(ws_url(&server, &format!("/v1/videos/{id}/events"), &token))
            .expect("ws");
    let events = read_until(&mut socket, |e| {
        e["type"] == "state" && e["state"] == "ready"
            || e["type"] == "snapshot" && e["video"]["state"] == "ready"
    });
    assert_eq!(events[0]["type"], "snapshot", "snapshot first");
    let states: Vec<_> = events.iter().filter(|e| e["type"] == "state").collect();
    let seqs: Vec<u64> = states.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "state events in order without gaps: {seqs:?}"
    );
    drop(socket);

    let ready = server.wait_for(&token, &id, |v| v["state"] == "ready");
    assert_eq!(ready["progress"]["percent"], 100.0);
    let mp4 = ready["outputs"]["mp4"]["url"].as_str().expect("mp4 url");
    let full = server.request("GET", &path_of(mp4), &[], b"");
    assert_eq!(full.status, 200);
    assert_eq!(full.header("content-type"), Some("video/mp4"));
    assert_eq!(
        full.body.len() as u64,
        ready["outputs"]["mp4"]["size_bytes"]
            .as_u64()
            .expect("size")
    );
    let first = server.request("GET", &path_of(mp4), &[("Range", "bytes=0-7".into())], b"");
    assert_eq!(first.status, 206);
    assert_eq!(&first.body[4..8], b"ftyp", "an MP4 starts with ftyp");

    let zip_url = ready["outputs"]["frames"]["url"]
        .as_str()
        .expect("frames url");
    let zip = server.request("GET", &path_of(zip_url), &[], b"");
    assert_eq!(zip.status, 200);
    let archive = zip::ZipArchive::new(std::io::Cursor::new(zip.body)).expect("zip");
    assert_eq!(
        archive.len() as u64,
        ready["outputs"]["frames"]["count"].as_u64().expect("count") + 1
    );
    assert_eq!(ready["outputs"]["frames"]["count"], 4);

    let deleted = server.request(
        "DELETE",
        &format!("/v1/videos/{id}"),
        &[("Authorization", format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(deleted.status, 204);
    assert_eq!(server.get(&format!("/v1/videos/{id}"), &token).status, 404);
    // The link handed out before is dead at once (not served from the
    // short-lived cache of ready videos).
    let after = server.request("GET", &path_of(mp4), &[], b"");
    assert_eq!(
        (after.status, after.code().as_str()),
        (403, "bad-signature")
    );
    assert!(!server.objects(&id).exists(), "every object removed");
    assert_eq!(server.temp_files(), Vec::<std::path::PathBuf>::new());
    server.stop();
}

#[test]
fn multipart_upload_creates_a_video() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let source = webm(dir.path(), 1.0);
    let boundary = "vidmill-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{boundary}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"holiday.webm\"\r\nContent-Type: video/webm\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&source);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = server.request(
        "POST",
        "/v1/videos?outputs=mp4",
        &[
            ("Authorization", format!("Bearer {token}")),
            (
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            ),
        ],
        &body,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["filename"], "holiday.webm");
    let id = v["id"].as_str().expect("id");
    let ready = server.wait_for(&token, id, |v| v["state"] == "ready");
    assert!(ready["outputs"]["mp4"].is_object());
    assert!(
        ready["outputs"]["frames"].is_null(),
        "only the requested outputs"
    );
}

#[test]
fn every_upload_rejection_has_its_code_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let auth = ("Authorization", format!("Bearer {token}"));
    let mp4 = ("Content-Type", "video/mp4".to_string());

    let cases: Vec<(&str, Response, u16, &str)> = vec![
        (
            "no token",
            server.request("POST", "/v1/videos", std::slice::from_ref(&mp4), b"x"),
            401,
            "invalid-token",
        ),
        (
            "empty",
            server.upload(&token, "filename=a.mp4", b""),
            400,
            "empty-upload",
        ),
        (
            "text",
            server.upload(&token, "filename=a.mp4", &b"not a video\n".repeat(100)),
            415,
            "unsupported-media",
        ),
        (
            "bad option",
            server.upload(&token, "frames_every=-1", b"x"),
            400,
            "invalid-option",
        ),
        (
            "unknown option",
            server.upload(&token, "colour=blue", b"x"),
            400,
            "invalid-option",
        ),
        (
            "declared too large",
            server.request(
                "POST",
                "/v1/videos",
                &[
                    auth.clone(),
                    mp4.clone(),
                    ("Content-Length", "20000001".into()),
                ],
                b"",
            ),
            413,
            "upload-too-large",
        ),
        (
            "streamed too large",
            server.request(
                "POST",
                "/v1/videos",
                &[
                    auth.clone(),
                    mp4.clone(),
                    ("Transfer-Encoding", "chunked".into()),
                ],
                &chunked(&vec![0u8; 20_000_100]),
            ),
            413,
            "upload-too-large",
        ),
        (
            "wrong type",
            server.request(
                "POST",
                "/v1/videos",
                &[auth.clone(), ("Content-Type", "text/plain".into())],
                b"hello",
            ),
            415,
            "unsupported-media",
        ),
        (
            "direct upload",
            server.upload(&token, "upload=direct&filename=a.mp4", b"x"),
            409,
            "direct-upload-unavailable",
        ),
    ];
    for (name, r, status, code) in cases {
        assert_eq!(
            r.status,
            status,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.code(), code, "{name}");
    }
    let no_token = server.request("POST", "/v1/videos", std::slice::from_ref(&mp4), b"x");
    assert_eq!(
        no_token.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );

    // A body cut off before its declared length.
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    write!(
        stream,
        "POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: video/mp4\r\nContent-Length: 100000\r\n\r\n"
    )
    .expect("head");
    stream.write_all(&[1u8; 1000]).expect("part of the body");
    stream.shutdown(std::net::Shutdown::Write).expect("cut");
    let cut = read_response(stream, false);
    assert_eq!(
        (cut.status, cut.code().as_str()),
        (400, "upload-interrupted")
    );

    let listed = server.get("/v1/videos", &token).json();
    assert_eq!(
        listed["videos"].as_array().map(Vec::len),
        Some(0),
        "no record left"
    );
    assert!(
        !dir.path().join("data/objects/videos").exists()
            || std::fs::read_dir(dir.path().join("data/objects/videos"))
                .expect("dir")
                .count()
                == 0
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        server.temp_files(),
        Vec::<std::path::PathBuf>::new(),
        "no temp file left"
    );
}

fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(1 << 20) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn low_disk_refuses_uploads_before_storing_a_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_env(
        dir.path(),
        "",
        &[(
            "VIDMILL__LIMITS__MIN_FREE_DISK_BYTES",
            "1000000000000000000",
        )],
    );
    let token = server.token("alice");
    let r = server.upload(&token, "filename=a.webm", &webm(dir.path(), 1.0));
    assert_eq!((r.status, r.code().as_str()), (507, "insufficient-storage"));
    assert_eq!(server.temp_files(), Vec::<std::path::PathBuf>::new());
}

fn hs256(claims: serde_json::Value, secret: &[u8]) -> String {
    use hmac::Mac;
    let b64 = |bytes: &[u8]| {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..=c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    };
    let signing_input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("key");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

#[test]
fn bad_tokens_get_401_never_500() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_env(
        dir.path(),
        "",
        &[
            ("VIDMILL__AUTH__ISSUER", "https://id.example"),
            ("VIDMILL__AUTH__AUDIENCE", "vidmill"),
        ],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let good = serde_json::json!({"sub": "alice", "exp": now + 300, "iss": "https://id.example", "aud": "vidmill"});
    let key = SECRET.as_bytes();
    let tokens = [
        (
            "expired",
            hs256(serde_json::json!({"sub": "a", "exp": now - 300}), key),
        ),
        (
            "not yet valid",
            hs256(
                serde_json::json!({"sub": "a", "exp": now + 300, "nbf": now + 200}),
                key,
            ),
        ),
        (
            "wrong signature",
            hs256(good.clone(), b"another-secret-entirely-0000"),
        ),
        (
            "missing sub",
            hs256(serde_json::json!({"exp": now + 300}), key),
        ),
        (
            "alg none",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0."
                .to_string(),
        ),
        (
            "wrong issuer",
            hs256(
                serde_json::json!({"sub": "a", "exp": now + 300, "iss": "https://evil", "aud": "vidmill"}),
                key,
            ),
        ),
        (
            "wrong audience",
            hs256(
                serde_json::json!({"sub": "a", "exp": now + 300, "iss": "https://id.example", "aud": "other"}),
                key,
            ),
        ),
        ("garbage", "not-a-token".to_string()),
        ("empty", String::new()),
    ];
    for (name, token) in tokens {
        let r = server.get("/v1/videos", &token);
        assert_eq!(r.status, 401, "{name}");
        assert_eq!(r.code(), "invalid-token", "{name}");
    }
    assert_eq!(server.get("/v1/videos", &hs256(good, key)).status, 200);
}

#[test]
fn another_owner_sees_nothing_and_links_are_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let alice = server.token("alice");
    let bob = server.token("bob");
    let a = server
        .upload(&alice, "filename=a.webm", &webm(dir.path(), 1.0))
        .json();
    let b = server
        .upload(&alice, "filename=b.webm", &webm(dir.path(), 1.0))
        .json();
    let (ida, idb) = (a["id"].as_str().expect("id"), b["id"].as_str().expect("id"));
    let ready = server.wait_for(&alice, ida, |v| v["state"] == "ready");
    let ready_b = server.wait_for(&alice, idb, |v| v["state"] == "ready");
    let bearer_bob = ("Authorization", format!("Bearer {bob}"));
    for (method, path) in [
        ("GET", format!("/v1/videos/{ida}")),
        ("DELETE", format!("/v1/videos/{ida}")),
        ("POST", format!("/v1/videos/{ida}/retry")),
        ("GET", format!("/v1/videos/{ida}/video.mp4")),
        ("GET", format!("/v1/videos/{ida}/frames.zip")),
        ("GET", format!("/v1/videos/{ida}/poster.jpg")),
    ] {
        let r = server.request(method, &path, std::slice::from_ref(&bearer_bob), b"");
        assert_eq!(
            (r.status, r.code().as_str()),
            (404, "video-not-found"),
            "{method} {path}"
        );
    }
    let missing = server.get("/v1/videos/01J0000000000000000000000", &bob);
    assert_eq!(
        missing.status, 404,
        "a foreign id reads exactly like a missing one"
    );
    match tungstenite::connect(ws_url(&server, &format!("/v1/videos/{ida}/events"), &bob)) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("foreign WebSocket accepted: {:?}", other.map(|_| ())),
    }
    match tungstenite::connect(ws_url(&server, "/v1/events", "garbage")) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("bad token accepted: {:?}", other.map(|_| ())),
    }
    assert_eq!(
        server.get("/v1/videos", &bob).json()["videos"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    let url = path_of(ready["outputs"]["mp4"]["url"].as_str().expect("url"));
    assert_eq!(server.request("GET", &url, &[], b"").status, 200);
    let (base, query) = url.split_once('?').expect("query");
    let sig = query
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .expect("sig");
    let exp = query
        .split('&')
        .find_map(|p| p.strip_prefix("exp="))
        .expect("exp");
    let flipped = if sig.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{base}?exp={exp}&sig={}{flipped}", &sig[..sig.len() - 1]);
    let expired = format!("{base}?exp=1000&sig={sig}");
    let other_output = format!("/v1/videos/{ida}/frames.zip?exp={exp}&sig={sig}");
    let b_url = path_of(ready_b["outputs"]["mp4"]["url"].as_str().expect("url"));
    let b_sig = b_url.split("sig=").nth(1).expect("sig");
    let other_video = format!("{base}?exp={exp}&sig={b_sig}");
    for bad in [tampered, expired, other_output, other_video] {
        let r = server.request("GET", &bad, &[], b"");
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "bad-signature"),
            "{bad}"
        );
    }
}

#[test]
fn ranges_follow_the_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let id = server
        .upload(
            &token,
            "filename=a.webm&outputs=mp4",
            &webm(dir.path(), 1.0),
        )
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    let ready = server.wait_for(&token, &id, |v| v["state"] == "ready");
    let len = ready["outputs"]["mp4"]["size_bytes"].as_u64().expect("len");
    let path = format!("/v1/videos/{id}/video.mp4");
    let auth = ("Authorization", format!("Bearer {token}"));
    let get = |range: Option<&str>, extra: &[(&str, String)]| {
        let mut h = vec![auth.clone()];
        if let Some(r) = range {
            h.push(("Range", r.to_string()));
        }
        h.extend(extra.iter().cloned());
        server.request("GET", &path, &h, b"")
    };
    let full = get(None, &[]);
    assert_eq!((full.status, full.body.len() as u64), (200, len));
    let etag = full.header("etag").expect("etag").to_string();
    let modified = full
        .header("last-modified")
        .expect("last-modified")
        .to_string();
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    for (range, status, body, content_range) in [
        ("bytes=0-0", 206, 1, Some(format!("bytes 0-0/{len}"))),
        (
            "bytes=0-",
            206,
            len,
            Some(format!("bytes 0-{}/{len}", len - 1)),
        ),
        (
            "bytes=-1",
            206,
            1,
            Some(format!("bytes {}-{}/{len}", len - 1, len - 1)),
        ),
        ("bytes=-0", 416, 0, Some(format!("bytes */{len}"))),
        ("bytes=99999999-", 416, 0, Some(format!("bytes */{len}"))),
        ("bytes=5-3", 200, len, None),
        ("bytes=0-1,4-5", 200, len, None),
        ("garbage", 200, len, None),
    ] {
        let r = get(Some(range), &[]);
        assert_eq!(r.status, status, "{range}");
        if status != 416 {
            assert_eq!(r.body.len() as u64, body, "{range}");
        } else {
            assert_eq!(r.code(), "range-not-satisfiable");
        }
        assert_eq!(
            r.header("content-range").map(String::from),
            content_range,
            "{range}"
        );
    }
    assert_eq!(
        get(Some("bytes=0-9"), &[("If-Range", etag.clone())]).status,
        206
    );
    assert_eq!(
        get(Some("bytes=0-9"), &[("If-Range", modified.clone())]).status,
        206
    );
    assert_eq!(
        get(Some("bytes=0-9"), &[("If-Range", "\"stale\"".into())]).status,
        200
    );
    assert_eq!(get(None, &[("If-None-Match", etag.clone())]).status, 304);
    let head = server.request("HEAD", &path, std::slice::from_ref(&auth), b"");
    assert_eq!(
        (head.status, head.header("content-length").map(String::from)),
        (200, Some(len.to_string()))
    );
    assert!(head.body.is_empty());
    let not_ready = server.get(&format!("/v1/videos/{id}/frames.zip"), &token);
    assert_eq!(
        (not_ready.status, not_ready.code().as_str()),
        (409, "not-ready")
    );
}

#[test]
fn since_replays_every_state_event_after_a_reconnect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let id = server
        .upload(&token, "filename=a.webm", &webm(dir.path(), 1.0))
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    let ready = server.wait_for(&token, &id, |v| v["state"] == "ready");
    let (mut socket, _) = tungstenite::connect(format!(
        "{}&since=2",
        ws_url(&server, &format!("/v1/videos/{id}/events"), &token)
    ))
    .expect("ws");
    let events = read_until(&mut socket, |e| {
        e["type"] == "state" && e["state"] == "ready"
    });
    assert_eq!(events[0]["type"], "snapshot");
    let seqs: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "state")
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(
        seqs.first() == Some(&3) && seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "{seqs:?}"
    );
    let _ = ready;
}

/// Streams opened at every moment of a video's life, replaying from the
/// start, and the owner's stream opened before it, each see every state
/// event exactly once and in order: the replay hands over to the live
/// events (written straight to the sockets) without a gap or a repeat.
#[test]
fn streams_opened_mid_processing_see_every_state_event_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let seqs_of = |events: Vec<serde_json::Value>| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["type"] == "state")
            .filter_map(|e| e["seq"].as_u64())
            .collect()
    };
    let (mut owner, _) = tungstenite::connect(ws_url(&server, "/v1/events", &token)).expect("ws");
    let id = server
        .upload(
            &token,
            "filename=a.webm&frames_every=0.25",
            &webm(dir.path(), 3.0),
        )
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    let ready = |e: &serde_json::Value| e["type"] == "state" && e["state"] == "ready";
    let owner = std::thread::spawn(move || read_until(&mut owner, ready));
    let mut readers = Vec::new();
    let url = format!(
        "{}&since=0",
        ws_url(&server, &format!("/v1/videos/{id}/events"), &token)
    );
    // Within the user's 32 streams (the owner's is one).
    while readers.len() < 30 {
        let (mut socket, _) = tungstenite::connect(&url).expect("ws");
        readers.push(std::thread::spawn(move || read_until(&mut socket, ready)));
        if server.get(&format!("/v1/videos/{id}"), &token).json()["state"] == "ready" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let owner = owner.join().expect("owner stream");
    let owner: Vec<serde_json::Value> = owner
        .into_iter()
        .filter(|e| e["video_id"] == id.as_str())
        .collect();
    let all = seqs_of(owner);
    assert!(all.len() >= 4, "{all:?}");
    assert_eq!(
        all,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "the owner's stream"
    );
    eprintln!("{} state events, {} streams", all.len(), readers.len());
    assert!(readers.len() > 3, "streams opened while it was processing");
    for (i, r) in readers.into_iter().enumerate() {
        assert_eq!(seqs_of(r.join().expect("stream")), all, "stream {i}");
    }
}

#[test]
fn sigterm_mid_processing_and_a_restart_finish_the_video() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slow = "[media]\npreset = \"veryslow\"\n";
    let server = Server::start(dir.path(), slow);
    let token = server.token("alice");
    let id = server
        .upload(
            &token,
            "filename=a.webm&frames_every=1",
            &webm(dir.path(), 8.0),
        )
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    server.wait_for(&token, &id, |v| v["stage"] == "converting");
    server.stop();
    let server = Server::start(dir.path(), "");
    let ready = server.wait_for(&token, &id, |v| {
        v["state"] == "ready" || v["state"] == "failed"
    });
    assert_eq!(ready["state"], "ready", "{ready}");
    assert_eq!(server.temp_files(), Vec::<std::path::PathBuf>::new());
}

#[test]
fn health_readiness_and_metrics_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    assert_eq!(server.request("GET", "/healthz", &[], b"").status, 200);
    let ready = server.request("GET", "/readyz", &[], b"");
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    let token = server.token("alice");
    server.get("/v1/videos", &token);
    let metrics =
        String::from_utf8(server.request("GET", "/metrics", &[], b"").body).expect("text");
    for name in [
        "vidmill_videos",
        "vidmill_queue_depth",
        "vidmill_admission_wait_seconds",
        "vidmill_stage_seconds",
        "vidmill_realtime_factor",
        "vidmill_stalls_total",
        "vidmill_ws_connections",
        "vidmill_http_requests_total",
        "vidmill_http_request_duration_seconds",
        "vidmill_bytes_served_total",
        "vidmill_reaped_bytes_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_env(
        dir.path(),
        "",
        &[("VIDMILL__SERVER__HEADER_TIMEOUT_SECONDS", "1")],
    );
    let mut slow = TcpStream::connect(&server.addr).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("partial head");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    // The server gives up on the request: a 408 or a closed connection.
    let n = std::io::Read::read(&mut slow, &mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut after {:?}",
        started.elapsed()
    );
    // Meanwhile, everyone else is served.
    assert_eq!(server.request("GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn a_worker_node_serves_only_health_and_metrics_under_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_env(
        dir.path(),
        "",
        &[
            ("VIDMILL__SERVER__ROLE", "worker"),
            ("VIDMILL__SERVER__NODE_ID", "worker-7"),
        ],
    );
    let token = server.token("alice");
    assert_eq!(server.get("/healthz", &token).status, 200);
    assert_eq!(server.get("/readyz", &token).status, 200);
    let metrics = server.get("/metrics", &token);
    assert_eq!(metrics.status, 200);
    assert!(
        String::from_utf8_lossy(&metrics.body).contains("vidmill_node_info{node=\"worker-7\"} 1"),
        "the node's id is in its metrics"
    );
    for path in ["/v1/videos", "/", "/openapi.json"] {
        let r = server.get(path, &token);
        assert_eq!((r.status, r.code().as_str()), (404, "not-found"), "{path}");
    }
}
