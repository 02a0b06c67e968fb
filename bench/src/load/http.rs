//! Just enough HTTP/1.1 over tokio for the load benchmark: one request per
//! connection, the status and the body back, and the few vidmill calls it
//! makes (upload, poll, range, the per-video event replay).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::Error;

/// Sends one request and reads the whole answer: (status, body).
async fn request(addr: &str, head: String, body: &[u8]) -> Result<(u16, Vec<u8>), Error> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of head")?;
    let status = String::from_utf8_lossy(&answer[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    Ok((status, answer[split + 4..].to_vec()))
}

fn head(method: &str, path: &str, token: &str, extra: &str, length: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\n{extra}Content-Length: {length}\r\n\r\n"
    )
}

/// The value of `"key":"…"` or `"key":number` in a JSON text.
fn field(text: &str, key: &str) -> Option<String> {
    let at = text.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &text[at..];
    Some(match rest.strip_prefix('"') {
        Some(s) => s[..s.find('"')?].to_string(),
        None => rest[..rest.find([',', '}'])?].to_string(),
    })
}

/// Uploads `body` as a raw video with `query`; the new video's id.
pub async fn upload(addr: &str, token: &str, body: &[u8], query: &str) -> Result<String, Error> {
    let path = format!("/v1/videos?filename=load.webm&{query}");
    let (status, answer) = request(
        addr,
        head(
            "POST",
            &path,
            token,
            "Content-Type: video/webm\r\n",
            body.len(),
        ),
        body,
    )
    .await?;
    let text = String::from_utf8_lossy(&answer);
    match status {
        201 => Ok(field(&text, "id").ok_or("no id")?),
        _ => Err(format!("upload answered {status}: {text}").into()),
    }
}

/// Creates a tus upload of `length` bytes and sends none of them: a video
/// in state `uploading`, whose first state event leaves as soon as the
/// catalog has stored it (no probe, no worker). The new video's id.
pub async fn create_upload(addr: &str, token: &str, length: u64) -> Result<String, Error> {
    let (status, answer) = request(
        addr,
        head(
            "POST",
            "/v1/uploads",
            token,
            &format!(
                "Tus-Resumable: 1.0.0\r\nUpload-Length: {length}\r\n\
                 Upload-Metadata: filename ZmFub3V0LndlYm0=\r\n"
            ),
            0,
        ),
        b"",
    )
    .await?;
    let text = String::from_utf8_lossy(&answer);
    match status {
        201 => Ok(field(&text, "id").ok_or("no id")?),
        _ => Err(format!("tus creation answered {status}: {text}").into()),
    }
}

/// Polls the video until it is in `state` (10 minutes at most).
pub async fn wait_for(addr: &str, token: &str, id: &str, state: &str) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, answer) = request(
            addr,
            head("GET", &format!("/v1/videos/{id}"), token, "", 0),
            b"",
        )
        .await?;
        let text = String::from_utf8_lossy(&answer);
        match field(&text, "state").as_deref() {
            Some(s) if s == state => return Ok(()),
            Some("failed") => return Err(format!("{id} failed: {text}").into()),
            _ if Instant::now() > deadline => return Err(format!("{id} never {state}").into()),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The size of the object at `path` (a HEAD).
pub async fn content_length(addr: &str, token: &str, path: &str) -> Result<u64, Error> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(head("HEAD", path, token, "", 0).as_bytes())
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    let at = text.find("content-length:").ok_or("no length")? + 15;
    let line = &text[at..];
    Ok(line[..line.find('\r').ok_or("no end")?].trim().parse()?)
}

/// The status of a `Range: bytes=from-to` request.
pub async fn get_range(
    addr: &str,
    token: &str,
    path: &str,
    from: u64,
    to: u64,
) -> Result<u16, Error> {
    let range = format!("Range: bytes={from}-{to}\r\n");
    Ok(request(addr, head("GET", path, token, &range, 0), b"")
        .await?
        .0)
}

/// `(video_id, seq)` of a `state` event.
pub fn state_event(text: &str) -> Option<(String, u64)> {
    if field(text, "type").as_deref() != Some("state") {
        return None;
    }
    Some((field(text, "video_id")?, field(text, "seq")?.parse().ok()?))
}

/// Every state event's seq of a video, as its replay from the start tells.
pub async fn replayed_states(addr: &str, token: &str, id: &str) -> Result<BTreeSet<u64>, Error> {
    let url = format!("ws://{addr}/v1/videos/{id}/events?since=0&access_token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    let mut seqs = BTreeSet::new();
    // A ready video sends its replay at once; nothing more comes after.
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(500), ws.next()).await
    {
        if let Message::Text(text) = message {
            if let Some((_, seq)) = state_event(&text) {
                seqs.insert(seq);
            }
        }
    }
    Ok(seqs)
}
