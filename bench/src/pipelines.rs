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

use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use vidmill_pipelines::synth::{self, AudioCodec, Container, Pattern, SynthSpec, VideoCodec};
use vidmill_pipelines::{
    convert, frames, probe, run_job, Accuracy, Control, ConvertSpec, FramesSpec, JobSpec,
    MediaFacts,
};

type BenchResult<T> = Result<T, Box<dyn Error>>;

const DEFAULT_ROUNDS: usize = 3;

fn main() -> BenchResult<()> {
    let config = Config::from_env()?;
    let machine = Machine::describe();
    let a = Input::prepare("A", &spec_a(), &config.inputs_dir)?;
    let b = Input::prepare("B", &spec_b(), &config.inputs_dir)?;
    let scratch = tempfile::Builder::new()
        .prefix("vidmill-bench-")
        .tempdir()?;
    let measured = rows(&a, &b)
        .iter()
        .filter(|r| config.selects(r))
        .map(|row| measure(row, (&a, &b), config.rounds, scratch.path()))
        .collect::<BenchResult<Vec<_>>>()?;
    let load_after = Machine::load_average();
    print!(
        "{}",
        report(&machine, &load_after, &config, &[&a, &b], &measured)
    );
    let failed = measured.iter().filter(|m| m.failure.is_some()).count();
    if failed > 0 {
        return Err(format!("{failed} row(s) had an operation fail; see the report").into());
    }
    Ok(())
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

/// The machine the numbers come from.
#[derive(Debug)]
struct Machine {
    date: String,
    cpus: usize,
    cpu_model: String,
    gstreamer: String,
    ffmpeg: String,
    load_before: String,
}

impl Machine {
    fn describe() -> Self {
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let gst = command_output("gst-inspect-1.0", &["--version"]);
        // Its second line names the library ("GStreamer 1.22.0"), the first the tool.
        let gstreamer = gst
            .lines()
            .find(|l| l.starts_with("GStreamer"))
            .or_else(|| gst.lines().next())
            .unwrap_or("unknown")
            .to_string();
        Self {
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
                .trim()
                .to_string(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            gstreamer,
            ffmpeg: ffmpeg_version(),
            load_before: Self::load_average(),
        }
    }

    /// The 1, 5 and 15 minute load averages, a hint of how busy the machine was.
    fn load_average() -> String {
        fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into())
    }
}

/// A command's stdout, or an empty string when it cannot run.
fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `ffmpeg -version`'s first line without its copyright notice.
fn ffmpeg_version() -> String {
    let out = command_output("ffmpeg", &["-version"]);
    let line = out.lines().next().unwrap_or("ffmpeg version unknown");
    line.split(" Copyright")
        .next()
        .unwrap_or(line)
        .trim()
        .to_string()
}

/// Input A: 1080p H.264 + AAC in MP4 (`moov` at the end), keyframe every 3 s.
fn spec_a() -> SynthSpec {
    SynthSpec {
        width: 1920,
        height: 1080,
        fps: 30,
        seconds: 60.0,
        audio: Some(AudioCodec::Aac),
        keyframe_every: 90,
        pattern: Pattern::Bars,
        x264_preset: "veryfast",
        ..SynthSpec::new(VideoCodec::H264, Container::Mp4)
    }
}

/// Input B: 720p VP9 + Opus in WebM, keyframe every 3 s.
fn spec_b() -> SynthSpec {
    SynthSpec {
        width: 1280,
        height: 720,
        fps: 30,
        seconds: 60.0,
        audio: Some(AudioCodec::Opus),
        keyframe_every: 90,
        pattern: Pattern::Bars,
        ..SynthSpec::new(VideoCodec::Vp9, Container::Webm)
    }
}

/// A generated, probed source file.
#[derive(Debug)]
struct Input {
    label: &'static str,
    path: PathBuf,
    facts: MediaFacts,
    probe_seconds: f64,
    generated: bool,
    /// Seconds between keyframes that the spec asks for.
    requested_spacing: f64,
}

impl Input {
    /// Reuses the cached file when it still probes as `spec` says, else
    /// generates it; then probes it (the probe time is reported, not counted).
    fn prepare(label: &'static str, spec: &SynthSpec, dir: &Path) -> BenchResult<Self> {
        let path = dir.join(cache_name(label, spec));
        let cached = path.is_file() && probe(&path).is_ok_and(|f| matches_spec(&f, spec));
        if !cached {
            generate(label, spec, &path)?;
        }
        let started = Instant::now();
        let facts = probe(&path)?;
        let probe_seconds = started.elapsed().as_secs_f64();
        if !matches_spec(&facts, spec) {
            return Err(format!("{} does not probe as its spec: {facts:?}", path.display()).into());
        }
        Ok(Self {
            label,
            path,
            facts,
            probe_seconds,
            generated: !cached,
            requested_spacing: f64::from(spec.keyframe_every) / f64::from(spec.fps),
        })
    }

    fn describe(&self) -> String {
        let v = &self.facts.video;
        let audio = self.facts.audio.as_ref().map_or("no audio", |a| &a.codec);
        let format = [
            v.profile.as_ref().map(|p| format!("profile {p}")),
            v.pixel_format.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        format!(
            "{}: {} ({format}) {}x{} + {audio}, {} container, {:.3} s, {:.1} MB",
            self.label,
            v.codec,
            v.width,
            v.height,
            self.facts.container,
            self.facts.duration.unwrap_or(0.0),
            megabytes(self.facts.size_bytes),
        )
    }

    /// The keyframe spacing vidmill probed against the one asked for, with
    /// ffprobe's count of packets flagged as keyframes as a second opinion.
    fn keyframes(&self) -> String {
        let probed = self.facts.video.keyframe_spacing;
        let line = format!(
            "{}: keyframe every {:.1} s requested, vidmill probed {}; ffprobe: {}",
            self.label,
            self.requested_spacing,
            probed.map_or("no spacing".into(), |s| format!("{s:.2} s")),
            keyframe_packets(&self.path)
        );
        let off = probed.is_none_or(|p| (p / self.requested_spacing - 1.0).abs() > 0.25);
        if off {
            format!("{line}. **Warning: the spacing is not what was asked for.**")
        } else {
            line
        }
    }
}

/// "1210 of 1800 video packets are keyframes", from ffprobe (no decoding).
fn keyframe_packets(path: &Path) -> String {
    let flags = command_output(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=flags",
            "-of",
            "csv=p=0",
            &path.to_string_lossy(),
        ],
    );
    let total = flags.lines().count();
    let keys = flags.lines().filter(|l| l.starts_with('K')).count();
    format!("{keys} of {total} video packets are keyframes")
}

/// A file name that changes whenever the spec does.
fn cache_name(label: &str, spec: &SynthSpec) -> String {
    let audio = spec
        .audio
        .map_or("noaudio".into(), |a| format!("{a:?}").to_lowercase());
    let container = format!("{:?}", spec.container).to_lowercase();
    let extension = match spec.container {
        Container::Webm => "webm",
        Container::Mkv => "mkv",
        Container::Mov => "mov",
        _ => "mp4",
    };
    // The x264 preset only matters to the H.264 flavours.
    let video = match spec.video {
        VideoCodec::H264 | VideoCodec::H264High10 | VideoCodec::H264Yuv444 => {
            format!("{:?}-{}", spec.video, spec.x264_preset)
        }
        other => format!("{other:?}"),
    }
    .to_lowercase();
    format!(
        "{}-{}x{}-{}fps-{}s-{video}-{audio}-{container}-kf{}-{}.{extension}",
        label.to_lowercase(),
        spec.width,
        spec.height,
        spec.fps,
        spec.seconds,
        spec.keyframe_every,
        format!("{:?}", spec.pattern).to_lowercase(),
    )
}

fn matches_spec(facts: &MediaFacts, spec: &SynthSpec) -> bool {
    let codec = match spec.video {
        VideoCodec::H264 => Some("h264"),
        VideoCodec::Vp9 => Some("vp9"),
        // The other codecs are not used here; their names are not checked.
        _ => None,
    };
    codec.is_none_or(|c| facts.video.codec == c)
        && facts.video.width == spec.width
        && facts.video.height == spec.height
        && facts.audio.is_some() == spec.audio.is_some()
        && facts
            .duration
            .is_some_and(|d| (d - spec.seconds).abs() < 0.5)
}

/// Generates under a temporary name, so an interrupted run leaves no
/// half-written input in the cache.
fn generate(label: &str, spec: &SynthSpec, path: &Path) -> BenchResult<()> {
    eprintln!("generating input {label}: {}", path.display());
    let started = Instant::now();
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    synth::generate(spec, &partial)?;
    fs::rename(&partial, path)?;
    eprintln!("  generated in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The conversion every row asks for: what the anchors' `-preset veryfast
/// -crf 23` ask of ffmpeg (a browser-ready source is remuxed instead).
fn convert_spec(output: PathBuf) -> ConvertSpec {
    ConvertSpec {
        preset: "veryfast".into(),
        crf: 23,
        ..ConvertSpec::new(output)
    }
}

/// One vidmill operation, run through the library.
#[derive(Debug)]
enum Op<'a> {
    /// `convert` with [`convert_spec`].
    Convert { input: &'a Input },
    Frames {
        input: &'a Input,
        every: f64,
        accuracy: Accuracy,
    },
    /// `run_job` with [`convert_spec`] and frames every `every` seconds.
    Job { input: &'a Input, every: f64 },
}

impl Op<'_> {
    /// Runs the operation with outputs in `dir`; returns what it chose.
    fn run(&self, dir: &Path) -> BenchResult<String> {
        let ctl = Control::default();
        match self {
            Op::Convert { input } => {
                let spec = convert_spec(dir.join("out.mp4"));
                let r = convert(&input.path, &input.facts, &spec, &ctl)?;
                Ok(format!("method {:?}, {}x{}", r.method, r.width, r.height))
            }
            Op::Frames {
                input,
                every,
                accuracy,
            } => {
                let spec = FramesSpec {
                    accuracy: *accuracy,
                    ..FramesSpec::new(dir.join("frames.zip"), *every)
                };
                let r = frames(&input.path, &input.facts, &spec, &ctl)?;
                Ok(format!("strategy {:?}, {} images", r.strategy, r.count))
            }
            Op::Job { input, every } => {
                let job = JobSpec {
                    convert: Some(convert_spec(dir.join("out.mp4"))),
                    frames: Some(FramesSpec::new(dir.join("frames.zip"), *every)),
                };
                let r = run_job(&input.path, &input.facts, &job, &ctl)?;
                let method = r.convert.map(|c| format!("method {:?}", c.method));
                let frames = r
                    .frames
                    .map(|f| format!("strategy {:?}, {} images", f.strategy, f.count));
                Ok([method, frames]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" + "))
            }
        }
    }
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

fn rows<'a>(a: &'a Input, b: &'a Input) -> Vec<Row<'a>> {
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
    ]
}

/// An anchor's arguments with `A` and `B` replaced by the input paths.
fn anchor_args(template: &str, a: &Input, b: &Input) -> Vec<String> {
    template
        .split_whitespace()
        .map(|t| match t {
            "A" => a.path.to_string_lossy().into_owned(),
            "B" => b.path.to_string_lossy().into_owned(),
            t => t.to_string(),
        })
        .collect()
}

/// Runs a row's anchor commands in `dir`, one after the other.
fn run_anchor(row: &Row<'_>, inputs: (&Input, &Input), dir: &Path) -> BenchResult<()> {
    for template in &row.anchor {
        let a = anchor_args(template, inputs.0, inputs.1);
        let out = Command::new("ffmpeg")
            .args(["-y", "-v", "error"])
            .args(&a)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "ffmpeg {template} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
    }
    Ok(())
}

/// "mp4 15.2 MB (High yuv420p) + 6 jpg", from the files a run left in `dir`.
fn describe_outputs(dir: &Path) -> BenchResult<String> {
    let mut jpgs = 0;
    let mut parts = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("jpg") => jpgs += 1,
            Some("mp4") => parts.push(format!(
                "mp4 {:.1} MB ({})",
                megabytes(fs::metadata(&path)?.len()),
                video_format(&path)
            )),
            _ => {}
        }
    }
    if jpgs > 0 {
        parts.push(format!("{jpgs} jpg"));
    }
    Ok(parts.join(" + "))
}

