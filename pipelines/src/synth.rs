//! Synthetic test media made with GStreamer's test sources and encoders, so
//! tests and benchmarks generate what they need instead of committing files.
//!
//! The `Counter` pattern writes each frame's index into the picture as a row
//! of black and white blocks ([`read_counter`] reads it back), which lets a
//! test check that an extracted image is the frame it should be.

use std::path::Path;
use std::time::Duration;

use gst::prelude::*;

use crate::control::Control;
use crate::error::{MediaError, Result};
use crate::runner::{PositionTap, Running};

/// Bits of frame index in the counter pattern.
pub const COUNTER_BITS: u32 = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    /// H.264 High 10 (10-bit 4:2:0).
    H264High10,
    /// H.264 High 4:4:4.
    H264Yuv444,
    Hevc,
    Vp8,
    Vp9,
    /// MPEG-4 Part 2.
    Mpeg4,
    Mpeg2,
    Mjpeg,
    Theora,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Aac,
    Vorbis,
    Opus,
    Mp3,
    Mp2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// MP4 with `moov` at the end, as cameras and naive muxers write it.
    Mp4,
    Mov,
    Mkv,
    Webm,
    Avi,
    MpegTs,
    Ogg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Colour bars scrolling sideways: cheap, with motion for the encoders.
    Bars,
    /// Each frame's index as blocks (see [`read_counter`]).
    Counter,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    pub width: u32,
    pub height: u32,
    /// Frames per second (nominal when `vfr`).
    pub fps: u32,
    pub seconds: f64,
    pub video: VideoCodec,
    pub audio: Option<AudioCodec>,
    pub container: Container,
    /// Frames between keyframes.
    pub keyframe_every: u32,
    /// `image-orientation` tag, e.g. "rotate-90".
    pub orientation: Option<&'static str>,
    pub pattern: Pattern,
    /// Irregular frame durations (counter pattern only).
    pub vfr: bool,
    /// x264 speed preset for H.264 sources.
    pub x264_preset: &'static str,
}

impl SynthSpec {
    pub fn new(video: VideoCodec, container: Container) -> Self {
        Self {
            width: 320,
            height: 240,
            fps: 30,
            seconds: 2.0,
            video,
            audio: None,
            container,
            keyframe_every: 30,
            orientation: None,
            pattern: Pattern::Bars,
            vfr: false,
            x264_preset: "ultrafast",
        }
    }

    /// Presentation times of the frames, in seconds.
    pub fn frame_times(&self) -> Vec<f64> {
        let n = (self.seconds * self.fps as f64).round() as usize;
        let base = 1.0 / self.fps as f64;
        let mut t = 0.0;
        (0..n)
            .map(|i| {
                let now = t;
                // Variable frame rate: durations cycle through 0.5, 1 and 1.5
                // nominal frames, keeping the nominal average.
                t += if self.vfr {
                    base * [0.5, 1.0, 1.5][i % 3]
                } else {
                    base
                };
                now
            })
            .collect()
    }

    fn video_encoder(&self) -> String {
        let k = self.keyframe_every.max(1);
        let x264 = format!(
            // scenecut=0 and min-keyint: keyframes exactly every k frames, as
            // asked; x264 would otherwise add one at every scrolling-bar "cut".
            "x264enc speed-preset={} key-int-max={k} bframes=0 option-string=\"scenecut=0:min-keyint={k}\" ! h264parse",
            self.x264_preset
        );
        match self.video {
            VideoCodec::H264 => format!("video/x-raw,format=I420 ! {x264}"),
            VideoCodec::H264High10 => format!("video/x-raw,format=I420_10LE ! {x264}"),
            VideoCodec::H264Yuv444 => format!("video/x-raw,format=Y444 ! {x264}"),
            VideoCodec::Hevc => {
                format!("video/x-raw,format=I420 ! x265enc speed-preset=ultrafast key-int-max={k} ! h265parse")
            }
            // 8-bit 4:2:0, as cameras and browsers make them; left open, the
            // encoders would pick 4:4:4 (VP9 profile 3).
            VideoCodec::Vp8 => format!("video/x-raw,format=I420 ! vp8enc deadline=1 cpu-used=16 keyframe-max-dist={k}"),
            VideoCodec::Vp9 => format!(
                "video/x-raw,format=I420 ! vp9enc deadline=1 cpu-used=8 row-mt=true keyframe-max-dist={k}"
            ),
            VideoCodec::Mpeg4 => {
                format!("avenc_mpeg4 gop-size={k} bitrate=3000000 ! mpeg4videoparse")
            }
            // avenc_mpeg2video rejects every frame rate with Debian 12's
            // libav (a time-base mix-up), so mjpegtools' encoder makes MPEG-2.
            VideoCodec::Mpeg2 => {
                "video/x-raw,format=I420 ! mpeg2enc format=3 ! mpegvideoparse".into()
            }
            VideoCodec::Mjpeg => "jpegenc quality=85".into(),
            VideoCodec::Theora => format!("theoraenc keyframe-freq={k}"),
        }
    }

