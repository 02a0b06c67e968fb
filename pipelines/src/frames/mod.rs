//! Frame extraction: one image at each of `0, every, 2·every, …` strictly
//! before the end, upright, into a ZIP with an `index.csv`.
//!
//! Two ways to reach the frames, chosen from the interval and the keyframe
//! spacing: seek to each target when targets are far apart (each seek decodes
//! from the keyframe before it), or decode straight through and keep only the
//! frames on screen at the targets when they are close. `keyframe` accuracy
//! decodes keyframes only.

mod archive;
mod encode;
mod grab;
mod jfif;
mod sampler;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use gst::prelude::*;
use serde::Serialize;

use crate::control::Control;
use crate::convert::VideoTap;
use crate::error::{MediaError, Result};
use crate::facts::MediaFacts;
use crate::graph::{self, make};
use crate::limits::MediaLimits;
use crate::output::TempOutput;
use crate::runner::{self, PositionTap, Running};

use archive::FrameArchive;
pub(crate) use encode::ImageEncoder;
pub(crate) use grab::{decode_to_sink, Grabber, OnScreen};
use sampler::{Pick, Sampler};

/// Shortest interval accepted: finer than any real frame rate.
pub const MIN_EVERY: f64 = 0.01;

/// Which frame a target gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accuracy {
    /// The frame on screen at the requested time.
    Exact,
    /// The nearest keyframe at or before the requested time (faster).
    Keyframe,
}

impl FromStr for Accuracy {
    type Err = MediaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exact" => Ok(Self::Exact),
            "keyframe" => Ok(Self::Keyframe),
            _ => Err(MediaError::Invalid(format!(
                "frames accuracy `{s}` is not one of exact, keyframe"
            ))),
        }
    }
}

/// The image format of extracted frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Jpeg,
    Png,
}

impl ImageFormat {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
        }
    }
}

impl FromStr for ImageFormat {
    type Err = MediaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "jpeg" | "jpg" => Ok(Self::Jpeg),
            "png" => Ok(Self::Png),
            _ => Err(MediaError::Invalid(format!(
                "frames format `{s}` is not one of jpeg, png"
            ))),
        }
    }
}

/// How the frames were reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// One seek per target.
    Seek,
    /// One decode straight through the video.
    Decode,
    /// Riding along a transcode's decode (tee).
    Shared,
}

/// What to extract.
#[derive(Debug, Clone, PartialEq)]
pub struct FramesSpec {
    pub output: PathBuf,
    /// Seconds between targets.
    pub every: f64,
    pub accuracy: Accuracy,
    pub format: ImageFormat,
    /// Images are scaled down to at most this height, like the MP4.
    pub max_height: u32,
    /// JPEG quality, 1–100.
    pub jpeg_quality: u32,
}

impl FramesSpec {
    pub fn new(output: impl Into<PathBuf>, every: f64) -> Self {
        Self {
            output: output.into(),
            every,
            accuracy: Accuracy::Exact,
            format: ImageFormat::Jpeg,
            max_height: 1080,
            jpeg_quality: 85,
        }
    }

    fn validate(&self) -> Result<()> {
        if !self.every.is_finite() || self.every < MIN_EVERY {
            return Err(MediaError::Invalid(format!(
                "frames interval {} must be a number of seconds of at least {MIN_EVERY}",
                self.every
            )));
        }
        Ok(())
    }
}

/// What an extraction produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FramesReport {
    pub count: u64,
    pub every: f64,
    pub width: u32,
    pub height: u32,
    pub strategy: Strategy,
    pub size_bytes: u64,
}

/// How many frames an interval gives over `duration` seconds: one at each
/// of `0, every, 2·every, …` strictly before the end, at least one.
pub fn frame_count(every: f64, duration: f64) -> u64 {
    sampler::target_count(every, duration)
}

/// Seek per target when targets are further apart than what a seek costs:
/// an exact seek decodes on average half a keyframe interval, a keyframe
/// seek one frame, against `every` seconds of decoding straight through.
pub fn choose_strategy(facts: &MediaFacts, every: f64, accuracy: Accuracy) -> Strategy {
    if facts.duration().is_none() || !facts.seekable {
        return Strategy::Decode;
    }
    // Unknown spacing: assume x264's default of 250 frames at 25 fps.
    let spacing = facts.video.keyframe_spacing.unwrap_or(10.0);
    let seek = match accuracy {
        // A seek measured ~15 ms plus decoding from the keyframe before it;
        // 0.3 s stands for the fixed part with room to spare.
        Accuracy::Exact => every > spacing / 2.0 + 0.3,
        Accuracy::Keyframe => every >= spacing * 2.0,
    };
    if seek {
        Strategy::Seek
    } else {
        Strategy::Decode
    }
}

