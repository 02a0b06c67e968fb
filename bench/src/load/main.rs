//! `make bench-load`: the release server under load on loopback, stopping
//! by itself. Phase 1, for 60 s together: 50 concurrent uploads, 2,000
//! WebSocket subscribers to the uploader's events, and a storm of range
//! requests; it must end with no unexpected error and every subscriber
//! holding every state event of every upload. Phase 2, the fan-out: 10,000
//! subscribers, the memory each idle one costs (target ≤ 16 KiB) and how
//! late one video's state event reaches them all (p99 target < 100 ms).

mod http;

#[path = "../server.rs"]
mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use server::{rss_kib, start_vidmill, token, Error};
use tokio_tungstenite::tungstenite::Message;
use vidmill_pipelines::synth::{self, AudioCodec, Container, SynthSpec, VideoCodec};

const UPLOADS: usize = 50;
const SUBSCRIBERS: usize = 2_000;
const FAN_OUT: usize = 10_000;
const STORM_TASKS: usize = 16;
const PHASE: Duration = Duration::from_secs(60);

/// State events one subscriber saw: video id → seqs.
type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<u64>>>>;

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    // Quotas and caps raised for one user doing the work of many.
    for (k, v) in [
        ("VIDMILL__SERVER__MAX_CONNECTIONS", "16000"),
        ("VIDMILL__SERVER__MAX_CONNECTIONS_PER_IP", "16000"),
        ("VIDMILL__LIMITS__QUOTA_UPLOADS_IN_PROGRESS", "100"),
        ("VIDMILL__LIMITS__QUOTA_WEBSOCKET_CONNECTIONS", "16000"),
        ("VIDMILL__LIMITS__RATE_REQUESTS_PER_SECOND", "100000"),
        ("VIDMILL__LIMITS__RATE_REQUEST_BURST", "100000"),
    ] {
        std::env::set_var(k, v);
    }
    let v = start_vidmill(dir.path(), "")?;
    let token = token(dir.path())?;
    let pid = v.child.id();
    let source = dir.path().join("upload.webm");
    synth::generate(
        &SynthSpec {
            seconds: 2.0,
            audio: Some(AudioCodec::Vorbis),
            ..SynthSpec::new(VideoCodec::Vp8, Container::Webm)
        },
        &source,
    )?;
    let body = Arc::new(std::fs::read(&source)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let addr = v.addr.clone();
        println!("# vidmill under load (release build, loopback, 2 vCPU)\n");
        let first = phase_one(&addr, &token, body.clone(), pid).await?;
        let second = fan_out(&addr, &token, body, pid).await?;
        println!("{first}\n{second}");
        drop(v);
        Ok(())
    })
}

