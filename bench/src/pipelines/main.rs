//! `bench-pipelines`: vidmill's pipelines side by side with the ffmpeg
//! command a person would type for the same work.
//!
//! Each row runs one vidmill operation in-process (through
//! `vidmill-pipelines`, on the main thread) and its ffmpeg anchor command,
//! alternating which goes first from round to round, and reports the median
//! wall time of each and their ratio against a target, plus the CPU time
//! each used (less disturbed by other work on a shared machine). A missed
//! target is a measurement, not a failure: the program exits non-zero only
//! when an operation itself fails, after printing the report with that row
//! marked failed (the failing side is not retried; the other side still runs).
//!
//! Inputs are generated once with `vidmill_pipelines::synth::generate` and
//! cached under `target/bench-inputs/`, named after their spec, so reruns
//! skip the generation; delete that directory to regenerate them.
//! Probing happens once per input, outside the timings, as the server does
//! at upload time.
//!
//! Environment:
//! - `BENCH_ROUNDS`: rounds per row (default 3, at least 1).
//! - `BENCH_ONLY`: run only the rows whose name contains this text.
//! - `BENCH_INPUTS`: cache directory for the generated inputs.
//!
//! Run it with `make bench-pipelines` or
//! `cargo run --release -p vidmill-bench --bin bench-pipelines`.
//!
//! This file owns `main`, the environment settings and the table of rows;
//! the inputs, the two sides of a row, their timing and the report each
//! have a module of their own.

mod inputs;
mod measure;
mod report;
#[path = "../server.rs"]
mod server;
mod sides;
mod tools;

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use vidmill_pipelines::Accuracy;

use inputs::Input;
use sides::{Op, Server};

/// Every error boxed alike: the bench only reports them, never tells them apart.
type BenchResult<T> = Result<T, Box<dyn Error>>;

const DEFAULT_ROUNDS: usize = 3;

fn main() -> BenchResult<()> {
    let config = Config::from_env()?;
    let machine = report::Machine::describe();
    let a = Input::prepare("A", &inputs::spec_a(), &config.inputs_dir)?;
    let b = Input::prepare("B", &inputs::spec_b(), &config.inputs_dir)?;
    let scratch = tempfile::Builder::new()
        .prefix("vidmill-bench-")
        .tempdir()?;
    let server = start_server(scratch.path())?;
    let measured = rows(&a, &b, &server)
        .iter()
        .filter(|r| config.selects(r))
        .map(|row| measure::measure(row, (&a, &b), config.rounds, scratch.path()))
        .collect::<BenchResult<Vec<_>>>()?;
    let load_after = report::Machine::load_average();
    print!(
        "{}",
        report::report(&machine, &load_after, &config, &[&a, &b], &measured)
    );
    let failed = measured.iter().filter(|m| m.failure.is_some()).count();
    if failed > 0 {
        return Err(format!("{failed} row(s) had an operation fail; see the report").into());
    }
    Ok(())
}

/// The release build of `vidmill serve` for the upload → ready rows, with
/// its defaults (all cores, worker processes) and data in `scratch`.
fn start_server(scratch: &Path) -> BenchResult<Server> {
    let dir = scratch.join("server");
    let vidmill = server::start_vidmill(&dir, "").map_err(|e| {
        format!(
            "start {} (make bench-pipelines builds it): {e}",
            server::vidmill_bin().display()
        )
    })?;
    let token = server::token(&dir)?;
    Ok(Server { vidmill, token })
}

/// What the environment asks for.
#[derive(Debug)]
struct Config {
    rounds: usize,
    only: Option<String>,
    inputs_dir: PathBuf,
}

impl Config {
    fn from_env() -> BenchResult<Self> {
        let rounds = match std::env::var("BENCH_ROUNDS") {
            Ok(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("BENCH_ROUNDS must be a whole number ≥ 1, not `{v}`"))?,
            Err(_) => DEFAULT_ROUNDS,
        };
        let only = std::env::var("BENCH_ONLY").ok().filter(|s| !s.is_empty());
        let inputs_dir = inputs_dir();
        fs::create_dir_all(&inputs_dir)?;
        Ok(Self {
            rounds,
            only,
            inputs_dir: fs::canonicalize(&inputs_dir)?,
        })
    }

