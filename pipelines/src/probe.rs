//! Probing: what a file is, told apart into "not a video we read"
//! (`Unsupported`) and "a video whose data is broken" (`Corrupt`).
//!
//! GStreamer's Discoverer reads the container and stream caps; a short second
//! pass over the parsed (not decoded) video stream measures keyframe spacing,
//! which the frame extractor uses to choose between seeking and decoding
//! straight through.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gst_pbutils::prelude::*;

use crate::colour::Colour;
use crate::control::Control;
use crate::error::{MediaError, Result};
use crate::facts::{AudioFacts, MediaFacts, Orientation, VideoFacts};
use crate::graph;
use crate::isobmff;
use crate::limits::MediaLimits;
use crate::matrix;
use crate::runner::{self, PositionTap, Running};

/// How long the Discoverer may take on one file.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// The smallest picture side taken: H.264's macroblock (x264enc refuses
/// less), and no real video is smaller.
const MIN_SIDE: u32 = 16;

/// The keyframe scan stops after this much media time...
const SCAN_MEDIA: Duration = Duration::from_secs(20);
/// ...or this many video packets, whichever comes first.
const SCAN_PACKETS: usize = 1500;
/// Longest a read of every packet may take (parsing only, no decoding: a
/// few seconds for gigabytes).
const WHOLE_SCAN_LIMIT: Duration = Duration::from_secs(120);

/// Reads what `path` holds. Fails with `Unsupported` for anything that is not
/// a video (empty, not media, audio only, a still image, an undecodable
/// codec) and with `Corrupt` for a video whose data cannot be read.
pub fn probe(path: &Path) -> Result<MediaFacts> {
    probe_within(path, &MediaLimits::unlimited())
}