/// Phase 1; returns its report.
async fn phase_one(addr: &str, token: &str, body: Arc<Vec<u8>>, pid: u32) -> Result<String, Error> {
    // A ready video for the range storm.
    let target = http::upload(addr, token, &body, "outputs=mp4").await?;
    http::wait_for(addr, token, &target, "ready").await?;
    let mp4 = format!("/v1/videos/{target}/video.mp4");
    let size = http::content_length(addr, token, &mp4).await?;

    let errors = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::new();
    let started = Instant::now();
    for _ in 0..SUBSCRIBERS {
        let seen: Seen = Arc::default();
        let url = format!("ws://{addr}/v1/events?access_token={token}");
        let (ws, _) = tokio_tungstenite::connect_async(&url).await?;
        let task = tokio::spawn(record_states(ws, seen.clone(), errors.clone()));
        subscribers.push((seen, task));
    }
    let connect_time = started.elapsed();

    let stop = Arc::new(AtomicBool::new(false));
    let ranges = Arc::new(AtomicU64::new(0));
    let mut storm = Vec::new();
    for i in 0..STORM_TASKS {
        let (addr, token, mp4) = (addr.to_string(), token.to_string(), mp4.clone());
        let (stop, ranges, errors) = (stop.clone(), ranges.clone(), errors.clone());
        storm.push(tokio::spawn(async move {
            let mut n = i as u64;
            while !stop.load(Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let from = (n >> 33) % size;
                let to = (from + 65_535).min(size - 1);
                match http::get_range(&addr, &token, &mp4, from, to).await {
                    Ok(206) => ranges.fetch_add(1, Ordering::Relaxed),
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let mut uploads = Vec::new();
    for _ in 0..UPLOADS {
        let (addr, token, body) = (addr.to_string(), token.to_string(), body.clone());
        // The error as text: a boxed error is not `Send`.
        uploads.push(tokio::spawn(async move {
            http::upload(&addr, &token, &body, "frames_every=1")
                .await
                .map_err(|e| e.to_string())
        }));
    }
    let mut ids = Vec::new();
    for u in uploads {
        match u.await? {
            Ok(id) => ids.push(id),
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let mut peak = 0;
    while started.elapsed() < PHASE {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for s in storm {
        s.await?;
    }
    for id in &ids {
        http::wait_for(addr, token, id, "ready").await?;
    }
    // Every state event of every upload, as the per-video replay tells it.
    let mut expected = BTreeMap::new();
    for id in &ids {
        expected.insert(id.clone(), http::replayed_states(addr, token, id).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut complete = 0;
    for (seen, task) in &subscribers {
        let seen = seen.lock().map_err(|_| "poisoned")?;
        if expected
            .iter()
            .all(|(id, seqs)| seen.get(id).is_some_and(|s| s.is_superset(seqs)))
        {
            complete += 1;
        }
        task.abort();
    }
    let events: usize = expected.values().map(BTreeSet::len).sum();
    Ok(format!(
        "## Phase 1: {UPLOADS} uploads, {SUBSCRIBERS} subscribers and a range storm for {} s\n\n\
         | figure | value |\n|---|---|\n\
         | uploads accepted and ready | {} of {UPLOADS} |\n\
         | subscribers connected | {SUBSCRIBERS} in {:.2} s |\n\
         | subscribers with every state event ({events} events) | {complete} of {SUBSCRIBERS} |\n\
         | range requests answered 206 | {} ({:.0}/s) |\n\
         | unexpected errors | {} |\n\
         | server peak resident memory | {} MiB |\n",
        PHASE.as_secs(),
        ids.len(),
        connect_time.as_secs_f64(),
        ranges.load(Ordering::Relaxed),
        ranges.load(Ordering::Relaxed) as f64 / PHASE.as_secs_f64(),
        errors.load(Ordering::Relaxed),
        peak / 1024,
    ))
}

/// Keeps the seq of every `state` event; anything but a clean end counts
/// as an error.
async fn record_states(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    seen: Seen,
    errors: Arc<AtomicU64>,
) {
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Text(text)) => {
                if let Some((id, seq)) = http::state_event(&text) {
                    if let Ok(mut s) = seen.lock() {
                        s.entry(id).or_default().insert(seq);
                    }
                }
            }
            Ok(Message::Close(_)) => {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(_) => {}
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Phase 2; returns its report. The subscribers follow the owner's
/// stream, and the video whose state event they wait for is uploaded once
/// they are all connected: the event leaves while the upload is answered.
async fn fan_out(addr: &str, token: &str, body: Arc<Vec<u8>>, pid: u32) -> Result<String, Error> {
    let before = rss_kib(pid);
    let arrived: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    let url = format!("ws://{addr}/v1/events?access_token={token}");
    let connect_started = Instant::now();
    for _ in 0..FAN_OUT {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
        let arrived = arrived.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Text(text) = message {
                    if http::state_event(&text).is_some() {
                        if let Ok(mut a) = arrived.lock() {
                            a.push(Instant::now());
                        }
                        return;
                    }
                }
            }
        }));
    }
    let connect_time = connect_started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_kib(pid).saturating_sub(before);
    let sent = Instant::now();
    http::upload(addr, token, &body, "outputs=mp4").await?;
    // The event leaves during the upload, after its probe (a worker
    // process): part of every figure below is this round trip.
    let answered = sent.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrived.lock().map_err(|_| "poisoned")?.len() < FAN_OUT && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in &tasks {
        t.abort();
    }
    let mut late: Vec<f64> = arrived
        .lock()
        .map_err(|_| "poisoned")?
        .iter()
        .map(|t| t.duration_since(sent).as_secs_f64() * 1000.0)
        .collect();
    late.sort_by(f64::total_cmp);
    let at = |q: f64| {
        late.get(((late.len() as f64 * q) as usize).min(late.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let per = idle as f64 / FAN_OUT as f64;
    Ok(format!(
        "## Phase 2: one video's state event fanned out to {FAN_OUT} subscribers\n\n\
         | figure | value | target |\n|---|---|---|\n\
         | subscribers connected | {FAN_OUT} in {:.2} s | |\n\
         | memory per idle subscriber | {per:.1} KiB | ≤ 16 KiB |\n\
         | subscribers reached by the state event | {} of {FAN_OUT} | all |\n\
         | delivery after the upload was sent, p50 / p99 / max | {:.1} / {:.1} / {:.1} ms | p99 < 100 ms |\n\
         | the upload's own round trip (probe included) | {:.1} ms | |\n",
        connect_time.as_secs_f64(),
        late.len(),
        at(0.5),
        at(0.99),
        late.last().copied().unwrap_or(f64::NAN),
        answered.as_secs_f64() * 1000.0,
    ))
}
