//! Building blocks shared by the pipelines: making elements, opening a file
//! into parsed streams, decoding a stream, and the chain that turns decoded
//! video into upright, square-pixel frames of the output size.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gst::prelude::*;

use crate::colour;
use crate::error::{MediaError, Result};
use crate::facts::VideoFacts;

/// Makes an element, naming the plugin that is missing when it fails.
pub(crate) fn make(factory: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| MediaError::MissingElement(factory.to_string()))
}

/// Adds elements to the pipeline and links them in order.
pub(crate) fn add_chain(bin: &gst::Pipeline, chain: &[&gst::Element]) -> Result<()> {
    bin.add_many(chain.iter().copied())?;
    gst::Element::link_many(chain.iter().copied())?;
    Ok(())
}

/// Adds elements that were made after the pipeline started and brings them
/// to its state, last first so that no element pushes into a stopped one.
pub(crate) fn add_live_chain(bin: &gst::Pipeline, chain: &[&gst::Element]) -> Result<()> {
    add_chain(bin, chain)?;
    for e in chain.iter().rev() {
        e.sync_state_with_parent()?;
    }
    Ok(())
}

/// The kind of one parsed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Video,
    Audio,
    Other,
}

pub(crate) fn stream_kind(caps: &gst::CapsRef) -> StreamKind {
    match caps.structure(0).map(|s| s.name().as_str()) {
        // Video of still-image codecs (MJPEG, PNG in MOV, JPEG 2000 in
        // MXF) carries image/* caps: a stream of them is video too, and one
        // left unrouted stalls the pipeline until its watchdog.
        Some(n) if n.starts_with("video/") || n.starts_with("image/") => StreamKind::Video,
        Some(n) if n.starts_with("audio/") => StreamKind::Audio,
        _ => StreamKind::Other,
    }
}

/// Whether a video stream's caps are those of a still-image codec.
pub(crate) fn is_still(caps: &gst::CapsRef) -> bool {
    caps.structure(0)
        .is_some_and(|s| s.name().starts_with("image/"))
}

/// Which video stream of a file is its picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Picture {
    /// The first stream of a moving-picture codec: a still-image stream
    /// beside it is cover art or a thumbnail track (ffmpeg writes a cover
    /// into Matroska as a one-frame MJPEG or PNG track, often first), which
    /// ffmpeg's own stream choice passes over too.
    Moving,
    /// The first video stream: the file's video is of a still-image codec
    /// (MJPEG, PNG), so there is nothing else.
    Any,
}

impl Picture {
    /// The choice that finds the stream probed as `codec` again.
    pub(crate) fn of(video: &VideoFacts) -> Self {
        if video.is_still_codec() {
            Self::Any
        } else {
            Self::Moving
        }
    }

    fn takes(self, caps: &gst::CapsRef) -> bool {
        self == Self::Any || !is_still(caps)
    }
}

/// What to do with the first video and first audio stream of a file. Each
/// route gets the parsed (still compressed) stream's pad; other streams are
/// discarded.
pub(crate) type Route = Box<dyn Fn(&gst::Pipeline, &gst::Pad) -> Result<()> + Send + Sync>;