/// Like [`probe`], and fails with `LimitExceeded` when what the file
/// declares, or what its packets show, passes `limits`: checked before
/// the packets are read, so a file declaring 10^12 s costs nothing.
pub fn probe_within(path: &Path, limits: &MediaLimits) -> Result<MediaFacts> {
    crate::init()?;
    let meta = std::fs::metadata(path).map_err(|e| MediaError::io(path, e))?;
    if !meta.is_file() {
        return Err(MediaError::Invalid(format!(
            "{} is not a file",
            path.display()
        )));
    }
    if meta.len() == 0 {
        return Err(MediaError::Unsupported("the file is empty".into()));
    }
    if isobmff::lacks_index(path) {
        return Err(MediaError::Corrupt(
            "the MP4 has media data but no index (moov): the recording was cut off before it was finished".into(),
        ));
    }
    if isobmff::is_cut_off(path) {
        return Err(MediaError::Corrupt(
            "the file ends before its last part does: it was cut off (an upload or a copy that \
             stopped early?); send the whole file"
                .into(),
        ));
    }
    let absolute = std::path::absolute(path).map_err(|e| MediaError::io(path, e))?;
    let uri = gst::glib::filename_to_uri(&absolute, None)
        .map_err(|e| MediaError::Invalid(format!("{}: {e}", path.display())))?;
    let discoverer = gst_pbutils::Discoverer::new(gst::ClockTime::from_nseconds(
        DISCOVER_TIMEOUT.as_nanos() as u64,
    ))
    .map_err(|e| MediaError::Pipeline(format!("discoverer: {e}")))?;
    let info = discoverer
        .discover_uri(&uri)
        .map_err(|e| match MediaError::from_gst(&e, None) {
            // Any stream error while reading a file's headers is the
            // file's (a demuxer that gives up on what it finds).
            MediaError::Pipeline(m) if e.kind::<gst::StreamError>().is_some() => {
                MediaError::Corrupt(m)
            }
            other => other,
        })?;
    match info.result() {
        gst_pbutils::DiscovererResult::Ok => {}
        gst_pbutils::DiscovererResult::MissingPlugins => {
            return Err(MediaError::Unsupported(
                "no installed decoder reads this file's codec".into(),
            ))
        }
        gst_pbutils::DiscovererResult::Timeout => {
            return Err(MediaError::Corrupt(
                "reading the file's headers timed out".into(),
            ))
        }
        other => {
            return Err(MediaError::Corrupt(format!(
                "the file could not be read ({other:?})"
            )))
        }
    }

    let Some(v) = main_video(info.video_streams()) else {
        let what = if info.audio_streams().is_empty() {
            "the file has no video stream"
        } else {
            "the file is audio only"
        };
        return Err(MediaError::Unsupported(what.into()));
    };
    if v.is_image() {
        return Err(MediaError::Unsupported(
            "the file is a still image, not a video".into(),
        ));
    }
    let mut video = video_facts(&v);
    if video.width == 0 || video.height == 0 {
        return Err(MediaError::Corrupt(
            "the video stream has no picture size".into(),
        ));
    }
    if video.width < MIN_SIDE || video.height < MIN_SIDE {
        return Err(MediaError::Unsupported(format!(
            "the video's pictures are {}x{}; vidmill needs at least {MIN_SIDE}x{MIN_SIDE}",
            video.width, video.height
        )));
    }
    let audio = info
        .audio_streams()
        .into_iter()
        .next()
        .map(|a| audio_facts(&a));
    let container = info
        .stream_info()
        .and_then(|s| s.caps())
        .map(|c| container_name(&c))
        .unwrap_or_else(|| "unknown".into());
    // qtdemux leaves one of the eight quarter-turn-and-mirror matrices
    // untold (see `matrix`): the track's own matrix is read instead.
    if matches!(container.as_str(), "mp4" | "quicktime") {
        if let Some(o) = matrix::orientation(path) {
            video.orientation = o;
        }
    }
    // Matroska written live (MediaRecorder, a crashed OBS) and fragmented
    // MP4 may say no duration or a wrong one, and have no index: their
    // packets are read to the end to learn how long they really are.
    // So may any file whose demuxer can tell none: tsdemux says 0 s for a
    // short transport stream (65 KB, 3 s), whose PCRs it could not span.
    let fragmented = isobmff::is_fragmented(path);
    let declared = info
        .duration()
        .map(|d| d.nseconds() as f64 / 1e9)
        .filter(|d| *d > 0.0);
    let whole =
        fragmented || matches!(container.as_str(), "matroska" | "webm") || declared.is_none();
    let as_declared = MediaFacts {
        duration: declared,
        video: video.clone(),
        ..MediaFacts::default()
    };
    limits.check_source(&as_declared)?;
    let scan = match scan(path, graph::Picture::of(&video), whole, limits) {
        Ok(scan) => scan,
        Err(e @ MediaError::LimitExceeded { .. }) => return Err(e),
        // What the scan adds is optional: keyframe spacing, a start offset.
        Err(_) => Scan::default(),
    };
    video.keyframe_spacing = scan.spacing();
    if let Some(c) = &scan.colorimetry {
        video.colour = Colour::from_caps_field(c);
    }
    let start = scan.start().map_or(0.0, |s| s.as_secs_f64());
    let measured = scan
        .end
        .filter(|_| whole)
        .map(|end| end.as_secs_f64() - start)
        .filter(|d| *d > 0.0);
    // A header that agrees with the packets within 0.1 s is kept (packet
    // durations overshoot the end by a fraction of an audio frame).
    let agrees = declared
        .zip(measured)
        .is_some_and(|(d, m)| (d - m).abs() <= 0.1);
    let duration = if agrees {
        declared
    } else {
        measured.or(declared)
    };
    let seekable = match container.as_str() {
        "mp4" | "quicktime" => !fragmented,
        // Cues and a duration are written together when a recording ends.
        "matroska" | "webm" => agrees,
        _ => false,
    };
    let facts = MediaFacts {
        container,
        duration,
        start,
        seekable,
        size_bytes: meta.len(),
        video,
        audio,
    };
    // Measured durations (Matroska, fragmented MP4) are held too.
    limits.check_source(&facts)?;
    Ok(facts)
}

