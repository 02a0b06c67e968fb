//! Worker processes under faults, with the real server and real GStreamer:
//! a worker killed with SIGSEGV fails only its video (`pipeline-crashed`,
//! after its retry); a worker over its memory limit fails only its video
//! (`limit-exceeded`); and the server SIGKILLed at 30 random moments while
//! a mixed batch is processed still ends with every video ready once, no
//! worker left running and no temp file left.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::Server;

/// A small source (320x240, 6 s).
const SMALL: (&str, u32) = ("320x240", 6);
/// A source whose transcode takes one to two seconds here, so that random
/// kills land mid-run.
const MEDIUM: (&str, u32) = ("640x360", 10);

/// A source made by ffmpeg: `video` and `audio` are its encoder arguments.
fn make(
    dir: &Path,
    name: &str,
    (size, seconds): (&str, u32),
    video: &[&str],
    audio: Option<&[&str]>,
) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size={size}:rate=25:duration={seconds}"));
    if audio.is_some() {
        cmd.args(["-f", "lavfi", "-i"])
            .arg(format!("sine=frequency=440:duration={seconds}"));
    }
    cmd.args(video);
    match audio {
        Some(a) => cmd.args(a),
        None => cmd.arg("-an"),
    };
    let status = cmd.arg(&path).status().expect("ffmpeg");
    assert!(status.success(), "ffmpeg made {name}");
    path
}

/// The mixed batch: remuxes and transcodes, with and without audio.
fn batch(dir: &Path, kind: (&str, u32)) -> Vec<PathBuf> {
    let h264 = [
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
    ];
    vec![
        make(dir, "remux.mp4", kind, &h264, Some(&["-c:a", "aac"])),
        make(dir, "remux-silent.mp4", kind, &h264, None),
        make(dir, "remux.mov", kind, &h264, Some(&["-c:a", "aac"])),
        make(
            dir,
            "transcode.avi",
            kind,
            &["-c:v", "mpeg4", "-q:v", "5"],
            Some(&["-c:a", "libmp3lame"]),
        ),
        make(
            dir,
            "transcode.webm",
            kind,
            &["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "300k"],
            Some(&["-c:a", "libvorbis"]),
        ),
        make(dir, "transcode-silent.avi", kind, &["-c:v", "mjpeg"], None),
    ]
}

fn upload(server: &Server, token: &str, file: &Path) -> String {
    let name = file.file_name().expect("name").to_string_lossy();
    let body = std::fs::read(file).expect("read source");
    let r = server.upload(
        token,
        &format!("filename={name}&outputs=mp4,frames&frames_every=1"),
        &body,
    );
    assert_eq!(r.status, 201, "{name}: {r:?}");
    r.json()["id"].as_str().expect("id").to_string()
}

/// One process as `/proc` shows it.
#[derive(Debug)]
struct Proc {
    pid: u32,
    ppid: u32,
    state: char,
    cmdline: String,
}

fn processes() -> Vec<Proc> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parens.
        let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        found.push(Proc {
            pid,
            ppid,
            state,
            cmdline,
        });
    }
    found
}

/// Worker processes working on files under `dir`, whoever their parent.
fn workers_under(dir: &Path) -> Vec<Proc> {
    let dir = dir.to_string_lossy().into_owned();
    processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(" media-job ") && p.cmdline.contains(&dir))
        .collect()
}