/// `filesrc ! parsebin`, with the video stream `picture` picks sent to
/// `video` and the first audio stream to `audio` (when given).
pub(crate) fn add_source(
    pipeline: &gst::Pipeline,
    input: &Path,
    picture: Picture,
    video: Route,
    audio: Option<Route>,
) -> Result<()> {
    let src = make("filesrc")?;
    src.set_property("location", input.to_string_lossy().as_ref());
    let parse = make("parsebin")?;
    add_chain(pipeline, &[&src, &parse])?;
    let seen_video = AtomicBool::new(false);
    let seen_audio = AtomicBool::new(false);
    let demuxer = Arc::new(std::sync::OnceLock::<StreamFix>::new());
    let found = demuxer.clone();
    parse.connect("deep-element-added", false, move |args| {
        let element = args.get(2).and_then(|v| v.get::<gst::Element>().ok());
        let factory = element.as_ref().and_then(|e| e.factory());
        if let (Some(element), Some(f)) = (&element, &factory) {
            if f.klass().contains("Demux") {
                element.connect_pad_added(|_, pad| bitstream_colour_wins(pad));
            }
        }
        let fix = match factory.as_ref().map(|f| f.name()) {
            Some(n) if n == "matroskademux" => Some(StreamFix::TimeIsTimestamp),
            Some(n) if n == "tsdemux" || n == "mpegpsdemux" => Some(StreamFix::FromZero),
            Some(n) if n == "avidemux" => Some(StreamFix::DecodeOrderOnly),
            _ => None,
        };
        if let Some(fix) = fix {
            let _ = found.set(fix);
        }
        None
    });
    let weak = pipeline.downgrade();
    parse.connect_pad_added(move |parse, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        if let Some(fix) = demuxer.get() {
            fix_stream(pad, *fix);
        }
        // Some parsers expose their pad before sending caps; what the pad
        // can produce still names the media type.
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        tracing::debug!(pad = %pad.name(), caps = %caps, "parsed stream");
        let routed = match stream_kind(&caps) {
            StreamKind::Video
                if picture.takes(&caps) && !seen_video.swap(true, Ordering::SeqCst) =>
            {
                decouple(&pipeline, pad).and_then(|pad| video(&pipeline, &pad))
            }
            StreamKind::Audio if !seen_audio.swap(true, Ordering::SeqCst) && audio.is_some() => {
                decouple(&pipeline, pad).and_then(|pad| {
                    audio
                        .as_ref()
                        .map_or(Ok(()), |route| route(&pipeline, &pad))
                })
            }
            _ => {
                discard(pad);
                Ok(())
            }
        };
        if let Err(e) = routed {
            gst::element_error!(parse, gst::CoreError::Negotiation, ["{}", e]);
        }
    });
    Ok(())
}

/// H.264 and H.265 say their colours in the bitstream (the SPS's VUI),
/// and that is what browsers and ffmpeg go by; a container's `colr` atom
/// may disagree (ffmpeg writes limited range there for full-range "yuvj"
/// phone video) or be read without its range (qtdemux). The parser keeps
/// a colorimetry it is given over the one it reads, so the demuxer's is
/// taken out of the caps before the parser sees them.
fn bitstream_colour_wins(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
        let Some(gst::EventView::Caps(event)) = info.event().map(|e| e.view()) else {
            return gst::PadProbeReturn::Ok;
        };
        let caps = event.caps();
        let Some(s) = caps.structure(0) else {
            return gst::PadProbeReturn::Ok;
        };
        let coded = matches!(s.name().as_str(), "video/x-h264" | "video/x-h265");
        if !coded || !s.has_field("colorimetry") {
            return gst::PadProbeReturn::Ok;
        }
        let mut caps = caps.to_owned();
        if let Some(s) = caps.make_mut().structure_mut(0) {
            s.remove_field("colorimetry");
        }
        info.data = Some(gst::PadProbeData::Event(gst::event::Caps::new(&caps)));
        gst::PadProbeReturn::Ok
    });
}

/// Compressed data one demuxed stream may run ahead of the others by.
const DECOUPLE_BYTES: u32 = 128 * 1024 * 1024;

/// How a demuxer's times are set right before anything reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamFix {
    /// Matroska times are the media's own (no edit lists): stream time is
    /// the timestamp. matroskademux's first segment maps its first
    /// timestamp to stream time 0 and the next one, a few packets later,
    /// maps 0 to 0, so the first frames would be told early.
    TimeIsTimestamp,
    /// MPEG transport and program streams start their segment at the first
    /// video timestamp, so audio that starts a frame earlier lies before it
    /// and is dropped or clamped by the muxer (A/V sync off by a frame).
    /// The segment starts at 0 instead: every packet is kept, and stream
    /// time is the timestamp (vidmill counts from the earliest packet).
    FromZero,
    /// AVI stores no presentation times: avidemux stamps keyframes with
    /// their decode time as if it were one, which with B-frames is a frame
    /// or two early, and the decoder's interpolation then gives two frames
    /// one time (the video runs 80 ms early from there on). Only decode
    /// times are passed on; the decoder numbers frames from them as the
    /// AVI index means (frame k at k frame durations).
    DecodeOrderOnly,
}

