//! Checks through the public URL, as a client behind any proxy sees the
//! server: health, ranged reads, the largest body that gets through,
//! whether bodies are buffered on the way, and WebSocket upgrades. Uploads
//! it makes are junk that vidmill refuses (415) and removes.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{header, Client, StatusCode};
use vidmill_actors::SqliteCatalog;

use super::{Check, Outcome};
use crate::app::{self, unix_now};
use crate::config::Config;

const MIB: u64 = 1 << 20;

pub async fn checks(config: &Config, base: &str) -> Result<Vec<Check>, String> {
    let client = Client::builder()
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let health = health(&client, base).await;
    let reachable = !matches!(health, Outcome::Fail(_));
    let mut checks = vec![Check::new("public url", health)];
    let names = [
        "range requests",
        "upload size",
        "request bodies",
        "websocket",
    ];
    if !reachable {
        checks.extend(
            names.map(|n| Check::new(n, Outcome::Skip("the public URL is not reachable".into()))),
        );
        return Ok(checks);
    }
    // The server's own keys, never generated here: the doctor must not
    // create files a server would then use.
    let token = app::existing_authenticator(config)?
        .mint("vidmill-doctor", Duration::from_secs(600), None)
        .map_err(|e| format!("{e} (start the server once so it creates its key)"))?;
    let bearer = format!("Bearer {token}");
    checks.push(Check::new(
        "range requests",
        ranges(config, &client, base).await,
    ));
    checks.push(Check::new(
        "upload size",
        upload_size(config, &client, base, &bearer).await,
    ));
    checks.push(Check::new(
        "request bodies",
        buffering(&client, base, &bearer).await,
    ));
    checks.push(Check::new(
        "websocket",
        websocket(&client, base, &token).await,
    ));
    Ok(checks)
}

async fn health(client: &Client, base: &str) -> Outcome {
    for path in ["/healthz", "/readyz"] {
        match client.get(format!("{base}{path}")).send().await {
            Ok(r) if r.status() == StatusCode::OK => {}
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                return Outcome::Fail(format!("{path} answered {status}: {}", body.trim()));
            }
            Err(e) => {
                return Outcome::Fail(format!(
                    "{base}{path}: {e} (is vidmill running, and is --url right?)"
                ))
            }
        }
    }
    Outcome::Ok("/healthz and /readyz answer 200".into())
}

/// `Range: bytes=0-1` on the newest playable video's signed link.
async fn ranges(config: &Config, client: &Client, base: &str) -> Outcome {
    let video = match SqliteCatalog::inspect(&config.database.path) {
        Ok(catalog) => catalog.newest_playable().await,
        Err(e) => return Outcome::Skip(format!("no database to find a video in: {e}")),
    };
    let Ok(Some(video)) = video else {
        return Outcome::Skip("no ready video to probe yet: upload one and run again".into());
    };
    let signer = match app::existing_signer(config) {
        Ok(s) => s,
        Err(e) => return Outcome::Fail(e),
    };
    let path = format!("/v1/videos/{}/video.mp4", video.id);
    let exp = unix_now() + 600;
    let url = format!(
        "{base}{path}?exp={exp}&sig={}",
        signer.sign(&video.owner, &path, exp)
    );
    let mut answer = client
        .get(&url)
        .header(header::RANGE, "bytes=0-1")
        .send()
        .await;
    // With storage.s3.redirect the bucket answers: follow the one redirect.
    if let Ok(r) = &answer {
        if r.status() == StatusCode::FOUND {
            if let Some(to) = r
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
            {
                answer = client
                    .get(to)
                    .header(header::RANGE, "bytes=0-1")
                    .send()
                    .await;
            }
        }
    }
    match answer {
        Ok(r) if r.status() == StatusCode::PARTIAL_CONTENT => {
            let range = r.headers().get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            match r.bytes().await {
                Ok(b) if b.len() == 2 && range.starts_with("bytes 0-1/") => {
                    Outcome::Ok(format!("Range: bytes=0-1 answered 206 ({range})"))
                }
                Ok(b) => Outcome::Fail(format!("206 with {} bytes and Content-Range `{range}`: something rewrites ranged answers", b.len())),
                Err(e) => Outcome::Fail(format!("the 206 body broke off: {e}")),
            }
        }
        Ok(r) if r.status() == StatusCode::OK => Outcome::Fail(
            "Range: bytes=0-1 answered 200 with the whole file: a proxy drops the Range header, so players cannot seek"
                .into(),
        ),
        Ok(r) => Outcome::Fail(format!("Range: bytes=0-1 answered {}", r.status())),
        Err(e) => Outcome::Fail(format!("{url}: {e}")),
    }
}

/// Whether a vidmill problem (`application/problem+json`) answered.
fn from_vidmill(r: &reqwest::Response) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"))
}

