//! Conversion to web-playable MP4 (H.264 + AAC, `moov` first): remux without
//! re-encoding when the source already qualifies, transcode otherwise.

use std::path::{Path, PathBuf};

use gst::prelude::*;
use serde::Serialize;

use crate::control::Control;
use crate::error::{MediaError, Result};
use crate::facts::MediaFacts;
use crate::graph::{self, make};
use crate::output::TempOutput;
use crate::runner::{PositionTap, Running};

/// H.264 profiles every browser decodes.
const PLAYABLE_PROFILES: &[&str] = &[
    "constrained-baseline",
    "baseline",
    "main",
    "high",
    "progressive-high",
    "constrained-high",
];

/// What to make and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertSpec {
    pub output: PathBuf,
    /// x264 speed preset (ultrafast … veryslow).
    pub preset: String,
    /// x264 constant rate factor, 0–51.
    pub crf: u32,
    /// Cap on the output's shorter side; larger sources are scaled down (and
    /// so transcoded). A 1080×1920 portrait video is within 1080.
    pub max_height: u32,
    /// AAC bitrate in bits per second.
    pub audio_bitrate: u32,
    /// When false, always transcode.
    pub allow_remux: bool,
    /// Encoder threads; 0 lets x264 use every core. A node whose
    /// `media.cpu_budget` is N cores runs N pipelines of N threads at most,
    /// so it never takes more of the machine than it was given.
    pub threads: u32,
}

impl ConvertSpec {
    pub fn new(output: impl Into<PathBuf>) -> Self {
        Self {
            output: output.into(),
            preset: "veryfast".into(),
            crf: 23,
            max_height: 1080,
            audio_bitrate: 128_000,
            allow_remux: true,
            threads: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.crf > 51 {
            return Err(MediaError::Invalid(format!("crf {} is above 51", self.crf)));
        }
        if self.max_height < 16 {
            return Err(MediaError::Invalid(format!(
                "max_height {} is below 16",
                self.max_height
            )));
        }
        Ok(())
    }
}

/// Whether the video was copied or re-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Remux,
    Transcode,
}

/// What a conversion produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConvertReport {
    pub method: Method,
    pub width: u32,
    pub height: u32,
    pub has_audio: bool,
    pub size_bytes: u64,
}

/// Why the source's video cannot be copied as it is, or `None` when it can.
/// Audio never stands in the way: what browsers do not play is encoded to
/// AAC beside the copied video.
pub fn remux_blocker(facts: &MediaFacts, max_height: u32) -> Option<String> {
    let v = &facts.video;
    if v.codec != "h264" {
        return Some(format!("video codec is {}, not H.264", v.codec));
    }
    // AVI and bare streams store no presentation times for an MP4 to copy
    // (mp4mux refuses the packets); decoding numbers the frames instead.
    if matches!(facts.container.as_str(), "avi" | "none") {
        return Some(format!(
            "the {} container stores no presentation times",
            facts.container
        ));
    }
    if let Some(p) = v
        .profile
        .as_deref()
        .filter(|p| !PLAYABLE_PROFILES.contains(p))
    {
        return Some(format!("H.264 profile {p} is not playable in browsers"));
    }
    if v.bit_depth.is_some_and(|d| d != 8) {
        return Some("video is not 8-bit".into());
    }
    if v.chroma_format.as_deref().is_some_and(|c| c != "4:2:0") {
        return Some("video is not 4:2:0".into());
    }
    if v.interlaced {
        return Some("video is interlaced".into());
    }
    if !v.orientation.is_identity() {
        return Some("video needs rotating".into());
    }
    if v.pixel_aspect_ratio.0 != v.pixel_aspect_ratio.1 {
        return Some("pixels are not square".into());
    }
    if v.width % 2 == 1 || v.height % 2 == 1 {
        return Some("dimensions are odd".into());
    }
    if v.width.min(v.height) > max_height {
        return Some(format!(
            "{}x{} is above {max_height} lines on its shorter side",
            v.width, v.height
        ));
    }
    None
}

/// The method `spec` would use for `facts`.
pub fn plan(facts: &MediaFacts, spec: &ConvertSpec) -> Method {
    if spec.allow_remux && remux_blocker(facts, spec.max_height).is_none() {
        Method::Remux
    } else {
        Method::Transcode
    }
}

/// Converts `input` (probed as `facts`) to the MP4 `spec.output`.
pub fn convert(
    input: &Path,
    facts: &MediaFacts,
    spec: &ConvertSpec,
    ctl: &Control,
) -> Result<ConvertReport> {
    transcode_or_remux(input, facts, spec, ctl, None)
}

