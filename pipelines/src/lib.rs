//! vidmill's media pipelines, on GStreamer only: [`probe`] a file,
//! [`convert`] it to web-playable MP4 (remux or transcode), extract
//! [`frames`] into a ZIP, take a [`poster`], or [`run_job`] for the MP4 and
//! frames together.
//!
//! Every operation is synchronous and runs on the caller's thread (plus
//! GStreamer's own streaming threads): call it from a blocking thread, never
//! from an async executor. It reports progress over a [`ProgressTx`] at most
//! every 250 ms, stops within 2 s of its [`CancelToken`] firing, fails with
//! [`MediaError::Stalled`] when media time stops advancing, always takes its
//! pipeline to `Null`, and writes outputs under a temporary name that is
//! renamed only when complete.

mod allowed;
mod colour;
mod control;
mod convert;
mod dts;
mod error;
mod facts;
mod frames;
mod graph;
mod isobmff;
mod job;
mod limits;
mod matrix;
mod output;
mod poster;
mod probe;
mod resync;
mod runner;
pub mod synth;

pub use colour::Colour;
pub use control::{progress_channel, CancelToken, Control, Progress, ProgressRx, ProgressTx};
pub use convert::{convert, plan, remux_blocker, ConvertReport, ConvertSpec, Method};
pub use error::{MediaError, Result};
pub use facts::{AudioFacts, MediaFacts, Orientation, VideoFacts};
pub use frames::{
    choose_strategy, frame_count, frames, Accuracy, FramesReport, FramesSpec, ImageFormat,
    Strategy, MIN_EVERY,
};
pub use graph::output_size;
pub use job::{run_job, JobReport, JobSpec};
pub use limits::{Limit, MediaLimits};
pub use poster::{poster, poster_time, PosterReport, PosterSpec};
pub use probe::{probe, probe_within};

/// What the fuzz targets in `fuzz/` call; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::isobmff::{layout_of_bytes, Layout};
}

use std::sync::OnceLock;

/// The GStreamer elements the pipelines use; `readyz` and `doctor` check them.
pub const REQUIRED_ELEMENTS: &[&str] = &[
    "filesrc",
    "filesink",
    "parsebin",
    "decodebin",
    "videoconvert",
    "videoscale",
    "videoflip",
    "deinterlace",
    "x264enc",
    "h264parse",
    "aacparse",
    "mp4mux",
    "jpegenc",
    "pngenc",
    "appsrc",
    "appsink",
    "audioconvert",
    "audioresample",
    "tee",
    "queue",
];

/// Initialises GStreamer once per process: takes out every element media
/// must not reach (see `allowed`), adds a type finder (see `resync`) and
/// ranks decoders for speed.
pub fn init() -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().map_err(|e| e.to_string())?;
        allowed::remove_the_rest();
        resync::register().map_err(|e| e.to_string())?;
        prefer_fast_decoders();
        Ok(())
    })
    .clone()
    .map_err(MediaError::Pipeline)
}

/// libav's VP8/VP9 decoders are frame-threaded and faster than libvpx's,
/// which decodebin would otherwise pick by rank.
fn prefer_fast_decoders() {
    use gst::prelude::*;
    for name in ["avdec_vp9", "avdec_vp8"] {
        if let Some(f) = gst::ElementFactory::find(name) {
            f.set_rank(gst::Rank::PRIMARY + 1);
        }
    }
}

/// Names of [`REQUIRED_ELEMENTS`] that are not installed.
pub fn missing_elements() -> Result<Vec<&'static str>> {
    init()?;
    Ok(REQUIRED_ELEMENTS
        .iter()
        .copied()
        .filter(|e| gst::ElementFactory::find(e).is_none())
        .collect())
}