/// The H.264 profile and pixel format ffprobe reads from an output.
fn video_format(path: &Path) -> String {
    let out = command_output(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=profile,pix_fmt",
            "-of",
            "default=nw=1:nk=1",
            &path.to_string_lossy(),
        ],
    );
    out.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// The two contenders of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Vidmill,
    Ffmpeg,
}

/// One successful timed run.
#[derive(Debug)]
struct Run {
    /// Wall-clock seconds.
    wall: f64,
    /// CPU seconds (user + system) the run used, all threads or children
    /// included: less disturbed than wall time by other work on the machine.
    cpu: Option<f64>,
    /// What the side chose and made.
    detail: String,
}

/// The runs of one side of a row.
#[derive(Debug, Default)]
struct Runs {
    wall: Vec<f64>,
    cpu: Vec<f64>,
    /// From the last run.
    detail: String,
}

impl Runs {
    fn push(&mut self, run: Run) {
        self.wall.push(run.wall);
        self.cpu.extend(run.cpu);
        self.detail = run.detail;
    }
}

/// A row's timings.
#[derive(Debug)]
struct Measured {
    work: &'static str,
    target: f64,
    vidmill: Runs,
    ffmpeg: Runs,
    anchor: String,
    /// The first failed operation: that side is not run again.
    failure: Option<(Side, String)>,
}