/// A second consumer of the decoded, prepared video (the frame extractor),
/// fed from a `tee` so one decode serves both.
pub(crate) trait VideoTap {
    /// Adds the consumer to the pipeline and returns its first element.
    fn attach(&self, pipeline: &gst::Pipeline) -> Result<gst::Element>;
}

pub(crate) fn transcode_or_remux(
    input: &Path,
    facts: &MediaFacts,
    spec: &ConvertSpec,
    ctl: &Control,
    tap_frames: Option<&dyn VideoTap>,
) -> Result<ConvertReport> {
    crate::init()?;
    spec.validate()?;
    let method = match tap_frames {
        Some(_) => Method::Transcode,
        None => plan(facts, spec),
    };
    let out = TempOutput::new(&spec.output)?;
    let pipeline = gst::Pipeline::new();
    let mux = make("mp4mux")?;
    mux.set_property("faststart", true);
    mux.set_property(
        "faststart-file",
        out.scratch(".moov").to_string_lossy().as_ref(),
    );
    let sink = make("filesink")?;
    sink.set_property("location", out.path().to_string_lossy().as_ref());
    // The file gets its first bytes only after x264's lookahead has filled;
    // were it to hold the pipeline in preroll, a frames appsink behind the
    // same tee would preroll first, block, back up the tee and starve the
    // encoder: a deadlock at 720p and above.
    sink.set_property("async", false);
    graph::add_chain(&pipeline, &[&mux, &sink])?;

    let tap = PositionTap::default();
    let (width, height) = match method {
        Method::Remux => {
            let dts = match crate::dts::needed_for(&facts.container) {
                true => crate::dts::plan(input, ctl)?,
                false => None,
            };
            add_remux_routes(&pipeline, input, facts, spec, &mux, &tap, dts)?;
            facts.video.display_size()
        }
        Method::Transcode => {
            let size = graph::output_size(&facts.video, spec.max_height);
            add_transcode_routes(&pipeline, input, facts, spec, size, &mux, &tap, tap_frames)?;
            size
        }
    };
    let mut running = Running::start(pipeline, gst::State::Playing, ctl, tap, facts.duration())?;
    running.run_to_eos()?;
    running.report_done();
    drop(running);
    let size_bytes = out.commit()?;
    Ok(ConvertReport {
        method,
        width,
        height,
        has_audio: facts.audio.is_some(),
        size_bytes,
    })
}

/// Parsed streams go straight to the muxer: `h264parse` and `aacparse`
/// convert byte-stream and ADTS framing to what MP4 stores.
fn add_remux_routes(
    pipeline: &gst::Pipeline,
    input: &Path,
    facts: &MediaFacts,
    spec: &ConvertSpec,
    mux: &gst::Element,
    tap: &PositionTap,
    dts: Option<std::sync::Arc<Vec<u64>>>,
) -> Result<()> {
    let video_head = make("h264parse")?;
    pipeline.add(&video_head)?;
    graph::link_request(
        &video_head.static_pad("src").ok_or_else(no_pad)?,
        mux,
        "video_%u",
    )?;
    tap.attach(&video_head.static_pad("src").ok_or_else(no_pad)?);
    let audio: Option<graph::Route> = match &facts.audio {
        Some(_) if audio_copies(facts) => {
            let parse = make("aacparse")?;
            pipeline.add(&parse)?;
            let src = parse.static_pad("src").ok_or_else(no_pad)?;
            tap.attach(&src);
            graph::link_request(&src, mux, "audio_%u")?;
            Some(Box::new(move |_, pad| link_to(pad, &parse)))
        }
        Some(_) => {
            let head = add_audio_encode(pipeline, spec, mux, tap)?;
            Some(Box::new(move |pipeline, pad| {
                graph::decode_into(pipeline, pad, &head)
            }))
        }
        None => None,
    };
    graph::add_source(
        pipeline,
        input,
        graph::Picture::of(&facts.video),
        Box::new(move |_, pad| {
            if let Some(plan) = &dts {
                crate::dts::stamp(pad, plan.clone());
            }
            link_to(pad, &video_head)
        }),
        audio,
    )
}

