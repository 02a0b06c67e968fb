//! Crash recovery with the real engine and a file catalog: the core runs in
//! a child process (`vidmill worker`), is killed with SIGKILL in each
//! processing stage, and started again. Every video must end ready with
//! valid outputs, no duplicate or missing state events, no temp files, and
//! no crash counted: a death of the whole process counts against no video.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vidmill_actors::{SqliteCatalog, Video, VideoState};
use vidmill_pipelines::synth::{self, AudioCodec, Container, SynthSpec, VideoCodec};

fn worker(data: &Path, add: Option<&Path>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vidmill"));
    cmd.args([
        "worker",
        "--cpu-budget",
        "1",
        "--frames-every",
        "0.5",
        "--data",
    ])
    .arg(data);
    if let Some(file) = add {
        cmd.arg("--add").arg(file);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start worker")
}

/// The JSON lines a worker prints, as they come.
fn lines(child: &mut Child) -> impl Iterator<Item = serde_json::Value> {
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
}

/// An H.264/AAC source: it is remuxed, so its run passes through every
/// stage (probing, converting, verifying, extracting_frames, finalizing).
fn source(dir: &Path) -> PathBuf {
    let path = dir.join("clip.mp4");
    let spec = SynthSpec {
        width: 640,
        height: 360,
        seconds: 6.0,
        audio: Some(AudioCodec::Aac),
        ..SynthSpec::new(VideoCodec::H264, Container::Mp4)
    };
    synth::generate(&spec, &path).expect("generate source");
    path
}

/// Runs a worker until it announces `stage`, then kills it with SIGKILL.
/// Returns the video id and whether the stage was reached before the end.
fn kill_in(data: &Path, add: Option<&Path>, stage: &str) -> (Option<String>, bool) {
    let mut child = worker(data, add);
    let mut id = None;
    let mut reached = false;
    for event in lines(&mut child) {
        if event["event"] == "created" {
            id = event["video_id"].as_str().map(String::from);
        }
        if event["event"] == "state" && event["stage"] == stage {
            id = event["video_id"].as_str().map(String::from);
            reached = true;
            break;
        }
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    (id, reached)
}

/// Starts a worker and lets it finish everything left.
fn run_to_idle(data: &Path) -> serde_json::Value {
    let mut child = worker(data, None);
    let started = Instant::now();
    let events: Vec<_> = lines(&mut child).collect();
    let status = child.wait().expect("wait");
    assert!(status.success(), "worker failed: {events:?}");
    assert!(started.elapsed() < Duration::from_secs(120));
    assert_eq!(
        events.last().map(|e| e["event"].clone()),
        Some("idle".into()),
        "{events:?}"
    );
    events
        .into_iter()
        .find(|e| e["event"] == "recovered")
        .expect("recovery line")
}

fn read(data: &Path, id: &str) -> (Video, Vec<u64>) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let catalog = SqliteCatalog::open(&data.join("vidmill.sqlite")).expect("catalog");
        let video = catalog.get(id).await.expect("get").expect("video exists");
        let seqs = catalog
            .events_after(id, 0)
            .await
            .expect("events")
            .iter()
            .map(|e| e.seq)
            .collect();
        (video, seqs)
    })
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains("vidmill-tmp") || p.starts_with(dir.join("work"))
            {
                found.push(p);
            }
        }
    }
    found
}

fn assert_recovered(data: &Path, id: &str) -> Video {
    let (video, seqs) = read(data, id);
    assert_eq!(video.state, VideoState::Ready, "{video:?}");
    assert_eq!(
        seqs,
        (1..=video.last_seq).collect::<Vec<_>>(),
        "state events unique and in order"
    );
    let objects = data.join("objects");
    let mp4 = objects.join(video.outputs.key(id, "video.mp4"));
    let runs = std::fs::read_dir(objects.join(format!("videos/{id}/runs")))
        .expect("runs")
        .count();
    assert_eq!(runs, 1, "one run's objects, however many runs were cut off");
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(&mp4)
        .output()
        .expect("ffprobe");
    let codecs = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(
        probe.status.success() && codecs.contains("h264") && codecs.contains("aac"),
        "{codecs}"
    );
    let zip =
        std::fs::File::open(objects.join(video.outputs.key(id, "frames.zip"))).expect("frames.zip");
    let archive = zip::ZipArchive::new(zip).expect("zip readable");
    assert_eq!(
        archive.len() as u64,
        video.outputs.frames.as_ref().expect("frames").count + 1
    );
    assert!(objects.join(video.outputs.key(id, "poster.jpg")).exists());
    assert_eq!(
        temp_files(data),
        Vec::<PathBuf>::new(),
        "no temp files left"
    );
    video
}

#[test]
fn a_process_killed_in_any_stage_finishes_its_video_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path());
    for stage in [
        "probing",
        "converting",
        "verifying",
        "extracting_frames",
        "finalizing",
    ] {
        let data = dir.path().join(stage);
        let (id, reached) = kill_in(&data, Some(&src), stage);
        let id = id.expect("video created");
        assert!(reached, "the run reached {stage}");
        let recovery = run_to_idle(&data);
        let video = assert_recovered(&data, &id);
        // A death of the whole process counts against no video.
        assert_eq!(video.crashes, 0, "{stage}: {video:?}");
        eprintln!(
            "killed in {stage}: requeued {}, interrupted {}, start-up took {:.1} ms",
            recovery["requeued"],
            recovery["interrupted"],
            recovery["took_ms"].as_f64().unwrap_or(0.0)
        );
    }
}

#[test]
fn a_process_killed_three_times_under_a_video_costs_it_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path());
    let data = dir.path().join("data");
    let (id, reached) = kill_in(&data, Some(&src), "converting");
    let id = id.expect("video created");
    assert!(reached);
    for _ in 0..2 {
        let (_, reached) = kill_in(&data, None, "converting");
        assert!(reached, "restarted run reached converting again");
    }
    run_to_idle(&data);
    let video = assert_recovered(&data, &id);
    assert_eq!(video.crashes, 0, "{video:?}");
    assert_eq!(video.error, None);
}
