//! `vidmill doctor` against the real server, directly and through a badly
//! configured proxy (one that buffers bodies, caps them at 2 MiB, drops
//! `Range` and the WebSocket upgrade headers): it must pass the first and
//! name each problem of the second.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use crate::support::{webm, Server};

fn doctor(server: &Server, url: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vidmill"))
        .args(["doctor", "--config"])
        .arg(server.dir.join("config.toml"))
        .args(["--url", url])
        .output()
        .expect("run doctor");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| {
            l.split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")
                .starts_with(check)
        })
        .unwrap_or_else(|| panic!("no `{check}` line in\n{report}"))
}

fn with_a_ready_video(dir: &std::path::Path) -> Server {
    let server = Server::start(dir, "");
    let token = server.token("alice");
    let id = server
        .upload(&token, "filename=a.webm", &webm(dir, 1.0))
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    server.wait_for(&token, &id, |v| v["state"] == "ready");
    server
}

#[test]
fn doctor_finds_nothing_wrong_with_a_direct_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = with_a_ready_video(dir.path());
    let (ok, report) = doctor(&server, &format!("http://{}", server.addr));
    assert!(ok, "{report}");
    for check in [
        "gstreamer",
        "database",
        "storage",
        "public url",
        "range requests",
        "upload size",
        "request bodies",
        "websocket",
    ] {
        assert!(
            line(&report, check).trim_start().starts_with("ok"),
            "{check}:\n{report}"
        );
    }
    assert!(report.contains("no problems found"), "{report}");
    // Its probes leave nothing behind.
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
    let doctor_videos = server
        .get("/v1/videos", &server.token("vidmill-doctor"))
        .json();
    assert_eq!(doctor_videos["videos"], serde_json::json!([]));
}

#[test]
fn doctor_names_each_problem_of_a_bad_proxy_and_an_unreachable_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = with_a_ready_video(dir.path());
    let proxy = bad_proxy(server.addr.clone());
    let (ok, report) = doctor(&server, &format!("http://{proxy}"));
    assert!(!ok, "{report}");
    assert!(line(&report, "public url").contains("ok"), "{report}");
    for (check, names) in [
        ("range requests", "drops the Range header"),
        ("upload size", "client_max_body_size"),
        ("request bodies", "proxy_request_buffering off"),
        ("websocket", "Upgrade/Connection"),
    ] {
        let l = line(&report, check);
        assert!(
            l.contains("FAIL") && l.contains(names),
            "{check}: {l}\n{report}"
        );
    }

    let closed = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (ok, report) = doctor(&server, &format!("http://{closed}"));
    assert!(!ok);
    assert!(line(&report, "public url").contains("FAIL"), "{report}");
    assert!(line(&report, "websocket").contains("skip"), "{report}");
}

/// A proxy with every classic misconfiguration: reads the whole body before
/// passing it on, refuses bodies over 2 MiB itself, drops `Range`,
/// `Upgrade` and `Connection`. Returns its address.
fn bad_proxy(backend: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let backend = backend.clone();
            std::thread::spawn(move || relay(client, &backend));
        }
    });
    addr
}

fn relay(client: TcpStream, backend: &str) {
    let mut reader = BufReader::new(&client);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        let name = h
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name == "content-length" {
            length = h
                .split(':')
                .nth(1)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
        if !["range", "upgrade", "connection", "host"].contains(&name.as_str()) {
            headers.push(h);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    if length > 2 << 20 {
        let page = "<html><body>413 Request Entity Too Large</body></html>";
        let _ = (&client).write_all(
            format!("HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}", page.len()).as_bytes(),
        );
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(backend) else {
        return;
    };
    let mut head = format!("{request_line}Host: {backend}\r\nConnection: close\r\n");
    for h in headers {
        head.push_str(&h);
    }
    head.push_str("\r\n");
    if upstream
        .write_all(head.as_bytes())
        .and_then(|()| upstream.write_all(&body))
        .is_err()
    {
        return;
    }
    let mut answer = Vec::new();
    let _ = upstream.read_to_end(&mut answer);
    let _ = (&client).write_all(&answer);
}

#[test]
fn doctor_creates_nothing_on_a_machine_not_set_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\npath = \"{d}/vidmill.sqlite\"\n[storage]\npath = \"{d}/objects\"\n\
             [server]\nlisten = \"127.0.0.1:9\"\n",
            d = data.display()
        ),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_vidmill"))
        .args(["doctor", "--config"])
        .arg(&config)
        .output()
        .expect("run doctor");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        line(&report, "database").contains("does not exist"),
        "{report}"
    );
    assert!(!data.join("vidmill.sqlite").exists(), "no database created");
    assert!(
        !data.exists(),
        "nothing created: {:?}",
        std::fs::read_dir(&data).map(|d| d.count())
    );
}