impl Measured {
    fn new(row: &Row<'_>) -> Self {
        Self {
            work: row.work,
            target: row.target,
            vidmill: Runs::default(),
            ffmpeg: Runs::default(),
            anchor: row
                .anchor
                .iter()
                .map(|a| format!("ffmpeg -y -v error {a}"))
                .collect::<Vec<_>>()
                .join(" && "),
            failure: None,
        }
    }

    /// `None` when a side has no successful run.
    fn ratio(&self) -> Option<f64> {
        Some(median(&self.vidmill.wall)? / median(&self.ffmpeg.wall)?)
    }

    fn failed(&self, side: Side) -> bool {
        self.failure.as_ref().is_some_and(|(s, _)| *s == side)
    }

    fn runs(&mut self, side: Side) -> &mut Runs {
        match side {
            Side::Vidmill => &mut self.vidmill,
            Side::Ffmpeg => &mut self.ffmpeg,
        }
    }
}

/// Times both sides `rounds` times, alternating which goes first. A side
/// whose operation fails is recorded as failed and not run again; the other
/// side still runs, so its time is known.
fn measure(
    row: &Row<'_>,
    inputs: (&Input, &Input),
    rounds: usize,
    scratch: &Path,
) -> BenchResult<Measured> {
    eprintln!("{}", row.work);
    let mut m = Measured::new(row);
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Side::Vidmill, Side::Ffmpeg]
        } else {
            [Side::Ffmpeg, Side::Vidmill]
        };
        for side in order {
            if m.failed(side) {
                continue;
            }
            let progress = format!("  round {}/{rounds} {side:?}", round + 1);
            match time_once(row, inputs, side, scratch)? {
                Ok(run) => {
                    eprintln!("{progress}: {:.2} s ({})", run.wall, run.detail);
                    m.runs(side).push(run);
                }
                Err(e) => {
                    eprintln!("{progress}: FAILED: {e}");
                    m.failure = m.failure.or(Some((side, e)));
                }
            }
        }
    }
    Ok(m)
}