fn video_facts(v: &gst_pbutils::DiscovererVideoInfo) -> VideoFacts {
    let caps = v.caps();
    let s = caps.as_ref().and_then(|c| c.structure(0));
    let field = |name: &str| s.and_then(|s| s.get::<String>(name).ok());
    let codec = s.map(video_codec).unwrap_or_else(|| "unknown".into());
    let bit_depth = s.and_then(|s| s.get::<u32>("bit-depth-luma").ok());
    let mut chroma_format = field("chroma-format");
    // VP8 has only one layout; the parsers of the others say theirs.
    if chroma_format.is_none() && codec == "vp8" {
        chroma_format = Some("4:2:0".into());
    }
    let bit_depth = bit_depth.or((codec == "vp8").then_some(8));
    let pixel_format = chroma_format
        .as_deref()
        .and_then(|c| pixel_format(c, bit_depth.unwrap_or(8)));
    let orientation = v
        .tags()
        .and_then(|t| {
            t.get::<gst::tags::ImageOrientation>()
                .map(|o| o.get().to_string())
        })
        .map(|o| Orientation::from_tag(&o))
        .unwrap_or_default();
    let fps = v.framerate();
    let frame_rate =
        (fps.numer() > 0 && fps.denom() > 0).then(|| fps.numer() as f64 / fps.denom() as f64);
    let par = v.par();
    let colour = match field("colorimetry") {
        Some(c) => Colour::from_caps_field(&c),
        // JPEG is full-range BT.601 by definition (JFIF).
        None if codec == "mjpeg" => Colour::from_caps_field(crate::colour::JPEG_COLORIMETRY),
        None => Colour::default(),
    };
    VideoFacts {
        codec,
        profile: field("profile"),
        pixel_format,
        bit_depth,
        chroma_format,
        width: v.width(),
        height: v.height(),
        pixel_aspect_ratio: (par.numer().max(1) as u32, par.denom().max(1) as u32),
        orientation,
        frame_rate,
        interlaced: v.is_interlaced(),
        keyframe_spacing: None,
        colour,
    }
}

fn video_codec(s: &gst::StructureRef) -> String {
    let mpegversion = s.get::<i32>("mpegversion").unwrap_or(0);
    match s.name().as_str() {
        "video/x-h264" => "h264".into(),
        "video/x-h265" => "hevc".into(),
        "video/x-vp8" => "vp8".into(),
        "video/x-vp9" => "vp9".into(),
        "video/x-av1" => "av1".into(),
        "video/mpeg" if mpegversion == 4 => "mpeg4".into(),
        "video/mpeg" if mpegversion == 2 => "mpeg2video".into(),
        "video/mpeg" => "mpeg1video".into(),
        "video/x-divx" | "video/x-xvid" => "mpeg4".into(),
        "image/jpeg" => "mjpeg".into(),
        "image/png" => "png".into(),
        "image/x-jpc" | "image/x-j2c" | "image/jp2" => "jpeg2000".into(),
        "video/x-theora" => "theora".into(),
        other => other
            .trim_start_matches("video/x-")
            .trim_start_matches("video/")
            .trim_start_matches("image/x-")
            .trim_start_matches("image/")
            .into(),
    }
}

/// The video stream the pipelines will read ([`graph::Picture`]): the first
/// of a moving-picture codec, passing over cover art and thumbnail tracks;
/// the first of all when every one is of a still-image codec.
fn main_video(
    streams: Vec<gst_pbutils::DiscovererVideoInfo>,
) -> Option<gst_pbutils::DiscovererVideoInfo> {
    let still =
        |v: &gst_pbutils::DiscovererVideoInfo| v.caps().is_some_and(|c| graph::is_still(&c));
    let first = streams.first().cloned();
    streams.into_iter().find(|v| !still(v)).or(first)
}

fn audio_facts(a: &gst_pbutils::DiscovererAudioInfo) -> AudioFacts {
    let codec = a
        .caps()
        .and_then(|c| c.structure(0).map(audio_codec))
        .unwrap_or_else(|| "unknown".into());
    AudioFacts {
        codec,
        channels: a.channels(),
        sample_rate: a.sample_rate(),
    }
}

