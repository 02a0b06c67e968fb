//! Abuse of the HTTP side that the other suites do not already hold
//! (connections.rs, edges.rs and quotas.rs do slow heads and bodies, idle
//! and h2c connections, multipart, quotas and rates): huge headers of
//! ranges and tokens, forged tokens, tus headers out of range, and
//! WebSocket floods and oversized frames. All against one server, with
//! `/healthz` asked every 100 ms throughout and the server's peak memory
//! reported and bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::support::*;

/// The status of a raw request with the given extra header lines.
fn status_of(server: &Server, request_line: &str, headers: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let head = format!(
        "{request_line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    // The server may answer (and close) before reading it all.
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A JWT with `header` and `claims`, signed with HS256 under `key`.
fn forged(header: &str, claims: &str, key: &[u8]) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

#[test]
fn http_abuse_is_answered_and_the_server_stays_well() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("abuser");
    let watch = HealthWatch::start(&server.addr);
    let mut wrong = Vec::new();
    let mut expect = |name: &str, want: u16, got: u16| {
        println!("ABUSE | {name} | {want} | {got}");
        if want != got {
            wrong.push(format!("{name}: expected {want}, got {got}"));
        }
    };

    // A video to ask ranges of.
    let body = webm(dir.path(), 1.0);
    let r = server.upload(&token, "filename=v.webm", &body);
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json()["id"].as_str().expect("id").to_string();
    server.wait_for(&token, &id, |v| v["state"] == "ready");
    let source = format!("GET /v1/videos/{id}/video.mp4");

    let ranges = |n: usize| {
        let specs: Vec<String> = (0..n).map(|i| format!("{}-{}", 2 * i, 2 * i)).collect();
        format!("Range: bytes={}\r\n", specs.join(","))
    };
    // 10,000 ranges do not fit the head cap; 2,000 do, and are answered
    // with the whole object (multiple ranges are not served).
    expect(
        "10,000 ranges",
        431,
        status_of(
            &server,
            &source,
            &format!("{}{}", bearer(&token), ranges(10_000)),
            b"",
        ),
    );
    expect(
        "2,000 ranges",
        200,
        status_of(
            &server,
            &source,
            &format!("{}{}", bearer(&token), ranges(2_000)),
            b"",
        ),
    );
    expect(
        "range past the end",
        416,
        status_of(
            &server,
            &source,
            &format!("{}Range: bytes=999999999-\r\n", bearer(&token)),
            b"",
        ),
    );

    // Tokens.
    let huge = "a".repeat(1 << 20);
    expect(
        "1 MiB token",
        431,
        status_of(&server, "GET /v1/videos", &bearer(&huge), b""),
    );
    let claims = r#"{"sub":"abuser","exp":4102444800}"#;
    let secret = SECRET.as_bytes();
    let kid = forged(
        r#"{"alg":"HS256","typ":"JWT","kid":"../../../../etc/passwd"}"#,
        claims,
        b"not-the-key-not-the-key-not-the-key",
    );
    expect(
        "kid path injection, wrong key",
        401,
        status_of(&server, "GET /v1/videos", &bearer(&kid), b""),
    );
    let sql = forged(
        r#"{"alg":"HS256","kid":"' OR 1=1 --"}"#,
        claims,
        b"not-the-key-not-the-key-not-the-key",
    );
    expect(
        "kid SQL injection, wrong key",
        401,
        status_of(&server, "GET /v1/videos", &bearer(&sql), b""),
    );
    let none = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.as_bytes())
    );
    expect(
        "alg none",
        401,
        status_of(&server, "GET /v1/videos", &bearer(&none), b""),
    );
    let confused = forged(r#"{"alg":"RS256"}"#, claims, secret);
    expect(
        "RS256 header over an HS256 signature",
        401,
        status_of(&server, "GET /v1/videos", &bearer(&confused), b""),
    );
    let good_kid = forged(
        r#"{"alg":"HS256","kid":"\u0000\n<script>"}"#,
        claims,
        secret,
    );
    expect(
        "odd kid, right key",
        200,
        status_of(&server, "GET /v1/videos", &bearer(&good_kid), b""),
    );

    // tus headers out of range.
    let tus = "Tus-Resumable: 1.0.0\r\n";
    expect(
        "Upload-Length past u64",
        400,
        status_of(
            &server,
            "POST /v1/uploads",
            &format!(
                "{}{tus}Upload-Length: 99999999999999999999999\r\n",
                bearer(&token)
            ),
            b"",
        ),
    );
    expect(
        "negative Upload-Length",
        400,
        status_of(
            &server,
            "POST /v1/uploads",
            &format!("{}{tus}Upload-Length: -5\r\n", bearer(&token)),
            b"",
        ),
    );
    let many_keys: Vec<String> = (0..2_000).map(|i| format!("k{i} dg==")).collect();
    let metadata = format!("Upload-Metadata: {}\r\n", many_keys.join(","));
    // Held by the head cap (32 KiB), so taken as they are.
    let with_keys = format!("{}{tus}Upload-Length: 10\r\n{metadata}", bearer(&token));
    expect(
        "2,000 metadata keys",
        201,
        status_of(&server, "POST /v1/uploads", &with_keys, b""),
    );

    // WebSockets: an oversized frame is refused by closing, a flood of
    // small messages is read and ignored.
    let url = format!(
        "ws://{}/v1/videos/{id}/events?access_token={token}",
        server.addr
    );
    let (mut ws, _) = tungstenite::connect(&url).expect("stream");
    let big = tungstenite::Message::Binary(vec![0u8; 4 << 20].into());
    let _ = ws.send(big);
    let mut closed = false;
    for _ in 0..100 {
        match ws.read() {
            Ok(tungstenite::Message::Close(_)) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    expect(
        "4 MiB WebSocket frame closes the stream",
        1,
        u16::from(closed),
    );
    let (mut ws, _) = tungstenite::connect(&url).expect("stream");
    let mut sent = 0u16;
    for _ in 0..10_000 {
        if ws
            .send(tungstenite::Message::Text("x".repeat(100).into()))
            .is_err()
        {
            break;
        }
        sent = sent.saturating_add(1);
    }
    let _ = ws.flush();
    let still_answers = status_of(&server, "GET /v1/videos", &bearer(&token), b"");
    expect(
        "10,000 WebSocket messages, then a request",
        200,
        still_answers,
    );
    drop(ws);

    let (unhealthy, slowest) = watch.finish();
    let peak = peak_mib(server.pid());
    println!(
        "ABUSE | /healthz failures {unhealthy}, slowest {slowest} ms | server peak {peak} MiB"
    );
    assert_eq!(
        unhealthy, 0,
        "/healthz failed or was slow {unhealthy} times"
    );
    assert!(peak < 256, "server peak memory {peak} MiB");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
