//! The core's `MediaEngine` port, implemented with the GStreamer pipelines:
//! probe, process (remux or transcode, frames, poster; one decode for a
//! transcode with frames) and verification of every output against the
//! source before it is published.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use vidmill_actors::{
    CancelFlag, EngineError, EngineEvent, EngineJob, EngineProgress, FramesAccuracy, FramesFormat,
    FramesOutput, MediaEngine, Mp4Output, OutputKind, PosterOutput, Produced, SourceInfo, Stage,
};
use vidmill_pipelines as media;

/// Encoding settings from the `media` section of the configuration.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EngineSettings {
    pub preset: String,
    pub crf: u32,
    pub max_height: u32,
    pub jpeg_quality: u32,
    /// What a source may be (`[limits]`), checked at probe and while running.
    pub limits: media::MediaLimits,
    /// Encoder threads per pipeline (`media.cpu_budget`); 0: every core.
    #[serde(default)]
    pub threads: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            preset: "veryfast".into(),
            crf: 23,
            max_height: 1080,
            jpeg_quality: 85,
            limits: media::MediaLimits::default(),
            threads: 0,
        }
    }
}

/// The GStreamer engine. Probe results are kept until the run that asked
/// for them starts, so a file is probed once per run.
#[derive(Debug, Default)]
pub struct GstEngine {
    settings: EngineSettings,
    probed: Mutex<HashMap<PathBuf, media::MediaFacts>>,
}

impl GstEngine {
    pub fn new(settings: EngineSettings) -> Self {
        Self {
            settings,
            probed: Mutex::default(),
        }
    }

    /// Takes facts probed elsewhere (a worker process's earlier probe) for
    /// the next run on `source`.
    pub fn remember(&self, source: &Path, facts: media::MediaFacts) {
        if let Ok(mut cache) = self.probed.lock() {
            cache.insert(source.to_path_buf(), facts);
        }
    }

    fn facts(&self, source: &Path) -> Result<media::MediaFacts, EngineError> {
        let cached = self.probed.lock().ok().and_then(|mut m| m.remove(source));
        match cached {
            Some(f) => Ok(f),
            None => media::probe_within(source, &self.settings.limits).map_err(engine_error),
        }
    }
}

pub(crate) fn engine_error(e: media::MediaError) -> EngineError {
    match e {
        media::MediaError::Unsupported(m) => EngineError::Unsupported(m),
        media::MediaError::Corrupt(m) => EngineError::Corrupt(m),
        media::MediaError::Cancelled => EngineError::Cancelled,
        media::MediaError::LimitExceeded { limit, why } => EngineError::LimitExceeded {
            limit: limit.key().into(),
            why,
        },
        e @ media::MediaError::Stalled(_) => EngineError::Stalled(e.to_string()),
        e => EngineError::Failed(e.to_string()),
    }
}

/// The source as the video resource shows it.
pub fn source_info(facts: &media::MediaFacts) -> SourceInfo {
    let (width, height) = facts.video.display_size();
    SourceInfo {
        size_bytes: facts.size_bytes,
        container: facts.container.clone(),
        duration: facts.duration,
        width,
        height,
        video_codec: facts.video.codec.clone(),
        audio_codec: facts.audio.as_ref().map(|a| a.codec.clone()),
    }
}

impl MediaEngine for GstEngine {
    fn probe(&self, source: &Path) -> Result<SourceInfo, EngineError> {
        let facts = media::probe_within(source, &self.settings.limits).map_err(engine_error)?;
        let info = source_info(&facts);
        if let Ok(mut cache) = self.probed.lock() {
            cache.insert(source.to_path_buf(), facts);
        }
        Ok(info)
    }