fn fix_stream(pad: &gst::Pad, fix: StreamFix) {
    if fix == StreamFix::DecodeOrderOnly {
        // Intra-only streams (DV, MJPEG) have no B-frames and every time
        // right: only once a stream has shown a delta frame are times taken
        // off its keyframes.
        let reorders = AtomicBool::new(false);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
                if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                    reorders.store(true, Ordering::Relaxed);
                } else if reorders.load(Ordering::Relaxed)
                    && buffer.dts().is_some()
                    && buffer.pts().is_some()
                {
                    buffer.make_mut().set_pts(gst::ClockTime::NONE);
                }
            }
            gst::PadProbeReturn::Ok
        });
        return;
    }
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Segment(seg) = event.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(seg) = seg.segment().downcast_ref::<gst::ClockTime>() else {
            return gst::PadProbeReturn::Ok;
        };
        if seg.rate() < 0.0 {
            return gst::PadProbeReturn::Ok;
        }
        let mut fixed = seg.clone();
        match fix {
            StreamFix::TimeIsTimestamp => fixed.set_time(seg.start()),
            StreamFix::FromZero => {
                fixed.set_start(gst::ClockTime::ZERO);
                fixed.set_time(gst::ClockTime::ZERO);
                fixed.set_position(gst::ClockTime::ZERO);
            }
            StreamFix::DecodeOrderOnly => {}
        }
        if fixed == *seg {
            return gst::PadProbeReturn::Ok;
        }
        *event = gst::event::Segment::builder(&fixed)
            .seqnum(event.seqnum())
            .build();
        gst::PadProbeReturn::Ok
    });
}

/// Puts a queue after a demuxed stream so each stream runs on its own
/// thread: the demuxer pushes all streams from one thread, and a muxer that
/// waits for one stream would otherwise block it from delivering the other.
fn decouple(pipeline: &gst::Pipeline, pad: &gst::Pad) -> Result<gst::Pad> {
    let queue = make("queue")?;
    // Bounded by bytes only. A queue full after a second (the default)
    // deadlocks a file whose audio starts late or whose streams are
    // interleaved loosely: the muxer waits for the stream that has not
    // come yet while the demuxer waits for room in this one. The data is
    // still compressed, so this is seconds to minutes of media.
    queue.set_property("max-size-buffers", 0u32);
    queue.set_property("max-size-time", 0u64);
    queue.set_property("max-size-bytes", DECOUPLE_BYTES);
    pipeline.add(&queue)?;
    queue.sync_state_with_parent()?;
    pad.link(&sink_pad(&queue)?)
        .map_err(|e| MediaError::Pipeline(format!("link stream queue: {e:?}")))?;
    queue
        .static_pad("src")
        .ok_or_else(|| MediaError::Pipeline("queue has no src pad".into()))
}

/// Drops a stream's data at its pad, so an unused stream costs nothing and
/// its demuxer does not fail with `not-linked` (which some, matroskademux
/// among them, do as soon as one stream is unlinked).
fn discard(pad: &gst::Pad) {
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        |_, _| gst::PadProbeReturn::Drop,
    );
}

/// Links a parsed stream to a new `decodebin` whose raw output goes to
/// `sink` (the first element of the caller's chain).
pub(crate) fn decode_into(
    pipeline: &gst::Pipeline,
    parsed: &gst::Pad,
    sink: &gst::Element,
) -> Result<()> {
    let decode = make("decodebin")?;
    pipeline.add(&decode)?;
    let target = sink
        .static_pad("sink")
        .ok_or_else(|| MediaError::Pipeline("chain has no sink pad".into()))?;
    decode.connect_pad_added(move |decode, pad| {
        if target.is_linked() {
            return;
        }
        if let Err(e) = pad.link(&target) {
            gst::element_error!(
                decode,
                gst::CoreError::Negotiation,
                ["link decoder: {:?}", e]
            );
        }
    });
    decode.sync_state_with_parent()?;
    let decode_sink = decode
        .static_pad("sink")
        .ok_or_else(|| MediaError::Pipeline("decodebin has no sink pad".into()))?;
    parsed
        .link(&decode_sink)
        .map_err(|e| MediaError::Pipeline(format!("link to decoder: {e:?}")))?;
    Ok(())
}

/// Drops every buffer that is not a keyframe before it reaches the decoder,
/// so only keyframes are decoded.
pub(crate) fn keyframes_only(parsed: &gst::Pad) {
    parsed.add_probe(gst::PadProbeType::BUFFER, |_, info| match info.buffer() {
        Some(b) if b.flags().contains(gst::BufferFlags::DELTA_UNIT) => gst::PadProbeReturn::Drop,
        _ => gst::PadProbeReturn::Ok,
    });
}