/// Extracts frames from `input` (probed as `facts`) into the ZIP `spec.output`.
pub fn frames(
    input: &Path,
    facts: &MediaFacts,
    spec: &FramesSpec,
    ctl: &Control,
) -> Result<FramesReport> {
    crate::init()?;
    spec.validate()?;
    let strategy = choose_strategy(facts, spec.every, spec.accuracy);
    let job = FrameJob::new(facts, spec, strategy, &ctl.limits)?;
    match strategy {
        Strategy::Seek => job.run_seeks(input, facts, ctl)?,
        _ => job.run_decode(input, facts, ctl)?,
    }
    job.finish()
}

/// A frame extraction in progress: its temp output and the shared collector
/// the streaming thread feeds.
pub(crate) struct FrameJob {
    out: TempOutput,
    collector: Arc<Mutex<Option<Collector>>>,
    size: (u32, u32),
    every: f64,
    accuracy: Accuracy,
    strategy: Strategy,
    /// Stream time where the media starts (see `MediaFacts::start`).
    origin: f64,
}

impl std::fmt::Debug for FrameJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameJob")
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl FrameJob {
    pub(crate) fn new(
        facts: &MediaFacts,
        spec: &FramesSpec,
        strategy: Strategy,
        limits: &MediaLimits,
    ) -> Result<Self> {
        spec.validate()?;
        limits.check_frames(spec.every, facts.duration)?;
        let size = graph::output_size(&facts.video, spec.max_height);
        let out = TempOutput::new(&spec.output)?;
        let archive = FrameArchive::create(out.path(), spec.format.extension())?;
        let collector = Collector {
            sampler: Sampler::new(spec.every, facts.duration.filter(|d| *d > 0.0)),
            encoder: ImageEncoder::new(spec.format, spec.jpeg_quality)?,
            archive,
            size,
            last_image: None,
            error: None,
            limits: *limits,
        };
        Ok(Self {
            out,
            collector: Arc::new(Mutex::new(Some(collector))),
            size,
            every: spec.every,
            accuracy: spec.accuracy,
            strategy,
            origin: facts.start,
        })
    }

    /// Decodes straight through; only keyframes in `keyframe` accuracy.
    fn run_decode(&self, input: &Path, facts: &MediaFacts, ctl: &Control) -> Result<()> {
        let pipeline = gst::Pipeline::new();
        let head = self.attach(&pipeline)?;
        let (prep_head, prep_tail) = graph::add_video_prep(&pipeline, &facts.video, self.size)?;
        prep_tail.link(&head)?;
        // Progress is what has been decoded: the demuxer may run far ahead.
        let tap = PositionTap::default();
        if let Some(pad) = prep_tail.static_pad("src") {
            tap.attach(&pad);
        }
        let keyframes = self.accuracy == Accuracy::Keyframe;
        graph::add_source(
            &pipeline,
            input,
            graph::Picture::of(&facts.video),
            Box::new(move |pipeline, pad| {
                if keyframes {
                    graph::keyframes_only(pad);
                }
                graph::decode_into(pipeline, pad, &prep_head)
            }),
            None,
        )?;
        let mut running =
            Running::start(pipeline, gst::State::Playing, ctl, tap, facts.duration())?;
        let result = running.run_to_eos();
        self.take_error()?;
        result?;
        running.report_done();
        Ok(())
    }

    /// Seeks to each target and takes the frame the seek prerolls.
    fn run_seeks(&self, input: &Path, facts: &MediaFacts, ctl: &Control) -> Result<()> {
        let mut grabber = Grabber::open(input, facts, self.size, ctl)?;
        let end = facts.duration.unwrap_or(0.0);
        let count = sampler::target_count(self.every, end);
        let mut last: Option<(f64, gst::Sample)> = None;
        for k in 0..count {
            let t = k as f64 * self.every;
            let grabbed = match grabber.grab(t, self.accuracy)? {
                Some(g) => Some(g),
                // Past the last video frame (audio may run longer): the last
                // frame stays on screen.
                None => last.clone(),
            };
            let Some((time, sample)) = grabbed else {
                return Err(MediaError::Corrupt(format!("no video frame at {t:.3} s")));
            };
            let mut slot = self.lock()?;
            let collector = slot
                .as_mut()
                .ok_or_else(|| MediaError::Pipeline("frame collector already finished".into()))?;
            collector.write(Pick {
                frame: sample.clone(),
                time,
                targets: k..k + 1,
            })?;
            last = Some((time, sample));
        }
        grabber.report_done();
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Collector>>> {
        self.collector
            .lock()
            .map_err(|_| MediaError::Pipeline("frame collector poisoned".into()))
    }

    fn take_error(&self) -> Result<()> {
        match self.lock()?.as_mut().and_then(|c| c.error.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Flushes the last frame, writes the index and publishes the ZIP.
    pub(crate) fn finish(self) -> Result<FramesReport> {
        // The appsink callback may outlive the pipeline by a moment (its
        // last reference goes away on the shutdown thread), so the collector
        // is taken out of the shared slot rather than unwrapped.
        let collector = self
            .lock()?
            .take()
            .ok_or_else(|| MediaError::Pipeline("frame collector already finished".into()))?;
        let count = collector.finish()?;
        if count == 0 {
            return Err(MediaError::Corrupt("the video yielded no frames".into()));
        }
        let size_bytes = self.out.commit()?;
        Ok(FramesReport {
            count,
            every: self.every,
            width: self.size.0,
            height: self.size.1,
            strategy: self.strategy,
            size_bytes,
        })
    }
}

impl VideoTap for FrameJob {
    /// `queue ! appsink` whose frames go through the sampler; used both for
    /// straight decoding and behind a transcode's tee.
    fn attach(&self, pipeline: &gst::Pipeline) -> Result<gst::Element> {
        let queue = make("queue")?;
        // Not async: behind a tee, a sink that holds preroll would block the
        // branch that feeds the encoder (see convert's filesink).
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .async_(false)
            .build();
        pipeline.add_many([&queue, sink.upcast_ref()])?;
        queue.link(&sink)?;
        let collector = self.collector.clone();
        let keyframes_only = self.accuracy == Accuracy::Keyframe;
        let origin = self.origin;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let Some(time) = sample_time(&sample, origin) else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let is_delta = sample
                        .buffer()
                        .is_some_and(|b| b.flags().contains(gst::BufferFlags::DELTA_UNIT));
                    if keyframes_only && is_delta {
                        return Ok(gst::FlowSuccess::Ok);
                    }
                    let Ok(mut slot) = collector.lock() else {
                        return Err(gst::FlowError::Error);
                    };
                    let Some(c) = slot.as_mut() else {
                        return Err(gst::FlowError::Eos);
                    };
                    if let Err(e) = c.on_frame(time, sample) {
                        gst::element_error!(sink, gst::LibraryError::Encode, ["{}", e]);
                        c.error = Some(e);
                        return Err(gst::FlowError::Error);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        Ok(queue)
    }
}

/// Media time of a decoded frame in seconds: its stream time less the
/// stream time where the media starts.
pub(crate) fn sample_time(sample: &gst::Sample, origin: f64) -> Option<f64> {
    let pts = sample.buffer()?.pts()?;
    let seg = sample.segment()?.downcast_ref::<gst::ClockTime>()?.clone();
    runner::segment_stream_time(&seg, pts).map(|d| (d.as_secs_f64() - origin).max(0.0))
}

/// Chooses frames and writes them to the archive, encoding each distinct
/// frame once even when it answers several targets.
struct Collector {
    sampler: Sampler<gst::Sample>,
    encoder: ImageEncoder,
    archive: FrameArchive,
    size: (u32, u32),
    last_image: Option<(f64, Vec<u8>)>,
    error: Option<MediaError>,
    /// The archive's cap on images (a file may hold more than it said).
    limits: MediaLimits,
}

impl Collector {
    fn on_frame(&mut self, time: f64, sample: gst::Sample) -> Result<()> {
        match self.sampler.push(time, sample) {
            Some(pick) => self.write(pick),
            None => Ok(()),
        }
    }

    fn write(&mut self, pick: Pick<gst::Sample>) -> Result<()> {
        let count = self
            .archive
            .count()
            .saturating_add(pick.targets.end - pick.targets.start);
        if count > self.limits.max_frames {
            return Err(self.limits.too_many_frames(count));
        }
        let reuse = self
            .last_image
            .as_ref()
            .is_some_and(|(t, _)| *t == pick.time);
        if !reuse {
            let image = self.encoder.encode(&pick.frame)?;
            self.last_image = Some((pick.time, image));
        }
        let image = self
            .last_image
            .as_ref()
            .map(|(_, i)| i.as_slice())
            .unwrap_or_default();
        for k in pick.targets {
            let requested = self.sampler.target(k);
            self.archive
                .add(k, requested, pick.time, self.size, image)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<u64> {
        if let Some(pick) = self.sampler.finish() {
            self.write(pick)?;
        }
        let count = self.archive.count();
        self.archive.finish()?;
        Ok(count)
    }
}