    fn selects(&self, row: &Row<'_>) -> bool {
        self.only.as_deref().is_none_or(|s| row.work.contains(s))
    }
}

/// `BENCH_INPUTS`, else `bench-inputs` in Cargo's target directory.
fn inputs_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BENCH_INPUTS") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("bench-inputs")
}

/// One line of the benchmark.
#[derive(Debug)]
struct Row<'a> {
    work: &'static str,
    vidmill: Op<'a>,
    /// ffmpeg arguments (after `-y -v error`) with `A` and `B` standing for
    /// the inputs; the commands run one after the other in the output
    /// directory and the row's time is their sum.
    anchor: Vec<&'static str>,
    /// vidmill time / ffmpeg time should be at most this.
    target: f64,
}

const TRANSCODE_B: &str =
    "-i B -c:v libx264 -preset veryfast -crf 23 -c:a aac -movflags +faststart out.mp4";

fn rows<'a>(a: &'a Input, b: &'a Input, server: &'a Server) -> Vec<Row<'a>> {
    let frames = |every, accuracy| Op::Frames {
        input: a,
        every,
        accuracy,
    };
    vec![
        Row {
            work: "remux 1080p H.264/AAC 60 s",
            vidmill: Op::Convert { input: a },
            anchor: vec!["-i A -c copy -movflags +faststart out.mp4"],
            target: 2.0,
        },
        Row {
            work: "transcode VP9 720p 60 s → H.264 veryfast CRF 23 + AAC",
            vidmill: Op::Convert { input: b },
            anchor: vec![TRANSCODE_B],
            target: 1.0,
        },
        Row {
            work: "frames exact every 10 s, 1080p H.264 kf 3 s, 60 s",
            vidmill: frames(10.0, Accuracy::Exact),
            anchor: vec!["-i A -vf fps=1/10 out_%04d.jpg"],
            target: 0.25,
        },
        Row {
            work: "frames exact every 1 s, same source",
            vidmill: frames(1.0, Accuracy::Exact),
            anchor: vec!["-i A -vf fps=1 out_%04d.jpg"],
            target: 1.0,
        },
        Row {
            work: "frames keyframe mode, same source",
            vidmill: frames(1.0, Accuracy::Keyframe),
            anchor: vec!["-skip_frame nokey -i A -fps_mode vfr out_%04d.jpg"],
            target: 1.2,
        },
        Row {
            work: "convert + frames every 2 s, VP9 720p 60 s",
            vidmill: Op::Job {
                input: b,
                every: 2.0,
            },
            anchor: vec![TRANSCODE_B, "-i B -vf fps=1/2 out_%04d.jpg"],
            target: 0.9,
        },
        // The upload rows set the whole service against the bare commands
        // that do what one upload does, each a process of its own: read the
        // file, make the MP4, a frame every 10 s, a poster at 6 s (a tenth
        // of the way in).
        Row {
            work: "upload → ready, 1080p H.264/AAC 60 s (remux, frames every 10 s, poster)",
            vidmill: Op::Upload { input: a, server },
            anchor: vec![
                "ffprobe -show_format -show_streams A",
                "-i A -c copy -movflags +faststart out.mp4",
                "-i A -vf fps=1/10 out_%04d.jpg",
                "-ss 6 -i A -frames:v 1 poster.jpg",
            ],
            target: 1.25,
        },
        Row {
            work: "upload → ready, VP9 720p 60 s (transcode, frames every 10 s, poster)",
            vidmill: Op::Upload { input: b, server },
            anchor: vec![
                "ffprobe -show_format -show_streams B",
                TRANSCODE_B,
                "-i B -vf fps=1/10 out_%04d.jpg",
                "-ss 6 -i B -frames:v 1 poster.jpg",
            ],
            target: 1.1,
        },
    ]
}