/// One timed run in a fresh output directory, removed afterwards. The outer
/// error is the bench's own (files), the inner one the operation's.
fn time_once(
    row: &Row<'_>,
    inputs: (&Input, &Input),
    side: Side,
    scratch: &Path,
) -> BenchResult<Result<Run, String>> {
    let dir = scratch.join("run");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir(&dir)?;
    let cpu_before = cpu_seconds(side);
    let started = Instant::now();
    let chose = match side {
        Side::Vidmill => row.vidmill.run(&dir).map(Some),
        Side::Ffmpeg => run_anchor(row, inputs, &dir).map(|()| None),
    };
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(side)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let chose = match chose {
        Ok(c) => c,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let outputs = describe_outputs(&dir)?;
    fs::remove_dir_all(&dir)?;
    let detail = match chose {
        Some(c) if outputs.is_empty() => c,
        Some(c) => format!("{c}; {outputs}"),
        None => outputs,
    };
    Ok(Ok(Run { wall, cpu, detail }))
}

/// CPU seconds used so far by this process (vidmill runs in it) or by its
/// finished children (the ffmpeg commands), from `/proc/self/stat`.
fn cpu_seconds(side: Side) -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses; `utime` is
    // field 14 of the whole line, so index 11 here.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let index = match side {
        Side::Vidmill => 11,
        Side::Ffmpeg => 13,
    };
    let user: f64 = fields.get(index)?.parse().ok()?;
    let system: f64 = fields.get(index + 1)?.parse().ok()?;
    Some((user + system) / clock_ticks())
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        command_output("getconf", &["CLK_TCK"])
            .trim()
            .parse()
            .unwrap_or(100.0)
    })
}

fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

fn median_text(xs: &[f64]) -> String {
    median(xs).map_or("–".into(), |m| format!("{m:.2}"))
}

fn seconds_list(xs: &[f64]) -> String {
    xs.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole markdown report.
fn report(
    machine: &Machine,
    load_after: &str,
    config: &Config,
    inputs: &[&Input],
    rows: &[Measured],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## vidmill pipelines vs ffmpeg\n");
    let _ = writeln!(s, "{}\n", machine_line(machine, load_after));
    let _ = writeln!(
        s,
        "{} round(s) per row, vidmill and ffmpeg alternating which runs first; \
         median wall time of each. CPU s is the median of user + system seconds \
         (all threads, or all ffmpeg processes), which other work on the machine \
         disturbs less than wall time.\n",
        config.rounds
    );
    let _ = writeln!(s, "{}", results_table(rows));
    let _ = writeln!(s, "{}", details_table(rows));
    let _ = writeln!(s, "{}", inputs_section(inputs, &config.inputs_dir));
    s
}

fn machine_line(m: &Machine, load_after: &str) -> String {
    format!(
        "Measured {} on {} CPU(s) ({}), {}, {}; load average {} before, {} after.",
        m.date, m.cpus, m.cpu_model, m.gstreamer, m.ffmpeg, m.load_before, load_after
    )
}

fn results_table(rows: &[Measured]) -> String {
    let mut s = String::from(
        "| work | vidmill median s | ffmpeg median s | ratio | target | met? |\n\
         |---|---:|---:|---:|---:|:---:|\n",
    );
    for r in rows {
        let verdict = match (r.ratio(), &r.failure) {
            (_, Some((side, _))) => format!("**{side:?} failed**"),
            (Some(x), None) if x <= r.target => "yes".into(),
            _ => "**no**".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | ≤ {} | {verdict} |",
            r.work,
            seconds_or_failed(&r.vidmill.wall, r.failed(Side::Vidmill)),
            seconds_or_failed(&r.ffmpeg.wall, r.failed(Side::Ffmpeg)),
            r.ratio().map_or("–".into(), |x| format!("{x:.2}")),
            r.target,
        );
    }
    s
}

/// The median, or "failed" when the side failed before any run finished.
fn seconds_or_failed(times: &[f64], failed: bool) -> String {
    match median(times) {
        Some(m) if failed => format!("{m:.2} (then failed)"),
        Some(m) => format!("{m:.2}"),
        None => "failed".into(),
    }
}

fn details_table(rows: &[Measured]) -> String {
    let mut s = String::from(
        "| work | vidmill chose and made | vidmill runs s | vidmill CPU s | \
         ffmpeg made | ffmpeg runs s | ffmpeg CPU s | CPU ratio |\n\
         |---|---|---|---:|---|---|---:|---:|\n",
    );
    for r in rows {
        let cpu_ratio = median(&r.vidmill.cpu)
            .zip(median(&r.ffmpeg.cpu))
            .map_or("–".into(), |(v, f)| format!("{:.2}", v / f));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {cpu_ratio} |",
            r.work,
            r.vidmill.detail,
            seconds_list(&r.vidmill.wall),
            median_text(&r.vidmill.cpu),
            r.ffmpeg.detail,
            seconds_list(&r.ffmpeg.wall),
            median_text(&r.ffmpeg.cpu),
        );
    }
    let failures: Vec<_> = rows
        .iter()
        .filter_map(|r| r.failure.as_ref().map(|(side, e)| (r.work, side, e)))
        .collect();
    if !failures.is_empty() {
        s.push_str("\nFailures:\n\n");
        for (work, side, e) in failures {
            let _ = writeln!(s, "- {work} ({side:?}): {e}");
        }
    }
    s.push_str("\nAnchor commands (A and B are the inputs below):\n\n");
    for r in rows {
        let _ = writeln!(s, "- {}: `{}`", r.work, r.anchor);
    }
    s
}