/// The output picture size for a source: display size after rotation and
/// pixel aspect ratio, scaled down so that its shorter side is at most
/// `max_height` (what "1080p" means for a portrait phone video too), even.
/// Never scaled up.
pub fn output_size(v: &VideoFacts, max_height: u32) -> (u32, u32) {
    let (par_n, par_d) = v.pixel_aspect_ratio;
    let mut w = v.width as f64;
    if par_n > 0 && par_d > 0 && par_n != par_d {
        w = w * par_n as f64 / par_d as f64;
    }
    let mut h = v.height as f64;
    if v.orientation.swaps_axes() {
        std::mem::swap(&mut w, &mut h);
    }
    let cap = max_height.max(2) as f64;
    let short = w.min(h);
    if short > cap {
        let scale = cap / short;
        w *= scale;
        h *= scale;
    }
    (even(w), even(h))
}

/// The nearest even number; a dimension left as the source has it (a
/// whole number) goes down instead: a decoder's odd last row or column has
/// no chroma of its own, so it is cropped rather than stretched over.
fn even(x: f64) -> u32 {
    let pairs = if x.fract() == 0.0 {
        (x / 2.0).floor()
    } else {
        (x / 2.0).round()
    };
    (pairs as u32 * 2).max(2)
}

/// A capsfilter that lets raw video of one pixel format through.
pub(crate) fn format_filter(format: &str) -> Result<gst::Element> {
    let filter = make("capsfilter")?;
    filter.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", format)
            .build(),
    );
    Ok(filter)
}

/// `videoconvert ! videoflip ! videoscale ! capsfilter`: decoded frames in,
/// upright I420 frames of `size` with square pixels out. Returns the first
/// and last element.
pub(crate) fn add_video_prep(
    pipeline: &gst::Pipeline,
    video: &VideoFacts,
    size: (u32, u32),
) -> Result<(gst::Element, gst::Element)> {
    let orientation = video.orientation;
    let convert = make("videoconvert")?;
    // 0 = one thread per core; the 4K → 1080p path is otherwise single-threaded.
    convert.set_property("n-threads", 0u32);
    let scale = make("videoscale")?;
    scale.set_property("n-threads", 0u32);
    // Rounding, not dithering, when 10-bit becomes 8-bit: x264 spends bits
    // on dither noise and the picture drifts from the source (1-2 dB).
    convert.set_property_from_str("dither", "none");
    if video.colour.is_hdr() {
        // HDR is converted to BT.709: transfer function and primaries
        // remapped, not just relabelled. Only then: with a transfer the
        // stream leaves unsaid, a remap turns the picture black.
        convert.set_property_from_str("gamma-mode", "remap");
        convert.set_property_from_str("primaries-mode", "fast");
    }
    if video.chroma_format.as_deref() == Some("4:2:0") {
        // 4:2:0 in, 4:2:0 out: chroma is taken as it is rather than
        // resampled up and down again, which blurs it (10-bit sources).
        convert.set_property_from_str("chroma-mode", "none");
    }
    let filter = make("capsfilter")?;
    // Limited range, BT.601 or BT.709 (see `colour`): what players expect
    // of H.264, and a known starting point for the still images.
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", size.0 as i32)
        .field("height", size.1 as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .field(
            "colorimetry",
            colour::mp4_colorimetry(&video.colour, video.height),
        )
        .build();
    filter.set_property("caps", &caps);
    let mut chain = vec![convert.clone()];
    if video.colour.full_range == Some(true) {
        // Full range (JPEG, "yuvj" phones) to limited: GStreamer 1.22's
        // videoconvert relabels a YUV → YUV change of range alone instead
        // of converting it, so the picture goes by way of RGB.
        let rgb = format_filter("RGB")?;
        let back = make("videoconvert")?;
        back.set_property("n-threads", 0u32);
        chain.push(rgb);
        chain.push(back);
    }
    if video.interlaced {
        // One progressive frame per interlaced frame (the frame rate is
        // kept), motion adaptive; combing in a browser is never wanted.
        // GStreamer 1.22's deinterlacer works badly on planar I420
        // (greedyh and tomsmocomp garble it, greedyl leaves jagged edges
        // on motion, 34 dB against the source) and well on NV12 (41 dB):
        // it gets NV12, and a converter after the scaler makes I420.
        let nv12 = format_filter("NV12")?;
        let deinterlace = make("deinterlace")?;
        // Frames flagged progressive in a mixed stream (film on DVD) pass.
        deinterlace.set_property_from_str("mode", "auto");
        deinterlace.set_property_from_str("method", "greedyl");
        first_field_only(&deinterlace);
        deinterlace.set_property_from_str("fields", "top");
        chain.push(nv12);
        chain.push(deinterlace);
    }
    // videoflip copies every frame even when it has nothing to do: only
    // an orientation that needs turning gets one.
    if !orientation.is_identity() {
        let flip = make("videoflip")?;
        // Set from the probed orientation, not "auto": a tag that arrives
        // after the caps would otherwise renegotiate the size mid-stream.
        flip.set_property_from_str("video-direction", orientation.flip_method());
        chain.push(flip);
    }
    chain.push(scale);
    if video.interlaced {
        let to_i420 = make("videoconvert")?;
        to_i420.set_property("n-threads", 0u32);
        chain.push(to_i420);
    }
    chain.push(filter.clone());
    add_live_chain(pipeline, &chain.iter().collect::<Vec<_>>())?;
    Ok((convert, filter))
}

/// Makes `deinterlace` build each frame from the field shown first (top
/// for most, bottom for DV), as the decoded caps tell: from the other one
/// its frames come out a frame late, the first one twice.
fn first_field_only(deinterlace: &gst::Element) {
    let Some(pad) = deinterlace.static_pad("sink") else {
        return;
    };
    let weak = deinterlace.downgrade();
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(caps) = event.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let bottom = caps
            .caps()
            .structure(0)
            .and_then(|s| s.get::<&str>("field-order").ok())
            == Some("bottom-field-first");
        if let Some(d) = weak.upgrade() {
            d.set_property_from_str("fields", if bottom { "bottom" } else { "top" });
        }
        gst::PadProbeReturn::Ok
    });
}

