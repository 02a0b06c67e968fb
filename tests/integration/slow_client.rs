//! A WebSocket client that stops reading is closed (1013 when the close
//! frame still fits) without holding up the other clients or the uploads.
//!
//! On loopback the kernel buffers megabytes per socket, more than a test's
//! events fill. The stuck client therefore connects with a small receive
//! buffer and a small maximum segment size: Linux sizes the server's send
//! buffer from the segment size, so about 50 KB of events fill both buffers
//! and the server's next send really blocks, as it would for a phone that
//! went out of coverage.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{webm, Server};

type Socket = tungstenite::WebSocket<TcpStream>;

/// A WebSocket over a TCP connection whose window stays tiny.
fn stuck_client(server: &Server, path: &str) -> Socket {
    let addr: SocketAddr = server.addr.parse().expect("addr");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_tcp_mss(536).expect("mss");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    let (ws, _) = tungstenite::client(format!("ws://{addr}{path}"), stream).expect("handshake");
    ws
}

fn ws_connections(server: &Server) -> u64 {
    let text = String::from_utf8(server.request("GET", "/metrics", &[], b"").body).expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("vidmill_ws_connections "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("vidmill_ws_connections") as u64
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_client_that_never_reads_is_closed_and_others_are_not_hurt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let path = format!("/v1/events?access_token={token}");

    // A reading client reports every video it sees become ready.
    let (mut reader, _) = tungstenite::connect(format!("ws://{}{path}", server.addr)).expect("ws");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || loop {
        match reader.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let e: serde_json::Value = serde_json::from_str(&t).expect("json");
                if e["type"] == "state" && e["state"] == "ready" {
                    let id = e["video_id"].as_str().expect("id").to_string();
                    if ready_tx.send(id).is_err() {
                        return;
                    }
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    });
    let mut stuck = stuck_client(&server, &path);
    wait_until("both connections", Duration::from_secs(5), || {
        ws_connections(&server) == 2
    });

    // Upload until the stuck client's buffers are full and the server has
    // given up on it (a send blocked for 10 s), within a bounded number.
    let media = webm(dir.path(), 0.5);
    let started = Instant::now();
    let mut ids = Vec::new();
    while ws_connections(&server) == 2 {
        assert!(ids.len() < 150, "the stuck client was never closed");
        let r = server.upload(&token, "filename=a.webm&outputs=mp4", &media);
        assert_eq!(r.status, 201, "uploads go on");
        ids.push(r.json()["id"].as_str().expect("id").to_string());
        if ids.len() >= 20 {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let closed_after = started.elapsed();
    for id in &ids {
        server.wait_for(&token, id, |v| v["state"] == "ready");
    }

    // The reading client stayed connected and saw every video finish.
    assert_eq!(ws_connections(&server), 1, "the reader is still connected");
    let mut unseen: std::collections::HashSet<String> = ids.iter().cloned().collect();
    while !unseen.is_empty() {
        let id = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the reader missed {unseen:?}"));
        unseen.remove(&id);
    }

    // The stuck client, reading at last, finds the stream ended by the
    // server after what fitted in the buffers.
    stuck
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let end = loop {
        match stuck.read() {
            Ok(tungstenite::Message::Close(f)) => break format!("close {f:?}"),
            Ok(_) => {}
            Err(e) => break format!("{e}"),
        }
    };
    assert!(
        !end.contains("WouldBlock") && !end.contains("timed out"),
        "{end}"
    );
    eprintln!(
        "stuck client closed after {closed_after:?} and {} uploads: {end}",
        ids.len()
    );
}