fn inputs_section(inputs: &[&Input], dir: &Path) -> String {
    let mut s = format!(
        "Inputs (made with `synth::generate`, cached in {}):\n\n",
        dir.display()
    );
    for i in inputs {
        let origin = if i.generated { "generated" } else { "cached" };
        let _ = writeln!(s, "- {} ({origin}; {})", i.describe(), i.path.display());
    }
    s.push('\n');
    for i in inputs {
        let _ = writeln!(s, "- {}", i.keyframes());
    }
    let probes = inputs
        .iter()
        .map(|i| format!("{} {:.2} s", i.label, i.probe_seconds))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        s,
        "\nProbe runs once per input before the timings, as the server probes at \
         upload time, and is not included above: {probes}."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn cache_names_follow_the_spec() {
        let a = cache_name("A", &spec_a());
        assert_eq!(
            a,
            "a-1920x1080-30fps-60s-h264-veryfast-aac-mp4-kf90-bars.mp4"
        );
        let b = cache_name("B", &spec_b());
        assert_eq!(b, "b-1280x720-30fps-60s-vp9-opus-webm-kf90-bars.webm");
        let shorter = SynthSpec {
            seconds: 30.0,
            ..spec_b()
        };
        assert_ne!(cache_name("B", &shorter), b);
    }

    #[test]
    fn anchors_get_the_input_paths() {
        let input = |path: &str| Input {
            label: "X",
            path: PathBuf::from(path),
            facts: MediaFacts::default(),
            probe_seconds: 0.0,
            generated: false,
            requested_spacing: 3.0,
        };
        let (a, b) = (input("/in/a b.mp4"), input("/in/b.webm"));
        assert_eq!(
            anchor_args("-i A -i B out.mp4", &a, &b),
            ["-i", "/in/a b.mp4", "-i", "/in/b.webm", "out.mp4"]
        );
    }
}