/// Posts junk bodies of growing size; vidmill refuses each with 415 after
/// reading it all, a proxy limit answers (or cuts) before that.
async fn upload_size(config: &Config, client: &Client, base: &str, bearer: &str) -> Outcome {
    let max = config.limits.max_upload_bytes;
    let mut sizes: Vec<u64> = [MIB, 16 * MIB, 64 * MIB]
        .into_iter()
        .filter(|s| *s <= max)
        .collect();
    if sizes.is_empty() {
        sizes.push(max);
    }
    let mut passed = 0;
    for size in sizes {
        let sent = client
            .post(format!("{base}/v1/videos?filename=vidmill-doctor.bin"))
            .header(header::AUTHORIZATION, bearer)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(vec![0u8; size as usize])
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE && from_vidmill(&r) => passed = size,
            Ok(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE && !from_vidmill(&r) => {
                return Outcome::Fail(format!(
                    "a proxy refuses bodies of {} MiB with 413 (largest through: {} MiB): raise its limit \
                     (nginx: client_max_body_size) to limits.max_upload_bytes, or use tus uploads",
                    size / MIB,
                    passed / MIB
                ))
            }
            Ok(r) => return Outcome::Fail(format!("a {} MiB body got {}", size / MIB, r.status())),
            Err(e) => return Outcome::Fail(format!("a {} MiB body was cut off: {e}", size / MIB)),
        }
    }
    Outcome::Ok(format!(
        "bodies of {:.0} MiB reach vidmill",
        passed as f64 / MIB as f64
    ))
}

/// Sends half of a tus PATCH, then asks (on another request) whether the
/// server holds any of it before sending the rest. A proxy that buffers
/// bodies passes nothing on until the end.
async fn buffering(client: &Client, base: &str, bearer: &str) -> Outcome {
    let created = client
        .post(format!("{base}/v1/uploads"))
        .header(header::AUTHORIZATION, bearer)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", (2 * MIB).to_string())
        .header("Upload-Metadata", "filename dmlkbWlsbC1kb2N0b3IuYmlu")
        .send()
        .await;
    // Through the URL under test, whatever public URL the server names.
    let location = match created {
        Ok(r) if r.status() == StatusCode::CREATED => r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        Ok(r) => return Outcome::Fail(format!("POST /v1/uploads answered {}", r.status())),
        Err(e) => return Outcome::Fail(format!("POST /v1/uploads: {e}")),
    };
    let Some(path) = location
        .as_deref()
        .and_then(|l| l.find("/v1/uploads/").map(|i| &l[i..]))
    else {
        return Outcome::Fail("POST /v1/uploads answered without a usable Location".into());
    };
    let url = format!("{base}{path}");
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let first =
        futures_util::stream::once(async { Ok::<_, std::io::Error>(vec![0u8; MIB as usize]) });
    let rest = futures_util::stream::once(async move {
        let _ = tokio::time::timeout(Duration::from_secs(10), released).await;
        Ok(vec![0u8; MIB as usize])
    });
    let patch = client
        .patch(&url)
        .header(header::AUTHORIZATION, bearer)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header(header::CONTENT_TYPE, "application/offset+octet-stream")
        .header(header::CONTENT_LENGTH, (2 * MIB).to_string())
        .body(reqwest::Body::wrap_stream(first.chain(rest)))
        .send();
    let patching = tokio::spawn(patch);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut streamed = false;
    while Instant::now() < deadline && !streamed {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let head = client
            .head(&url)
            .header(header::AUTHORIZATION, bearer)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await;
        streamed = head
            .ok()
            .and_then(|r| {
                r.headers()
                    .get("upload-offset")?
                    .to_str()
                    .ok()?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|o| o > 0);
    }
    let _ = release.send(());
    let _ = patching.await;
    // The junk is refused (415) and removed on its last byte; make sure.
    let _ = client
        .delete(&url)
        .header(header::AUTHORIZATION, bearer)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await;
    if streamed {
        Outcome::Ok("bodies reach vidmill as they arrive (not buffered on the way)".into())
    } else {
        Outcome::Fail(
            "nothing of a half-sent body reached vidmill in 3 s: a proxy buffers request bodies \
             (nginx: proxy_request_buffering off), so uploads show no progress and sit on its disk"
                .into(),
        )
    }
}

async fn websocket(client: &Client, base: &str, token: &str) -> Outcome {
    let url = format!("{base}/v1/events?access_token={token}");
    let answer = client
        .get(&url)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, "dmlkbWlsbC1kb2N0b3I9PQ==")
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match answer {
        Ok(r) if r.status() == StatusCode::SWITCHING_PROTOCOLS => {
            Outcome::Ok("upgrade answered 101".into())
        }
        Ok(r) => Outcome::Fail(format!(
            "the WebSocket upgrade answered {}: a proxy does not pass Upgrade/Connection headers \
             (nginx: proxy_http_version 1.1 and proxy_set_header Upgrade/Connection)",
            r.status()
        )),
        Err(e) => Outcome::Fail(format!("the WebSocket upgrade failed: {e}")),
    }
}