/// The `sink` pad of an element, which every element used here has.
pub(crate) fn sink_pad(e: &gst::Element) -> Result<gst::Pad> {
    e.static_pad("sink")
        .ok_or_else(|| MediaError::Pipeline(format!("{} has no sink pad", e.name())))
}

/// Links a pad to a request pad of `element` (a muxer or tee).
pub(crate) fn link_request(pad: &gst::Pad, element: &gst::Element, template: &str) -> Result<()> {
    let target = element.request_pad_simple(template).ok_or_else(|| {
        MediaError::Pipeline(format!("{} gave no {template} pad", element.name()))
    })?;
    pad.link(&target)
        .map_err(|e| MediaError::Pipeline(format!("link to {}: {e:?}", element.name())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{Orientation, VideoFacts};

    fn video(w: u32, h: u32, orientation: Orientation) -> VideoFacts {
        VideoFacts {
            width: w,
            height: h,
            orientation,
            ..VideoFacts::default()
        }
    }

    #[test]
    fn output_size_caps_the_short_side_and_keeps_even_dimensions() {
        assert_eq!(
            output_size(&video(3840, 2160, Orientation::default()), 1080),
            (1920, 1080)
        );
        assert_eq!(
            output_size(&video(1281, 721, Orientation::default()), 1080),
            (1280, 720)
        );
        assert_eq!(
            output_size(&video(321, 241, Orientation::default()), 120),
            (160, 120)
        );
    }

    #[test]
    fn output_size_applies_rotation_and_pixel_aspect() {
        let rotated = Orientation {
            rotation: 90,
            flipped: false,
        };
        assert_eq!(output_size(&video(1920, 1080, rotated), 1080), (1080, 1920));
        assert_eq!(output_size(&video(3840, 2160, rotated), 1080), (1080, 1920));
        assert_eq!(
            output_size(&video(1080, 1920, Orientation::default()), 1080),
            (1080, 1920)
        );
        assert_eq!(
            output_size(&video(720, 1280, Orientation::default()), 1080),
            (720, 1280)
        );
        let mut anamorphic = video(720, 576, Orientation::default());
        anamorphic.pixel_aspect_ratio = (16, 11);
        assert_eq!(output_size(&anamorphic, 1080), (1048, 576));
    }
}
