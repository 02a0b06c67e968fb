//! Webhook notifications from the real server to a receiver in the test:
//! `video.ready` POSTed once acknowledged, retried after a refusal with the
//! same idempotency key, signed with the configured secret.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::support::{webm, Server};

const SECRET: &str = "webhook-test-secret";

/// One request the receiver got.
#[derive(Debug)]
struct Delivery {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// What the receiver answered.
    status: u16,
}

impl Delivery {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Receives webhooks on a loopback port, answering 500 to the first
/// `refuse` and 204 after; reports each.
fn receiver(refuse: usize) -> (String, mpsc::Receiver<Delivery>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/hooks/vidmill",
        listener.local_addr().expect("addr")
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().flatten().enumerate() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let len = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let status = if n < refuse { 500 } else { 204 };
            let _ = (&stream).write_all(
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            if tx
                .send(Delivery {
                    headers,
                    body,
                    status,
                })
                .is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

fn signature_holds(d: &Delivery) -> bool {
    let sig = d.header("vidmill-signature");
    let Some((t, v1)) = sig
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&d.body);
    hex::encode(mac.finalize().into_bytes()) == v1
}

#[test]
fn ready_is_posted_signed_and_retried_until_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, deliveries) = receiver(1);
    let server = Server::start_with_env(
        dir.path(),
        "",
        &[
            ("VIDMILL__NOTIFY__WEBHOOK_URL", &url),
            ("VIDMILL__NOTIFY__WEBHOOK_SECRET", SECRET),
        ],
    );
    let token = server.token("alice");
    let id = server
        .upload(&token, "filename=a.webm", &webm(dir.path(), 1.0))
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    server.wait_for(&token, &id, |v| v["state"] == "ready");

    let first = deliveries
        .recv_timeout(Duration::from_secs(10))
        .expect("a delivery");
    assert_eq!(first.status, 500, "the receiver refuses the first");
    let second = deliveries
        .recv_timeout(Duration::from_secs(10))
        .expect("a retry");
    assert_eq!(second.status, 204);
    for d in [&first, &second] {
        assert!(signature_holds(d), "bad signature: {d:?}");
        assert_eq!(d.header("content-type"), "application/json");
    }
    let key = second.header("idempotency-key");
    assert_eq!(
        first.header("idempotency-key"),
        key,
        "a retry keeps its key"
    );
    let body: serde_json::Value = serde_json::from_slice(&second.body).expect("json");
    assert_eq!(body["type"], "video.ready");
    assert_eq!(body["id"], key);
    assert_eq!(key, format!("{id}:{}", body["event"]["seq"]));
    assert_eq!(body["video"]["id"], id.as_str());
    assert_eq!(body["video"]["state"], "ready");
    assert!(body["video"]["outputs"]["mp4"]["url"]
        .as_str()
        .is_some_and(|u| u.contains("sig=")));
    // Acknowledged: nothing more comes.
    assert!(deliveries.recv_timeout(Duration::from_secs(3)).is_err());
}

#[test]
fn a_webhook_without_a_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[notify]\nwebhook_url = \"http://127.0.0.1:9/hook\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidmill"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notify.webhook_secret"), "{err}");
}