    fn audio_encoder(codec: AudioCodec) -> &'static str {
        match codec {
            AudioCodec::Aac => "avenc_aac ! aacparse",
            AudioCodec::Vorbis => "vorbisenc",
            AudioCodec::Opus => "opusenc",
            AudioCodec::Mp3 => "lamemp3enc ! mpegaudioparse",
            AudioCodec::Mp2 => "avenc_mp2 ! mpegaudioparse",
        }
    }

    fn muxer(&self) -> &'static str {
        match self.container {
            Container::Mp4 => "mp4mux",
            Container::Mov => "qtmux",
            Container::Mkv => "matroskamux",
            Container::Webm => "webmmux",
            Container::Avi => "avimux",
            Container::MpegTs => "mpegtsmux",
            Container::Ogg => "oggmux",
        }
    }

    fn description(&self, path: &Path) -> String {
        let frames = self.frame_times().len();
        let source = match self.pattern {
            Pattern::Bars => format!(
                "videotestsrc num-buffers={frames} pattern=smpte horizontal-speed=3 ! \
                 video/x-raw,width={},height={},framerate={}/1",
                self.width, self.height, self.fps
            ),
            Pattern::Counter => format!(
                "appsrc name=counter format=time ! video/x-raw,format=I420,width={},height={},framerate={}/1",
                self.width, self.height, self.fps
            ),
        };
        let tag = self
            .orientation
            .map(|o| format!(" ! taginject tags=\"image-orientation={o}\""))
            .unwrap_or_default();
        let mut d = format!(
            "{} name=mux ! filesink location=\"{}\" \
             {source} ! videoconvert ! {}{tag} ! queue ! mux.",
            self.muxer(),
            path.display(),
            self.video_encoder(),
        );
        if let Some(a) = self.audio {
            let buffers = (self.seconds * 100.0).round() as u64;
            d.push_str(&format!(
                " audiotestsrc num-buffers={buffers} samplesperbuffer=480 wave=sine ! \
                 audio/x-raw,rate=48000,channels=2 ! audioconvert ! audioresample ! {} ! queue ! mux.",
                Self::audio_encoder(a)
            ));
        }
        d
    }
}