    fn process(
        &self,
        job: &EngineJob,
        cancel: &CancelFlag,
        events: &(dyn Fn(EngineEvent) + Send + Sync),
    ) -> Result<(), EngineError> {
        let facts = self.facts(&job.source)?;
        let (tx, rx) = media::progress_channel();
        let ctl = media::Control {
            cancel: media::CancelToken::from_flag(cancel.as_flag()),
            progress: Some(tx),
            stall_timeout: job.stall_timeout,
            deadline: None,
            limits: self.settings.limits,
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            // Progress goes out from here; the pipelines never wait on it.
            scope.spawn(|| forward_progress(rx, &done, events));
            let result = self.run(job, &facts, &ctl, events);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        })
    }

    fn verify(&self, output: &Produced, source: &SourceInfo) -> Result<(), EngineError> {
        match output {
            Produced::Mp4 { path, report } => verify_mp4(path, report, source),
            Produced::Frames { path, report } => verify_frames(path, report, source),
            Produced::Poster { path, .. } => verify_poster(path),
        }
    }
}

fn forward_progress(
    rx: media::ProgressRx,
    done: &std::sync::atomic::AtomicBool,
    events: &(dyn Fn(EngineEvent) + Send + Sync),
) {
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        if rx.has_changed().unwrap_or(false) {
            let p = *rx.borrow();
            events(EngineEvent::Progress(EngineProgress {
                percent: p.percent,
                speed: p.speed,
                eta_seconds: p.eta_seconds,
            }));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl GstEngine {
    fn run(
        &self,
        job: &EngineJob,
        facts: &media::MediaFacts,
        ctl: &media::Control,
        events: &(dyn Fn(EngineEvent) + Send + Sync),
    ) -> Result<(), EngineError> {
        let s = &self.settings;
        let convert = job
            .options
            .wants(OutputKind::Mp4)
            .then(|| media::ConvertSpec {
                preset: s.preset.clone(),
                threads: s.threads,
                crf: s.crf,
                max_height: s.max_height,
                ..media::ConvertSpec::new(job.work_dir.join("video.mp4"))
            });
        let frames = match job.options.wants(OutputKind::Frames) {
            true => Some(media::FramesSpec {
                accuracy: match job.options.frames_accuracy {
                    FramesAccuracy::Exact => media::Accuracy::Exact,
                    FramesAccuracy::Keyframe => media::Accuracy::Keyframe,
                },
                format: match job.options.frames_format {
                    FramesFormat::Jpeg => media::ImageFormat::Jpeg,
                    FramesFormat::Png => media::ImageFormat::Png,
                },
                max_height: s.max_height,
                jpeg_quality: s.jpeg_quality,
                ..media::FramesSpec::new(job.work_dir.join("frames.zip"), job.options.frames_every)
            }),
            false => None,
        };
        let shared = matches!((&convert, &frames), (Some(c), Some(_)) if media::plan(facts, c) == media::Method::Transcode);
        if shared {
            events(EngineEvent::Stage(Stage::Converting));
            let spec = media::JobSpec {
                convert: convert.clone(),
                frames: frames.clone(),
            };
            let report = media::run_job(&job.source, facts, &spec, ctl).map_err(engine_error)?;
            if let (Some(c), Some(r)) = (&convert, report.convert) {
                events(EngineEvent::Output(mp4_output(c, &r, facts)));
            }
            if let (Some(f), Some(r)) = (&frames, report.frames) {
                events(EngineEvent::Output(frames_output(f, &r)));
            }
        } else {
            if let Some(c) = &convert {
                events(EngineEvent::Stage(Stage::Converting));
                let r = media::convert(&job.source, facts, c, ctl).map_err(engine_error)?;
                events(EngineEvent::Output(mp4_output(c, &r, facts)));
            }
            if let Some(f) = &frames {
                events(EngineEvent::Stage(Stage::ExtractingFrames));
                let r = media::frames(&job.source, facts, f, ctl).map_err(engine_error)?;
                events(EngineEvent::Output(frames_output(f, &r)));
            }
        }
        let poster = media::PosterSpec {
            max_height: s.max_height,
            jpeg_quality: s.jpeg_quality,
            ..media::PosterSpec::new(job.work_dir.join("poster.jpg"))
        };
        let r = media::poster(&job.source, facts, &poster, ctl).map_err(engine_error)?;
        events(EngineEvent::Output(Produced::Poster {
            path: poster.output,
            report: PosterOutput {
                size_bytes: r.size_bytes,
            },
        }));
        Ok(())
    }
}

fn mp4_output(
    spec: &media::ConvertSpec,
    r: &media::ConvertReport,
    facts: &media::MediaFacts,
) -> Produced {
    let method = match r.method {
        media::Method::Remux => "remux",
        media::Method::Transcode => "transcode",
    };
    Produced::Mp4 {
        path: spec.output.clone(),
        report: Mp4Output {
            size_bytes: r.size_bytes,
            duration: facts.duration,
            width: r.width,
            height: r.height,
            method: method.into(),
        },
    }
}

fn frames_output(spec: &media::FramesSpec, r: &media::FramesReport) -> Produced {
    Produced::Frames {
        path: spec.output.clone(),
        report: FramesOutput {
            size_bytes: r.size_bytes,
            count: r.count,
            every: r.every,
        },
    }
}

fn failed(what: impl Into<String>) -> EngineError {
    EngineError::VerificationFailed(what.into())
}

/// Re-probes the MP4 and holds it to what the source promised.
fn verify_mp4(path: &Path, report: &Mp4Output, source: &SourceInfo) -> Result<(), EngineError> {
    let facts =
        media::probe(path).map_err(|e| failed(format!("the MP4 does not read back: {e}")))?;
    if facts.video.codec != "h264" {
        return Err(failed(format!(
            "the MP4 holds {}, not H.264",
            facts.video.codec
        )));
    }
    let size = facts.video.display_size();
    if size != (report.width, report.height) {
        return Err(failed(format!(
            "the MP4 is {}x{}, expected {}x{}",
            size.0, size.1, report.width, report.height
        )));
    }
    if facts.audio.is_some() != source.audio_codec.is_some() {
        return Err(failed("the MP4's audio does not match the source's"));
    }
    if let (Some(want), Some(got)) = (source.duration, facts.duration) {
        let frame = facts
            .video
            .frame_rate
            .filter(|f| *f > 0.0)
            .map_or(0.0, |f| 1.0 / f);
        if (want - got).abs() > 0.5_f64.max(frame) {
            return Err(failed(format!(
                "the MP4 lasts {got:.2} s, the source {want:.2} s"
            )));
        }
    }
    Ok(())
}

/// Opens the ZIP and checks it holds one image per requested time plus
/// `index.csv`.
fn verify_frames(
    path: &Path,
    report: &FramesOutput,
    source: &SourceInfo,
) -> Result<(), EngineError> {
    let file = std::fs::File::open(path).map_err(|e| failed(format!("frames archive: {e}")))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| failed(format!("frames archive unreadable: {e}")))?;
    let images = zip.len().saturating_sub(1) as u64;
    let mut index = String::new();
    zip.by_name("index.csv")
        .map_err(|_| failed("frames archive has no index.csv"))?
        .read_to_string(&mut index)
        .map_err(|e| failed(format!("index.csv unreadable: {e}")))?;
    let rows = index.lines().count().saturating_sub(1) as u64;
    let expected = source
        .duration
        .map(|d| media::frame_count(report.every, d))
        .unwrap_or(report.count);
    if images != report.count || rows != report.count || report.count != expected {
        return Err(failed(format!(
            "frames archive has {images} images and {rows} rows; expected {expected}"
        )));
    }
    Ok(())
}

fn verify_poster(path: &Path) -> Result<(), EngineError> {
    let mut head = [0u8; 3];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| failed(format!("poster unreadable: {e}")))?;
    if head != [0xff, 0xd8, 0xff] {
        return Err(failed("poster is not a JPEG"));
    }
    Ok(())
}
