//! `make bench-load`: the release server under load on loopback, stopping
//! by itself. Phase 1, for 60 s together: 50 concurrent uploads, 2,000
//! WebSocket subscribers to the uploader's events, and a storm of range
//! requests; it must end with no unexpected error and every subscriber
//! holding every state event of every upload. Phase 2, the fan-out: 10,000
//! subscribers, the memory each idle one costs (target ≤ 16 KiB) and how
//! late one video's state event reaches them all (p99 target < 100 ms).
//! `make bench-fanout` (`bench-load --fan-out`) runs phase 2 alone.
//!
//! Phase 2's subscribers are held by one client thread (`fanout`) that
//! takes each frame's arrival from the kernel's receive timestamp, so the
//! figure is the server's delivery, not how soon the client, on the same
//! two cores, got round to reading it (that is shown beside it). The
//! event is a tus upload's creation: it leaves as soon as the catalog has
//! stored it, so the figure is the fan-out, not a probe's worker process.
//! A plain upload's first state event (after its probe), as measured
//! before, follows for comparison.

mod anchor;
mod fanout;
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
/// State events timed in phase 2, each of a new tus upload.
const EVENTS: usize = 5;

/// State events one subscriber saw: video id → seqs.
type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<u64>>>>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, count] = args.as_slice() {
        if flag == "--anchor" {
            return anchor::serve(count.parse()?);
        }
    }
    // `--fan-out`: phase 2 alone (about 30 s).
    let fan_out_only = args.iter().any(|a| a == "--fan-out");
    let dir = tempfile::tempdir()?;
    // Quotas and caps raised for one user doing the work of many.
    for (k, v) in [
        ("VIDMILL__SERVER__MAX_CONNECTIONS", "16000"),
        ("VIDMILL__SERVER__MAX_CONNECTIONS_PER_IP", "16000"),
        ("VIDMILL__LIMITS__QUOTA_UPLOADS_IN_PROGRESS", "100"),
        ("VIDMILL__LIMITS__QUOTA_WEBSOCKET_CONNECTIONS", "16000"),
        ("VIDMILL__LIMITS__QUOTA_OPEN_UPLOADS", "100"),
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
        let first = match fan_out_only {
            true => String::new(),
            false => phase_one(&addr, &token, body.clone(), pid).await? + "\n",
        };
        let second = fan_out(&addr, &token, body, pid).await?;
        println!("{first}{second}");
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
/// stream, held by one client thread (`fanout`). Once they are all
/// connected and idle, `EVENTS` times a tus upload is created (a state
/// event that leaves as soon as the catalog stored it, no probe), each
/// time waiting for every subscriber to have it; then, as before, one
/// plain upload, whose first state event leaves after the probe.
async fn fan_out(addr: &str, token: &str, body: Arc<Vec<u8>>, pid: u32) -> Result<String, Error> {
    let before = rss_kib(pid);
    let path = format!("/v1/events?access_token={token}");
    let connect_started = Instant::now();
    let subscribers =
        tokio::task::block_in_place(|| fanout::Subscribers::connect(addr, &path, FAN_OUT))?;
    let connect_time = connect_started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_kib(pid).saturating_sub(before);
    let per = idle as f64 / FAN_OUT as f64;
    let mut report = format!(
        "## Phase 2: one video's state event fanned out to {FAN_OUT} subscribers\n\n\
         | figure | value | target |\n|---|---|---|\n\
         | subscribers connected | {FAN_OUT} in {:.2} s | |\n\
         | memory per idle subscriber | {per:.1} KiB | ≤ 16 KiB |\n\n\
         Delivery: from the request that causes the event being sent to the\n\
         event's frame reaching each subscriber's socket (the kernel's receive\n\
         timestamp); \"read\" is when the client thread got to it. The anchor\n\
         rows: the same frame written to as many sockets by two threads of a\n\
         process doing nothing else, from the moment it is told to (\"server\n\
         CPU\" is then that process's).\n\n\
         | event | reached | delivery p50 / p99 / max | read p50 / p99 | first | request answered | server CPU |\n\
         |---|---|---|---|---|---|---|\n",
        connect_time.as_secs_f64(),
    );
    let mut p99s = Vec::new();
    for n in 0..EVENTS {
        let cpu = server::cpu_seconds(pid).unwrap_or(0.0);
        let sent = fanout::now_ns();
        let started = Instant::now();
        let id = http::create_upload(addr, token, 1 << 20).await?;
        let answered = started.elapsed();
        let arrived = subscribers
            .wait(&id, FAN_OUT, Duration::from_secs(30))
            .await;
        let cpu = server::cpu_seconds(pid).unwrap_or(0.0) - cpu;
        let d = Delivery::of(&arrived, sent);
        p99s.push(d.kernel(0.99));
        report += &d.row(&format!("tus creation {}", n + 1), answered, cpu);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // As measured before: the first state event of a plain upload, which
    // leaves after the upload's probe (a worker process).
    let cpu = server::cpu_seconds(pid).unwrap_or(0.0);
    let sent = fanout::now_ns();
    let started = Instant::now();
    let id = http::upload(addr, token, &body, "outputs=mp4").await?;
    let answered = started.elapsed();
    let arrived = subscribers
        .wait(&id, FAN_OUT, Duration::from_secs(30))
        .await;
    let cpu = server::cpu_seconds(pid).unwrap_or(0.0) - cpu;
    report += &Delivery::of(&arrived, sent).row("plain upload (probe)", answered, cpu);
    let lost = subscribers.lost();
    drop(subscribers);

    // The anchor: the same event written by two threads doing nothing else.
    let mut anchor = anchor::Anchor::start(FAN_OUT)?;
    let subscribers =
        tokio::task::block_in_place(|| fanout::Subscribers::connect(&anchor.addr, "/", FAN_OUT))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut anchors = Vec::new();
    for n in 1..=EVENTS {
        let cpu = server::cpu_seconds(anchor.pid).unwrap_or(0.0);
        let sent = fanout::now_ns();
        anchor.send()?;
        let arrived = subscribers
            .wait(&format!("anchor-{n}"), FAN_OUT, Duration::from_secs(30))
            .await;
        let cpu = server::cpu_seconds(anchor.pid).unwrap_or(0.0) - cpu;
        let d = Delivery::of(&arrived, sent);
        anchors.push(d.kernel(0.99));
        report += &d.row(
            &format!("anchor {n}: two threads write()"),
            Duration::ZERO,
            cpu,
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(subscribers);
    drop(anchor);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    report += &format!(
        "\nMedian p99 of the {EVENTS} tus events: {:.1} ms (target < 100 ms); of the \
         anchor: {:.1} ms. Subscribers lost: {lost}.\n",
        median(p99s),
        median(anchors),
    );
    Ok(report)
}

/// One event's arrivals, in milliseconds after its cause was sent.
struct Delivery {
    kernel: Vec<f64>,
    read: Vec<f64>,
}

impl Delivery {
    fn of(arrived: &[fanout::Arrival], sent: i128) -> Self {
        let ms = |t: i128| (t - sent) as f64 / 1e6;
        let mut kernel: Vec<f64> = arrived.iter().map(|a| ms(a.kernel_ns)).collect();
        let mut read: Vec<f64> = arrived.iter().map(|a| ms(a.read_ns)).collect();
        kernel.sort_by(f64::total_cmp);
        read.sort_by(f64::total_cmp);
        Self { kernel, read }
    }

    fn at(sorted: &[f64], q: f64) -> f64 {
        sorted
            .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    }

    fn kernel(&self, q: f64) -> f64 {
        Self::at(&self.kernel, q)
    }

    fn row(&self, what: &str, answered: Duration, cpu: f64) -> String {
        format!(
            "| {what} | {} of {FAN_OUT} | {:.1} / {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} ms | {:.1} ms | {:.0} ms |\n",
            self.kernel.len(),
            self.kernel(0.5),
            self.kernel(0.99),
            self.kernel.last().copied().unwrap_or(f64::NAN),
            Self::at(&self.read, 0.5),
            Self::at(&self.read, 0.99),
            self.kernel.first().copied().unwrap_or(f64::NAN),
            answered.as_secs_f64() * 1000.0,
            cpu * 1000.0,
        )
    }
}