/// Whether the source's audio goes into the MP4 as it is: AAC that every
/// browser plays as stereo or mono. Anything else is decoded, downmixed to
/// at most two channels and encoded to AAC-LC, while the video may still
/// be copied.
///
/// Not from an MPEG transport stream: broadcast and IPTV streams change
/// sample rate or layout at programme and advert boundaries, an MP4 track
/// holds one AAC configuration (mp4mux refuses the new one: the remux
/// failed `not-negotiated`), and only reading the whole stream would tell
/// in advance. Encoding the audio costs little beside copying the video.
fn audio_copies(facts: &MediaFacts) -> bool {
    facts.container != "mpegts"
        && facts
            .audio
            .as_ref()
            .is_some_and(|a| a.codec == "aac" && a.channels <= 2)
}

/// `queue ! audioconvert ! audioresample ! capsfilter ! AAC encoder` into
/// the muxer; returns the queue, where decoded audio goes in.
fn add_audio_encode(
    pipeline: &gst::Pipeline,
    spec: &ConvertSpec,
    mux: &gst::Element,
    tap: &PositionTap,
) -> Result<gst::Element> {
    let queue = make("queue")?;
    let convert = make("audioconvert")?;
    let resample = make("audioresample")?;
    // Always 48 kHz stereo (5.1 and beyond downmixed by audioconvert's
    // standard matrix): the encoder's caps never change when the source's
    // do mid-stream (broadcast TS switching rate or layout), and AAC's
    // 1024-sample start-up delay, which mp4mux does not trim, stays 21 ms
    // (128 ms at a source's 8 kHz).
    let filter = make("capsfilter")?;
    filter.set_property(
        "caps",
        gst::Caps::builder("audio/x-raw")
            .field("channels", 2i32)
            .field("rate", 48000i32)
            .build(),
    );
    let encoder = aac_encoder(spec.audio_bitrate)?;
    retime_overlaps(&graph::sink_pad(&queue)?);
    graph::add_chain(pipeline, &[&queue, &convert, &resample, &filter, &encoder])?;
    let src = encoder.static_pad("src").ok_or_else(no_pad)?;
    tap.attach(&src);
    graph::link_request(&src, mux, "audio_%u")?;
    Ok(queue)
}

/// Each stream is decoded; video is made upright, scaled and encoded with
/// x264, audio encoded to AAC.
#[allow(clippy::too_many_arguments)]
fn add_transcode_routes(
    pipeline: &gst::Pipeline,
    input: &Path,
    facts: &MediaFacts,
    spec: &ConvertSpec,
    size: (u32, u32),
    mux: &gst::Element,
    tap: &PositionTap,
    tap_frames: Option<&dyn VideoTap>,
) -> Result<()> {
    let (prep_head, prep_tail) = graph::add_video_prep(pipeline, &facts.video, size)?;
    drop_orientation_tags(&prep_tail);
    let queue = make("queue")?;
    let encoder = make("x264enc")?;
    encoder.set_property_from_str("speed-preset", &spec.preset);
    // "qual" is x264's constant rate factor mode; quantizer is the CRF.
    encoder.set_property_from_str("pass", "qual");
    encoder.set_property("quantizer", spec.crf);
    // x264enc turns its `bitrate` (default 2048 kbit/s) into a VBV cap even
    // in CRF mode; CRF alone is what was asked for (and what ffmpeg does).
    encoder.set_property("vbv-buf-capacity", 0u32);
    encoder.set_property("threads", spec.threads);
    let parse = make("h264parse")?;
    graph::add_chain(pipeline, &[&queue, &encoder, &parse])?;
    graph::link_request(
        &parse.static_pad("src").ok_or_else(no_pad)?,
        mux,
        "video_%u",
    )?;
    match tap_frames {
        Some(frames) => {
            let tee = make("tee")?;
            pipeline.add(&tee)?;
            prep_tail.link(&tee)?;
            tee.link(&queue)?;
            let frames_head = frames.attach(pipeline)?;
            tee.link(&frames_head)?;
        }
        None => prep_tail.link(&queue)?,
    }

    let parse_src = parse.static_pad("src").ok_or_else(no_pad)?;
    tap.attach(&parse_src);
    let audio_head = match facts.audio {
        Some(_) => Some(add_audio_encode(pipeline, spec, mux, tap)?),
        None => None,
    };
    graph::add_source(
        pipeline,
        input,
        graph::Picture::of(&facts.video),
        Box::new(move |pipeline, pad| graph::decode_into(pipeline, pad, &prep_head)),
        audio_head.map(|head| -> graph::Route {
            Box::new(move |pipeline, pad| graph::decode_into(pipeline, pad, &head))
        }),
    )
}