fn audio_codec(s: &gst::StructureRef) -> String {
    let mpegversion = s.get::<i32>("mpegversion").unwrap_or(0);
    let layer = s.get::<i32>("layer").unwrap_or(0);
    match s.name().as_str() {
        "audio/mpeg" if mpegversion == 2 || mpegversion == 4 => "aac".into(),
        "audio/mpeg" if layer == 3 => "mp3".into(),
        "audio/mpeg" => "mp2".into(),
        "audio/x-raw" => "pcm".into(),
        other => other
            .trim_start_matches("audio/x-")
            .trim_start_matches("audio/")
            .into(),
    }
}

fn container_name(caps: &gst::CapsRef) -> String {
    let Some(s) = caps.structure(0) else {
        return "unknown".into();
    };
    let variant = s.get::<String>("variant").unwrap_or_default();
    match s.name().as_str() {
        "video/quicktime" if variant.starts_with("iso") => "mp4".into(),
        "video/quicktime" => "quicktime".into(),
        "video/x-matroska" => "matroska".into(),
        "video/webm" => "webm".into(),
        "video/x-msvideo" => "avi".into(),
        "video/mpegts" => "mpegts".into(),
        "application/ogg" | "video/ogg" => "ogg".into(),
        "video/x-flv" => "flv".into(),
        "video/mpeg" if s.get::<bool>("systemstream").unwrap_or(false) => "mpeg-ps".into(),
        // An elementary stream with no container around it.
        other if other.starts_with("video/") || other == "image/jpeg" => "none".into(),
        other => other.into(),
    }
}

fn pixel_format(chroma: &str, depth: u32) -> Option<String> {
    let base = match chroma {
        "4:2:0" => "yuv420p",
        "4:2:2" => "yuv422p",
        "4:4:4" => "yuv444p",
        "4:0:0" => "gray",
        _ => return None,
    };
    Some(if depth > 8 {
        format!("{base}{depth}le")
    } else {
        base.to_string()
    })
}

/// Reads the first [`SCAN_MEDIA`] of the parsed (not decoded) streams, or
/// all of them when `whole`: the video's keyframe times, and the first and
/// last time of every stream.
fn scan(path: &Path, picture: graph::Picture, whole: bool, limits: &MediaLimits) -> Result<Scan> {
    let pipeline = gst::Pipeline::new();
    let seen: Arc<Mutex<Scan>> = Arc::default();
    let tap = PositionTap::default();
    let (scan, probe_tap) = (seen.clone(), tap.clone());
    let audio_scan = seen.clone();
    graph::add_source(
        &pipeline,
        path,
        picture,
        Box::new(move |pipeline, pad| {
            let scan = scan.clone();
            let tap = probe_tap.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                let Some(buf) = info.buffer() else {
                    return gst::PadProbeReturn::Ok;
                };
                let t = runner::stream_time(pad, buf.pts().or(buf.dts()));
                let key = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
                let length = buf.duration().map(|d| Duration::from_nanos(d.nseconds()));
                if let Ok(mut s) = scan.lock() {
                    if s.packets == 0 {
                        s.colorimetry = pad
                            .current_caps()
                            .and_then(|c| c.structure(0)?.get::<String>("colorimetry").ok());
                    }
                    s.packets += 1;
                    if let Some(t) = t {
                        tap.set(t);
                        s.reach(t + length.unwrap_or_default());
                        s.first = Some(s.first.map_or(t, |f| f.min(t)));
                        s.last = Some(t);
                        if key {
                            s.keys.push(t);
                        }
                    }
                }
                gst::PadProbeReturn::Ok
            });
            fake_sink(pipeline, pad)
        }),
        Some(Box::new(move |pipeline, pad| {
            let scan = audio_scan.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                let Some(buf) = info.buffer() else {
                    return gst::PadProbeReturn::Ok;
                };
                let t = runner::stream_time(pad, buf.pts().or(buf.dts()));
                let length = buf.duration().map(|d| Duration::from_nanos(d.nseconds()));
                if let (Some(t), Ok(mut s)) = (t, scan.lock()) {
                    s.first_audio = Some(s.first_audio.map_or(t, |f| f.min(t)));
                    s.reach(t + length.unwrap_or_default());
                }
                gst::PadProbeReturn::Ok
            });
            fake_sink(pipeline, pad)
        })),
    )?;
    let ctl = Control {
        stall_timeout: Duration::from_secs(5),
        deadline: Some(if whole {
            WHOLE_SCAN_LIMIT
        } else {
            Duration::from_secs(10)
        }),
        limits: *limits,
        ..Control::default()
    };
    let mut running = Running::start(pipeline, gst::State::Playing, &ctl, tap, None)?;
    running.wait_for(None, || {
        let s = seen.lock().ok()?;
        let enough = s.packets >= SCAN_PACKETS || s.last.is_some_and(|t| t >= SCAN_MEDIA);
        (enough && !whole).then_some(())
    })?;
    drop(running);
    let s = seen
        .lock()
        .map_err(|_| MediaError::Pipeline("scan state poisoned".into()))?;
    Ok(s.clone())
}