/// Writes a file as `spec` describes.
pub fn generate(spec: &SynthSpec, path: &Path) -> Result<()> {
    crate::init()?;
    let description = spec.description(path);
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| MediaError::Pipeline(format!("{e}: {description}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| MediaError::Pipeline("launch line is not a pipeline".into()))?;
    let ctl = Control {
        stall_timeout: Duration::from_secs(60),
        ..Control::default()
    };
    let counter = pipeline
        .by_name("counter")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok());
    let mut running = Running::start(
        pipeline,
        gst::State::Playing,
        &ctl,
        PositionTap::default(),
        None,
    )?;
    if let Some(src) = counter {
        src.set_property("block", true);
        src.set_max_bytes(8 * (spec.width * spec.height) as u64);
        let times = spec.frame_times();
        for (i, t) in times.iter().enumerate() {
            let next = times
                .get(i + 1)
                .copied()
                .unwrap_or(t + 1.0 / spec.fps as f64);
            let mut buffer = counter_frame(spec.width, spec.height, i as u32);
            {
                let b = buffer
                    .get_mut()
                    .ok_or_else(|| MediaError::Pipeline("buffer not writable".into()))?;
                b.set_pts(gst::ClockTime::from_nseconds((t * 1e9).round() as u64));
                b.set_duration(gst::ClockTime::from_nseconds(
                    ((next - t) * 1e9).round() as u64
                ));
            }
            src.push_buffer(buffer)
                .map_err(|e| MediaError::Pipeline(format!("counter source: {e:?}")))?;
        }
        src.end_of_stream()
            .map_err(|e| MediaError::Pipeline(format!("counter source: {e:?}")))?;
    }
    running.run_to_eos()
}

/// One I420 frame with `index` drawn as [`COUNTER_BITS`] blocks across the
/// middle third of the picture (white = 1), grey elsewhere.
fn counter_frame(width: u32, height: u32, index: u32) -> gst::Buffer {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut data = vec![128u8; w * h + 2 * cw * ch];
    for y in h / 3..2 * h / 3 {
        for x in 0..w {
            let bit = (x * COUNTER_BITS as usize / w) as u32;
            let on = index >> (COUNTER_BITS - 1 - bit) & 1 == 1;
            data[y * w + x] = if on { 235 } else { 16 };
        }
    }
    gst::Buffer::from_mut_slice(data)
}

/// Reads the frame index from a decoded greyscale picture of the counter
/// pattern (upright: the blocks run left to right).
pub fn read_counter(gray: &[u8], width: usize, height: usize) -> u32 {
    let y = height / 2;
    (0..COUNTER_BITS).fold(0, |acc, bit| {
        let x = (bit as usize * width + width / 2) / COUNTER_BITS as usize;
        let on = gray[y * width + x] > 128;
        acc << 1 | on as u32
    })
}

/// Decodes an encoded image (JPEG or PNG) to 8-bit grey, for tests.
pub fn decode_gray(image: &[u8]) -> Result<(Vec<u8>, usize, usize)> {
    crate::init()?;
    let pipeline = gst::parse::launch(
        "appsrc name=src ! decodebin ! videoconvert ! video/x-raw,format=GRAY8 ! appsink name=sink sync=false",
    )
    .map_err(|e| MediaError::Pipeline(e.to_string()))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| MediaError::Pipeline("not a pipeline".into()))?;
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| MediaError::Pipeline("no appsrc".into()))?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| MediaError::Pipeline("no appsink".into()))?;
    let ctl = Control::default();
    let _running = Running::start(
        pipeline,
        gst::State::Playing,
        &ctl,
        PositionTap::default(),
        None,
    )?;
    src.push_buffer(gst::Buffer::from_slice(image.to_vec()))
        .map_err(|e| MediaError::Pipeline(format!("{e:?}")))?;
    src.end_of_stream()
        .map_err(|e| MediaError::Pipeline(format!("{e:?}")))?;
    let sample = sink
        .try_pull_sample(gst::ClockTime::from_seconds(10))
        .ok_or_else(|| MediaError::Corrupt("image did not decode".into()))?;
    let caps = sample
        .caps()
        .ok_or_else(|| MediaError::Pipeline("no caps".into()))?;
    let info =
        gst_video::VideoInfo::from_caps(caps).map_err(|e| MediaError::Pipeline(e.to_string()))?;
    let buffer = sample
        .buffer()
        .ok_or_else(|| MediaError::Pipeline("no buffer".into()))?;
    let map = buffer
        .map_readable()
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    let (w, h, stride) = (
        info.width() as usize,
        info.height() as usize,
        info.stride()[0] as usize,
    );
    let mut gray = Vec::with_capacity(w * h);
    for row in 0..h {
        gray.extend_from_slice(&map[row * stride..row * stride + w]);
    }
    Ok((gray, w, h))
}