/// Decoded audio whose times run backwards is put back on the timeline its
/// samples make: qtdemux stamps every chunk of 96 kHz PCM with 0, and
/// avidemux's ADPCM blocks overlap, so the encoder (and the MP4) would
/// inherit a timeline that says 0.04 s for 2 s of sound. A buffer more than
/// 5 ms before where the previous one ended starts where it ended; later
/// buffers (a real gap) keep their time.
fn retime_overlaps(pad: &gst::Pad) {
    const SLACK: gst::ClockTime = gst::ClockTime::from_mseconds(5);
    // The layout (rate, bytes per frame) comes with each caps event, so a
    // buffer costs arithmetic only; then where the last buffer ended.
    let state = std::sync::Mutex::new((None::<(u64, u64)>, None::<gst::ClockTime>));
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let Ok(mut state) = state.lock() else {
                return gst::PadProbeReturn::Ok;
            };
            let (layout, expected) = &mut *state;
            match &mut info.data {
                Some(gst::PadProbeData::Event(event)) => {
                    if let gst::EventView::Caps(caps) = event.view() {
                        *layout = raw_audio_layout(caps.caps());
                    }
                }
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    let Some((rate, bpf)) = *layout else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let frames = buffer.size() as u64 / bpf;
                    let length = gst::ClockTime::from_nseconds(frames * 1_000_000_000 / rate);
                    let pts = match (buffer.pts(), *expected) {
                        (Some(p), Some(e)) if p + SLACK < e => Some(e),
                        (None, e) => e,
                        (p, _) => p,
                    };
                    if pts != buffer.pts() || buffer.duration() != Some(length) {
                        let b = buffer.make_mut();
                        b.set_pts(pts);
                        b.set_duration(length);
                    }
                    *expected = pts.map(|p| p + length);
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

/// Sample rate and bytes per frame (all channels) of raw audio caps.
fn raw_audio_layout(caps: &gst::CapsRef) -> Option<(u64, u64)> {
    let s = caps.structure(0)?;
    let rate = u64::try_from(s.get::<i32>("rate").ok()?).ok()?;
    let channels = u64::try_from(s.get::<i32>("channels").ok()?).ok()?;
    // GStreamer's raw formats: S8, U16LE, S24_32BE (in 4 bytes), S24LE
    // (packed in 3), F32LE, F64BE…: a sign letter, then the width.
    let format = s.get::<&str>("format").ok()?;
    let (kind, width) = (format.get(..1)?, format.get(1..)?);
    let bytes = match (kind, width) {
        (_, w) if w.starts_with("24_32") => 4,
        ("F", w) if w.starts_with("64") => 8,
        (_, w) if w.starts_with('8') => 1,
        (_, w) if w.starts_with("16") => 2,
        (_, w) if w.starts_with("18") || w.starts_with("20") || w.starts_with("24") => 3,
        (_, w) if w.starts_with("32") => 4,
        _ => return None,
    };
    (rate > 0 && channels > 0).then_some((rate, bytes * channels))
}

/// libav's AAC encoder, or the VisualOn one where libav is missing.
fn aac_encoder(bitrate: u32) -> Result<gst::Element> {
    match make("avenc_aac") {
        Ok(e) => {
            e.set_property("bitrate", bitrate as i32);
            Ok(e)
        }
        Err(_) => {
            let e = make("voaacenc")?;
            e.set_property("bitrate", bitrate as i32);
            Ok(e)
        }
    }
}

/// The picture is already turned upright; a rotation tag passed on to the
/// muxer would make players turn it a second time.
fn drop_orientation_tags(element: &gst::Element) {
    let Some(pad) = element.static_pad("src") else {
        return;
    };
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Tag(tag) = event.view() else {
            return gst::PadProbeReturn::Ok;
        };
        if tag.tag().get::<gst::tags::ImageOrientation>().is_none() {
            return gst::PadProbeReturn::Ok;
        }
        // Replaced rather than dropped: a dropped sticky event is offered
        // again before every buffer.
        let mut tags = tag.tag_owned();
        tags.make_mut().remove::<gst::tags::ImageOrientation>();
        info.data = Some(gst::PadProbeData::Event(gst::event::Tag::new(tags)));
        gst::PadProbeReturn::Ok
    });
}

fn link_to(pad: &gst::Pad, element: &gst::Element) -> Result<()> {
    pad.link(&graph::sink_pad(element)?)
        .map(|_| ())
        .map_err(|e| MediaError::Pipeline(format!("link to {}: {e:?}", element.name())))
}