/// The server's worker processes whose command line mentions `needle`.
fn workers_of(server: &Server, needle: &str) -> Vec<Proc> {
    processes()
        .into_iter()
        .filter(|p| {
            p.ppid == server.pid()
                && p.cmdline.contains(" media-job ")
                && p.cmdline.contains(needle)
        })
        .collect()
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

fn state(server: &Server, token: &str, id: &str) -> serde_json::Value {
    server.get(&format!("/v1/videos/{id}"), token).json()
}

fn terminal(v: &serde_json::Value) -> bool {
    v["state"] == "ready" || v["state"] == "failed"
}

/// No worker under `dir` survives, and the server has no zombie child.
fn assert_no_workers_left(dir: &Path, server: Option<&Server>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = workers_under(dir);
        let zombies: Vec<Proc> = server
            .map(|s| {
                processes()
                    .into_iter()
                    .filter(|p| p.ppid == s.pid() && p.state == 'Z')
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() && zombies.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workers left: {left:?}, zombies: {zombies:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_killed_by_sigsegv_fails_only_its_video() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sources = batch(dir.path(), SMALL);
    let server = Server::start(dir.path(), "[media]\ncpu_budget = 2\n");
    let token = server.token("alice");
    let victim = upload(&server, &token, &sources[3]);
    let others = [
        upload(&server, &token, &sources[0]),
        upload(&server, &token, &sources[4]),
    ];
    // Every worker the victim gets (probe, run, verification carry its id
    // in their command line) is killed, on every attempt: the outcome does
    // not depend on timing.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut killed = 0;
    let failed = loop {
        for p in workers_of(&server, &victim) {
            signal(p.pid, "SEGV");
            killed += 1;
        }
        let v = state(&server, &token, &victim);
        if terminal(&v) {
            break v;
        }
        assert!(Instant::now() < deadline, "timed out: {v}");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "pipeline-crashed", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("SIGSEGV"), "{message}");
    assert!(killed >= 2, "one retry, then failed ({killed} killed)");
    for id in &others {
        let v = server.wait_for(&token, id, terminal);
        assert_eq!(v["state"], "ready", "{v}");
    }
    assert_eq!(server.request("GET", "/healthz", &[], b"").status, 200);
    let listed = server.get("/v1/videos", &token).json();
    assert_eq!(listed["videos"].as_array().map(Vec::len), Some(3));
    assert_no_workers_left(dir.path(), Some(&server));
    assert_eq!(server.temp_files(), Vec::<PathBuf>::new());
    eprintln!("SIGSEGV: {message}");
    server.stop();
}

#[test]
fn a_worker_over_its_memory_limit_fails_only_its_video() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = batch(dir.path(), SMALL);
    // A 4K transcode keeps about 500 MiB resident (its probe 150 MiB); the
    // small sources stay under 200 MiB.
    let big = make(
        dir.path(),
        "4k.avi",
        SMALL,
        &["-s", "3840x2160", "-t", "1", "-c:v", "mpeg4", "-q:v", "10"],
        None,
    );
    let limit = (300u64 << 20).to_string();
    let server = Server::start_with_env(
        dir.path(),
        "[media]\ncpu_budget = 2\n",
        &[("VIDMILL__LIMITS__WORKER_MEMORY_BYTES", &limit)],
    );
    let token = server.token("alice");
    let greedy = upload(&server, &token, &big);
    let others = [
        upload(&server, &token, &small[0]),
        upload(&server, &token, &small[3]),
    ];
    let failed = server.wait_for(&token, &greedy, terminal);
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "limit-exceeded", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("limits.worker_memory_bytes"),
        "names the limit: {message}"
    );
    for id in &others {
        let v = server.wait_for(&token, id, terminal);
        assert_eq!(v["state"], "ready", "{v}");
    }
    assert_no_workers_left(dir.path(), Some(&server));
    assert_eq!(server.temp_files(), Vec::<PathBuf>::new());
    eprintln!("memory: {message}");
    server.stop();
}

/// splitmix64: a seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn thirty_sigkills_of_the_server_lose_no_video() {
    let seed = std::env::var("VIDMILL_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("fault test seed: {seed} (VIDMILL_FAULT_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let sources = batch(dir.path(), MEDIUM);
    let extra = "[media]\ncpu_budget = 2\n";
    let started = Instant::now();
    let mut accepted = Vec::new();
    let mut kills_mid_work = 0;
    let mut token: Option<String> = None;
    for round in 0..30 {
        let server = Server::start(dir.path(), extra);
        // Minted once: each round's work starts with the server, so time
        // spent here (long on a loaded machine) would let runs finish
        // before the kill.
        let token = token.get_or_insert_with(|| server.token("alice")).clone();
        // The batch arrives two at a time over the first rounds, so kills
        // also land around uploads and their probes.
        for file in sources.iter().skip(2 * round).take(2) {
            accepted.push(upload(&server, &token, file));
        }
        // Most kills aim at a run: once a worker is up, within 800 ms
        // (a transcode here takes one to two seconds, so those stay in
        // flight across rounds); one in five comes at any time within 3 s,
        // so some runs also finish between kills.
        let aimed = rng.below(5) != 0;
        let wait = if aimed {
            let until = Instant::now() + Duration::from_secs(3);
            while workers_of(&server, "").is_empty() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            rng.below(800)
        } else {
            rng.below(3000)
        };
        std::thread::sleep(Duration::from_millis(wait));
        if !workers_of(&server, "").is_empty() {
            kills_mid_work += 1;
        }
        server.kill();
        // The kernel kills each worker with its server (PR_SET_PDEATHSIG).
        assert_no_workers_left(dir.path(), None);
    }
    assert!(
        kills_mid_work >= 5,
        "only {kills_mid_work} of 30 kills found workers running"
    );
    let server = Server::start(dir.path(), extra);
    let token = server.token("alice");
    for id in &accepted {
        let v = server.wait_for(&token, id, terminal);
        assert_eq!(v["state"], "ready", "{v}");
        assert_eq!(v["error"], serde_json::Value::Null, "{v}");
        assert!(v["outputs"]["mp4"].is_object() && v["outputs"]["frames"].is_object());
    }
    let listed = server.get("/v1/videos?limit=100", &token).json();
    let mut ids: Vec<String> = listed["videos"]
        .as_array()
        .expect("videos")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    accepted.sort();
    assert_eq!(ids, accepted, "none lost, none duplicated");
    assert_no_workers_left(dir.path(), Some(&server));
    assert_eq!(server.temp_files(), Vec::<PathBuf>::new());
    server.stop();
    assert_no_workers_left(dir.path(), None);
    eprintln!(
        "30 SIGKILLs ({kills_mid_work} with workers running), {} videos ready; took {:.1} s",
        accepted.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A DELETE answers within 2 s whatever the video is doing (waiting for a
/// slot, converting, extracting frames in a worker), and leaves no worker
/// or temp file.
#[test]
fn delete_stops_a_video_within_two_seconds_in_every_stage() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One slot, so the second upload waits in the queue.
    let server = Server::start(dir.path(), "\n[media]\ncpu_budget = 1\n");
    let token = server.token("deleter");
    let source = dir.path().join("long.webm");
    std::fs::write(&source, crate::support::webm(dir.path(), 60.0)).expect("source");
    let running = upload(&server, &token, &source);
    server.wait_for(&token, &running, |v| v["stage"] == "converting");
    let waiting = upload(&server, &token, &source);
    let v = server.get(&format!("/v1/videos/{waiting}"), &token).json();
    assert_eq!(v["state"], "queued", "{v}");
    let delete = |id: &str| {
        let started = Instant::now();
        let r = server.request(
            "DELETE",
            &format!("/v1/videos/{id}"),
            &[("Authorization", format!("Bearer {token}"))],
            b"",
        );
        assert_eq!(r.status, 204, "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "DELETE took {:?}",
            started.elapsed()
        );
        assert_eq!(server.get(&format!("/v1/videos/{id}"), &token).status, 404);
    };
    delete(&waiting);
    delete(&running);
    // H.264 is remuxed in a moment; the frames, 600 of them, take longer.
    let h264 = make(
        dir.path(),
        "remux.mp4",
        ("640x360", 60),
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ],
        None,
    );
    let body = std::fs::read(&h264).expect("read");
    let r = server.upload(&token, "filename=remux.mp4&frames_every=0.1", &body);
    assert_eq!(r.status, 201, "{r:?}");
    let framing = r.json()["id"].as_str().expect("id").to_string();
    server.wait_for(&token, &framing, |v| v["stage"] == "extracting_frames");
    delete(&framing);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !workers_under(dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", workers_under(dir.path()));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
}
