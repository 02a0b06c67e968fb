//! `make bench-cluster`: what a second node buys and what PostgreSQL
//! costs, on this machine. The same batch of short videos (transcoded:
//! VP8/Vorbis in, H.264/AAC out) goes through
//!
//! 1. one node on SQLite (with the S3 store, as a cluster has),
//! 2. one node on PostgreSQL,
//! 3. two nodes on PostgreSQL, uploads alternating between them,
//!
//! every node with `media.cpu_budget = 1` and pinned to a core of its own
//! (`taskset`: this machine plays two one-core VMs, while PostgreSQL,
//! Garage and the client run on either core); it prints videos per minute,
//! the two-node speed-up (target ≥ 1.8) and PostgreSQL's overhead on one
//! node (target ≤ 5 %). Then it kills a node mid-encode and times how
//! long the other takes to pick the video up (the lease's lifetime plus a
//! claim). PostgreSQL 15 and Garage run on loopback, as in the tests.

#[path = "../server.rs"]
mod server;

#[path = "../../../actors/tests/common/pg.rs"]
mod pg;

#[path = "../../../tests/integration/garage.rs"]
mod garage;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use server::{
    curl, start_vidmill_with, token, upload, wait_ready, wait_ready_every, Error, Vidmill,
};
use vidmill_pipelines::synth::{self, AudioCodec, Container, SynthSpec, VideoCodec};

const BATCH: usize = 8;
/// Each setup runs this many times, interleaved; the median counts (one
/// run's noise on this machine is as large as the effect measured).
const ROUNDS: usize = 3;
const LEASE_TTL_SECONDS: &str = "5";

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let pg = pg::PgServer::private();
    let garage = garage::Garage::start(&dir.path().join("garage"));
    let source = dir.path().join("clip.webm");
    synth::generate(
        &SynthSpec {
            width: 640,
            height: 360,
            seconds: 6.0,
            audio: Some(AudioCodec::Vorbis),
            ..SynthSpec::new(VideoCodec::Vp8, Container::Webm)
        },
        &source,
    )?;
    let long = dir.path().join("long.webm");
    synth::generate(
        &SynthSpec {
            width: 640,
            height: 360,
            seconds: 60.0,
            audio: Some(AudioCodec::Vorbis),
            ..SynthSpec::new(VideoCodec::Vp8, Container::Webm)
        },
        &long,
    )?;
    println!("# vidmill cluster (release build, loopback, 2 vCPU; {BATCH} videos of 6 s, 640x360 VP8 → H.264)\n");
    let runner = Runner {
        root: dir.path().to_path_buf(),
        pg,
        garage,
    };
    let mut times: [Vec<Duration>; 3] = Default::default();
    for round in 0..ROUNDS {
        times[0].push(runner.batch(&format!("sqlite{round}"), 1, false, &source)?);
        times[1].push(runner.batch(&format!("pgone{round}"), 1, true, &source)?);
        times[2].push(runner.batch(&format!("pgtwo{round}"), 2, true, &source)?);
    }
    let median = |t: &mut Vec<Duration>| {
        t.sort();
        t[t.len() / 2]
    };
    let [mut a, mut b, mut c] = times;
    let (sqlite, pg1, pg2) = (median(&mut a), median(&mut b), median(&mut c));
    let per_minute = |t: Duration| BATCH as f64 * 60.0 / t.as_secs_f64();
    println!("| setup | batch time: median of {ROUNDS} (each run) | videos per minute |\n|---|---:|---:|");
    for (name, t, all) in [
        ("1 node, SQLite + S3", sqlite, &a),
        ("1 node, PostgreSQL + S3", pg1, &b),
        ("2 nodes, PostgreSQL + S3", pg2, &c),
    ] {
        let each: Vec<String> = all
            .iter()
            .map(|t| format!("{:.2}", t.as_secs_f64()))
            .collect();
        println!(
            "| {name} | {:.2} s ({}) | {:.1} |",
            t.as_secs_f64(),
            each.join(", "),
            per_minute(t)
        );
    }
    let speedup = pg1.as_secs_f64() / pg2.as_secs_f64();
    let overhead = pg1.as_secs_f64() / sqlite.as_secs_f64() - 1.0;
    println!(
        "\n| figure | value | target |\n|---|---:|---|\n\
         | two nodes against one (PostgreSQL) | {speedup:.2}× | ≥ 1.8 |\n\
         | PostgreSQL against SQLite, one node | {:+.1} % | ≤ 5 % |",
        overhead * 100.0
    );
    let takeover = runner.takeover(&long)?;
    println!(
        "| node death to another node's run of its video (lease {LEASE_TTL_SECONDS} s) | {:.2} s | lease + a claim |",
        takeover.as_secs_f64()
    );
    Ok(())
}

struct Runner {
    root: PathBuf,
    pg: Arc<pg::PgServer>,
    garage: garage::Garage,
}