fn no_pad() -> MediaError {
    MediaError::Pipeline("element has no src pad".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{AudioFacts, Orientation, VideoFacts};

    fn h264(profile: &str, height: u32) -> MediaFacts {
        MediaFacts {
            container: "mp4".into(),
            duration: Some(10.0),
            start: 0.0,
            seekable: true,
            size_bytes: 1,
            video: VideoFacts {
                codec: "h264".into(),
                profile: Some(profile.into()),
                bit_depth: Some(8),
                chroma_format: Some("4:2:0".into()),
                width: height * 16 / 9,
                height,
                pixel_aspect_ratio: (1, 1),
                ..VideoFacts::default()
            },
            audio: Some(AudioFacts {
                codec: "aac".into(),
                channels: 2,
                sample_rate: 48000,
            }),
        }
    }

    #[test]
    fn raw_audio_layouts_are_read_from_caps() {
        crate::init().expect("gstreamer");
        let caps = |format: &str, channels: i32| {
            gst::Caps::builder("audio/x-raw")
                .field("format", format)
                .field("rate", 48000i32)
                .field("channels", channels)
                .build()
        };
        assert_eq!(raw_audio_layout(&caps("S16LE", 2)), Some((48000, 4)));
        assert_eq!(raw_audio_layout(&caps("S24BE", 2)), Some((48000, 6)));
        assert_eq!(raw_audio_layout(&caps("S24_32LE", 1)), Some((48000, 4)));
        assert_eq!(raw_audio_layout(&caps("F32LE", 6)), Some((48000, 24)));
        assert_eq!(raw_audio_layout(&caps("F64LE", 1)), Some((48000, 8)));
        assert_eq!(raw_audio_layout(&caps("U8", 1)), Some((48000, 1)));
        assert_eq!(raw_audio_layout(&caps("weird", 1)), None);
    }

    #[test]
    fn audio_browsers_do_not_play_is_encoded_beside_copied_video() {
        let spec = ConvertSpec::new("out.mp4");
        let mut mp3 = h264("main", 720);
        if let Some(a) = mp3.audio.as_mut() {
            a.codec = "mp3".into();
        }
        assert_eq!(plan(&mp3, &spec), Method::Remux);
        assert!(!audio_copies(&mp3));
        let mut surround = h264("main", 720);
        if let Some(a) = surround.audio.as_mut() {
            a.channels = 6;
        }
        assert!(!audio_copies(&surround));
        assert!(audio_copies(&h264("main", 720)));
    }

    #[test]
    fn aac_from_a_transport_stream_is_encoded_beside_copied_video() {
        let mut ts = h264("main", 720);
        ts.container = "mpegts".into();
        assert_eq!(plan(&ts, &ConvertSpec::new("out.mp4")), Method::Remux);
        assert!(!audio_copies(&ts));
    }

    #[test]
    fn browser_ready_h264_is_remuxed() {
        let spec = ConvertSpec::new("out.mp4");
        assert_eq!(plan(&h264("high", 1080), &spec), Method::Remux);
        assert_eq!(
            plan(&h264("constrained-baseline", 720), &spec),
            Method::Remux
        );
    }

    #[test]
    fn anything_a_browser_may_not_play_is_transcoded() {
        let spec = ConvertSpec::new("out.mp4");
        assert_eq!(plan(&h264("high-10", 1080), &spec), Method::Transcode);
        assert_eq!(plan(&h264("high", 2160), &spec), Method::Transcode);
        let mut portrait = h264("high", 1080);
        portrait.video.width = 1080;
        portrait.video.height = 1920;
        assert_eq!(
            plan(&portrait, &spec),
            Method::Remux,
            "short side within 1080"
        );
        let mut rotated = h264("main", 720);
        rotated.video.orientation = Orientation {
            rotation: 90,
            flipped: false,
        };
        assert_eq!(plan(&rotated, &spec), Method::Transcode);
        let mut yuv444 = h264("high-4:4:4", 720);
        yuv444.video.chroma_format = Some("4:4:4".into());
        assert!(remux_blocker(&yuv444, 1080).is_some());
        let mut vp9 = h264("main", 720);
        vp9.video.codec = "vp9".into();
        assert_eq!(plan(&vp9, &spec), Method::Transcode);
        let no_remux = ConvertSpec {
            allow_remux: false,
            ..ConvertSpec::new("out.mp4")
        };
        assert_eq!(plan(&h264("high", 720), &no_remux), Method::Transcode);
    }
}
