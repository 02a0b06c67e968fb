//! Notifications from the real server: webhooks to a receiver in the test
//! (`video.ready` POSTed, retried after a refusal with the same idempotency
//! key, signed with the configured secret) and email to a real SMTP server
//! (aiosmtpd) for owners whose token carried an address.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::support::{webm, Server};

const SECRET: &str = "webhook-test-secret-0123456789abcdef";

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

/// A real SMTP server (tests/integration/clients/smtp_sink.py) saving each
/// message as a file in `dir`; killed on drop.
struct SmtpSink {
    child: std::process::Child,
    port: u16,
}

impl SmtpSink {
    fn start(dir: &std::path::Path) -> Self {
        let clients =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients");
        let mut child = std::process::Command::new(clients.join(".venv/bin/python"))
            .arg(clients.join("smtp_sink.py"))
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("aiosmtpd (`make test-clients` installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port");
        let port = line.trim().parse().expect("a port");
        Self { child, port }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_owner_with_an_address_is_mailed_the_result_with_working_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mail_dir = dir.path().join("mail");
    std::fs::create_dir_all(&mail_dir).expect("mkdir");
    let sink = SmtpSink::start(&mail_dir);
    let server = Server::start_with_env(
        dir.path(),
        "",
        &[
            (
                "VIDMILL__NOTIFY__SMTP_URL",
                &format!("smtp://127.0.0.1:{}", sink.port),
            ),
            ("VIDMILL__NOTIFY__FROM", "vidmill <video@example.org>"),
        ],
    );
    let with_email = |sub: &str, email: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidmill"))
            .args(["token", "--sub", sub, "--email", email, "--config"])
            .arg(server.dir.join("config.toml"))
            .output()
            .expect("token");
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    };
    let alice = with_email("alice", "alice@example.org");
    let id = server
        .upload(&alice, "filename=beach.webm", &webm(dir.path(), 1.0))
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    server.wait_for(&alice, &id, |v| v["state"] == "ready");
    // Bob's token has no address: nothing is mailed to him.
    let bob = server.token("bob");
    let bobs = server
        .upload(&bob, "filename=b.webm", &webm(dir.path(), 1.0))
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    server.wait_for(&bob, &bobs, |v| v["state"] == "ready");

    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mail = loop {
        let mut files: Vec<_> = std::fs::read_dir(&mail_dir)
            .expect("mail dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        if let Some(first) = files.first() {
            std::thread::sleep(Duration::from_millis(500));
            let count = std::fs::read_dir(&mail_dir).expect("dir").count();
            assert_eq!(count, 1, "one mail, to alice only");
            break quoted_printable(&std::fs::read_to_string(first).expect("read mail"));
        }
        assert!(std::time::Instant::now() < deadline, "no mail arrived");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(mail.contains("X-Envelope-To: alice@example.org"), "{mail}");
    assert!(
        mail.contains("Subject: vidmill: \"beach.webm\" is ready"),
        "{mail}"
    );
    let link = mail
        .split_whitespace()
        .find(|w| w.contains("/video.mp4?"))
        .unwrap_or_else(|| panic!("no video link in {mail}"));
    let path = link
        .split_once(server.addr.as_str())
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("{link} is not a link to {}", server.addr));
    let r = server.request("GET", path, &[("Range", "bytes=0-99".into())], b"");
    assert_eq!(r.status, 206, "the mailed link plays: {r:?}");
}

/// Undoes quoted-printable (soft line breaks, `=XX`), as a mail reader does.
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let mut out = Vec::new();
    let bytes = joined.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
