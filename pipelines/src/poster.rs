//! The poster: one representative frame as a JPEG, taken a little way in so
//! that fade-ins and black leaders are skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::control::Control;
use crate::error::{MediaError, Result};
use crate::facts::MediaFacts;
use crate::frames::{
    decode_to_sink, sample_time, Accuracy, Grabber, ImageEncoder, ImageFormat, OnScreen,
};
use crate::graph;
use crate::output::TempOutput;
use crate::runner::Running;

#[derive(Debug, Clone, PartialEq)]
pub struct PosterSpec {
    pub output: PathBuf,
    pub max_height: u32,
    pub jpeg_quality: u32,
}

impl PosterSpec {
    pub fn new(output: impl Into<PathBuf>) -> Self {
        Self {
            output: output.into(),
            max_height: 1080,
            jpeg_quality: 85,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PosterReport {
    pub width: u32,
    pub height: u32,
    /// Stream time of the chosen frame, in seconds.
    pub time: f64,
    pub size_bytes: u64,
}

/// A tenth of the way in, at most 10 s: past intros, early enough to be cheap.
pub fn poster_time(facts: &MediaFacts) -> f64 {
    facts.duration.map_or(0.0, |d| (d * 0.1).min(10.0))
}

pub fn poster(
    input: &Path,
    facts: &MediaFacts,
    spec: &PosterSpec,
    ctl: &Control,
) -> Result<PosterReport> {
    crate::init()?;
    let size = graph::output_size(&facts.video, spec.max_height);
    let at = poster_time(facts);
    let grabbed = if facts.seekable {
        let mut grabber = Grabber::open(input, facts, size, ctl)?;
        match grabber.grab(at, Accuracy::Exact)? {
            Some(g) => Some(g),
            None => grabber.grab(0.0, Accuracy::Exact)?,
        }
    } else {
        decode_to(input, facts, size, at, ctl)?
    };
    let (time, sample) =
        grabbed.ok_or_else(|| MediaError::Corrupt("the video yielded no frame".into()))?;
    let image = ImageEncoder::new(ImageFormat::Jpeg, spec.jpeg_quality)?.encode(&sample)?;
    let out = TempOutput::new(&spec.output)?;
    let mut file = std::fs::File::create(out.path()).map_err(|e| MediaError::io(out.path(), e))?;
    file.write_all(&image)
        .map_err(|e| MediaError::io(out.path(), e))?;
    drop(file);
    let size_bytes = out.commit()?;
    Ok(PosterReport {
        width: size.0,
        height: size.1,
        time,
        size_bytes,
    })
}

/// The frame on screen at `at` seconds, found by decoding from the start:
/// for containers that cannot seek to a frame exactly. Stops at the first
/// frame after `at`; the last frame when the video ends first.
fn decode_to(
    input: &Path,
    facts: &MediaFacts,
    size: (u32, u32),
    at: f64,
    ctl: &Control,
) -> Result<Option<(f64, gst::Sample)>> {
    // Not synced, and no preroll to wait for: frames are pulled as decoded.
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .async_(false)
        .max_buffers(2)
        .build();
    let (pipeline, tap, skip) = decode_to_sink(input, facts, size, &sink)?;
    // Frames before `at` are decoded but not converted.
    skip.set(Some(at));
    let mut running = Running::start(pipeline, gst::State::Playing, ctl, tap, facts.duration())?;
    let mut shown = OnScreen::at(at);
    let origin = facts.start;
    // After the end of the stream `wait_for` asks once more, so frames
    // still waiting in the sink are offered too.
    running.wait_for(None, || {
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::ZERO) {
            let Some(time) = sample_time(&sample, origin) else {
                continue;
            };
            if shown.offer(time, sample) {
                return Some(());
            }
        }
        None
    })?;
    Ok(shown.frame())
}