fn fake_sink(pipeline: &gst::Pipeline, pad: &gst::Pad) -> Result<()> {
    let sink = graph::make("fakesink")?;
    sink.set_property("sync", false);
    pipeline.add(&sink)?;
    sink.sync_state_with_parent()?;
    pad.link(&graph::sink_pad(&sink)?)
        .map_err(|e| MediaError::Pipeline(format!("link scan sink: {e:?}")))?;
    Ok(())
}

#[derive(Debug, Default, Clone)]
struct Scan {
    packets: usize,
    keys: Vec<Duration>,
    last: Option<Duration>,
    /// The earliest video time seen (B-frames come out of order).
    first: Option<Duration>,
    first_audio: Option<Duration>,
    /// The furthest any packet of any stream reaches (its time + duration).
    end: Option<Duration>,
    /// The parsed video's colorimetry: for H.264 and H.265 read from the
    /// bitstream (see `graph`), which the Discoverer does not do.
    colorimetry: Option<String>,
}

impl Scan {
    fn reach(&mut self, t: Duration) {
        self.end = Some(self.end.map_or(t, |e| e.max(t)));
    }

    /// Where the media starts: the earliest time of any stream.
    fn start(&self) -> Option<Duration> {
        match (self.first, self.first_audio) {
            (Some(v), Some(a)) => Some(v.min(a)),
            (v, a) => v.or(a),
        }
    }

    /// Mean seconds between keyframes over the scanned part. When only one
    /// keyframe is seen, the scanned span is a lower bound and is returned.
    fn spacing(&self) -> Option<f64> {
        let mut keys = self.keys.clone();
        keys.sort();
        keys.dedup();
        match keys.as_slice() {
            [] => None,
            [only] => self
                .last
                .map(|l| (l.saturating_sub(*only)).as_secs_f64())
                .filter(|s| *s > 0.0),
            [first, .., last] => Some((*last - *first).as_secs_f64() / (keys.len() - 1) as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_formats_follow_ffmpeg_names() {
        assert_eq!(pixel_format("4:2:0", 8).as_deref(), Some("yuv420p"));
        assert_eq!(pixel_format("4:2:0", 10).as_deref(), Some("yuv420p10le"));
        assert_eq!(pixel_format("4:4:4", 8).as_deref(), Some("yuv444p"));
        assert_eq!(pixel_format("weird", 8), None);
    }

    #[test]
    fn keyframe_spacing_is_the_mean_gap() {
        let secs = Duration::from_secs;
        let s = Scan {
            packets: 10,
            keys: vec![secs(0), secs(3), secs(6), secs(9)],
            last: Some(secs(10)),
            ..Scan::default()
        };
        assert_eq!(s.spacing(), Some(3.0));
        let one = Scan {
            packets: 10,
            keys: vec![secs(0)],
            last: Some(secs(20)),
            ..Scan::default()
        };
        assert_eq!(one.spacing(), Some(20.0));
    }
}