impl Runner {
    /// A database of its own for each setup.
    fn database(&self, name: &str) -> Result<String, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            pg::client(&self.pg.url("postgres"))
                .await
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
        })?;
        Ok(self.pg.url(name))
    }

    /// Node number `index` of a setup, on core `index`.
    fn node(&self, setup: &str, index: usize, database: Option<&str>) -> Result<Vidmill, Error> {
        let name = format!("{setup}-{index}");
        let name = name.as_str();
        let mut env = vec![
            ("VIDMILL__STORAGE__TYPE", "s3".to_string()),
            ("VIDMILL__MEDIA__CPU_BUDGET", "1".to_string()),
            ("VIDMILL__SERVER__NODE_ID", name.to_string()),
            (
                "VIDMILL__DATABASE__LEASE_TTL_SECONDS",
                LEASE_TTL_SECONDS.to_string(),
            ),
        ];
        if let Some(url) = database {
            env.push(("VIDMILL__DATABASE__URL", url.to_string()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let cpu = (index % std::thread::available_parallelism().map_or(1, |n| n.get())).to_string();
        start_vidmill_with(
            &self.root.join(setup).join(name),
            &self.garage.server_toml(),
            &env,
            Some(&cpu),
        )
    }

    /// The batch through `nodes` nodes; the time from the first upload to
    /// the last video ready.
    fn batch(
        &self,
        setup: &str,
        nodes: usize,
        postgres: bool,
        source: &Path,
    ) -> Result<Duration, Error> {
        let url = postgres.then(|| self.database(setup)).transpose()?;
        let nodes: Vec<Vidmill> = (0..nodes)
            .map(|i| self.node(setup, i, url.as_deref()))
            .collect::<Result<_, _>>()?;
        let dir = self.root.join(setup).join(format!("{setup}-0"));
        let token = token(&dir)?;
        let (busy0, nodes0) = (machine_busy_seconds(), nodes_cpu(&nodes));
        let started = Instant::now();
        let ids: Vec<(usize, String)> = (0..BATCH)
            .map(|i| {
                let n = i % nodes.len();
                upload(&nodes[n], &token, source, "outputs=mp4").map(|id| (n, id))
            })
            .collect::<Result<_, _>>()?;
        for (n, id) in &ids {
            // Polled every 100 ms: at 20 ms the client's curl processes took
            // half a core from the nodes (measured: 9 of 25 CPU seconds).
            wait_ready_every(&nodes[*n], &token, id, Duration::from_millis(100))?;
        }
        let took = started.elapsed();
        let nodes_used = nodes_cpu(&nodes) - nodes0;
        let others = machine_busy_seconds() - busy0 - nodes_used;
        println!(
            "  {setup}: {:.2} s; CPU seconds: nodes {nodes_used:.1}, everything else (PostgreSQL, Garage, the client) {others:.1}",
            took.as_secs_f64()
        );
        Ok(took)
    }

    /// Kills a node while it converts; the time until another node starts
    /// the video again.
    fn takeover(&self, long: &Path) -> Result<Duration, Error> {
        let url = self.database("takeover")?;
        let a = self.node("takeover", 0, Some(&url))?;
        let token = token(&self.root.join("takeover").join("takeover-0"))?;
        let id = upload(&a, &token, long, "outputs=mp4")?;
        wait_for_stage(&a, &token, &id, "converting")?;
        let b = self.node("takeover", 1, Some(&url))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let took = rt.block_on(async {
            let url = format!("ws://{}/v1/videos/{id}/events?access_token={token}", b.addr);
            let (mut events, _) = tokio_tungstenite::connect_async(&url).await?;
            let killed = Instant::now();
            drop(a);
            // The new run's first state event: probing again.
            while let Some(message) = events.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(text) = message? {
                    if text.contains("\"type\":\"state\"") && text.contains("\"stage\":\"probing\"")
                    {
                        return Ok::<_, Error>(killed.elapsed());
                    }
                }
            }
            Err("the event stream ended".into())
        })?;
        wait_ready(&b, &token, &id)?;
        Ok(took)
    }
}

/// CPU seconds the nodes and their reaped workers have used.
fn nodes_cpu(nodes: &[Vidmill]) -> f64 {
    nodes
        .iter()
        .filter_map(|v| server::cpu_seconds(v.child.id()))
        .sum()
}

/// CPU seconds the whole machine has been busy, from `/proc/stat`.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}

fn wait_for_stage(v: &Vidmill, token: &str, id: &str, stage: &str) -> Result<(), Error> {
    let auth = format!("Authorization: Bearer {token}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let video = curl(&[
            "-s",
            "-H",
            &auth,
            &format!("http://{}/v1/videos/{id}", v.addr),
        ])?;
        if video.contains(&format!("\"stage\":\"{stage}\"")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("video {id} never reached {stage}").into())
}
