//! Reaching the frame on screen at a time: a decoding pipeline that seeks
//! to the keyframe before the time and decodes forward, letting through to
//! conversion only the frames still on screen at the time.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;

use super::{sample_time, sampler::EPSILON, Accuracy};
use crate::control::Control;
use crate::error::{MediaError, Result};
use crate::facts::MediaFacts;
use crate::graph;
use crate::runner::{BusEvent, PositionTap, Running};

/// The frame on screen at a time, from decoded frames offered in order:
/// the last one not after it (within the sampler's tolerance).
pub(crate) struct OnScreen {
    at: f64,
    shown: Option<(f64, gst::Sample)>,
}

impl OnScreen {
    pub(crate) fn at(at: f64) -> Self {
        Self { at, shown: None }
    }

    /// Takes the next frame; true once a frame after the time has come, so
    /// the one kept is the answer.
    pub(crate) fn offer(&mut self, time: f64, sample: gst::Sample) -> bool {
        if time > self.at + EPSILON && self.shown.is_some() {
            return true;
        }
        self.shown = Some((time, sample));
        false
    }

    pub(crate) fn frame(self) -> Option<(f64, gst::Sample)> {
        self.shown
    }
}

/// Drops decoded frames that are not on screen at a media time, ahead of
/// the conversion chain: frames decoded on the way from a keyframe to a
/// target are never shown, and converting them (scaling 4K, turning,
/// deinterlacing) would be most of a grab's cost. A frame is dropped only
/// when a later frame not after the time has been seen entering the
/// decoder: durations cannot be trusted (variable frame rate Matroska
/// keeps a nominal one), presentation times can. Decoders hand frames on
/// in presentation order, so a dropped frame is never the one on screen.
#[derive(Clone, Default)]
pub(crate) struct SkipBefore {
    state: Arc<Mutex<Skipping>>,
}

#[derive(Default)]
struct Skipping {
    /// Media time in seconds, when skipping.
    until: Option<f64>,
    /// Presentation times (buffer time) of frames that entered the decoder
    /// and have not come out yet.
    entered: BTreeSet<gst::ClockTime>,
}

impl SkipBefore {
    /// From the next frames on, frames not on screen at `t` seconds of
    /// media time are dropped; `None` lets every frame through.
    pub(crate) fn set(&self, t: Option<f64>) {
        if let Ok(mut s) = self.state.lock() {
            s.until = t;
            s.entered.clear();
        }
    }

    /// Watches compressed frames going into the decoder at `input` and
    /// decoded ones leaving it at `output`; `origin` is the stream time
    /// where the media starts (see `MediaFacts::start`).
    pub(crate) fn attach(&self, input: &gst::Pad, output: &gst::Pad, origin: f64) {
        let state = self.state.clone();
        input.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let pts = info.buffer().and_then(|b| b.pts());
            if let (Some(pts), Ok(mut s)) = (pts, state.lock()) {
                if s.until.is_some() {
                    s.entered.insert(pts);
                }
            }
            gst::PadProbeReturn::Ok
        });
        let state = self.state.clone();
        output.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
                return gst::PadProbeReturn::Ok;
            };
            let Ok(mut s) = state.lock() else {
                return gst::PadProbeReturn::Ok;
            };
            // Frames up to this one are out of the decoder.
            let later = s
                .entered
                .split_off(&(pts + gst::ClockTime::from_nseconds(1)));
            s.entered = later;
            let Some(until) = s.until else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(limit) = buffer_time_at(pad, origin + until + EPSILON) else {
                return gst::PadProbeReturn::Ok;
            };
            match s.entered.range(..=limit).next() {
                // Handled, not Drop: the frame is consumed here. gstreamer-rs
                // 0.25 owns a dropped buffer already, and GStreamer 1.22 then
                // unrefs the emptied slot on a sink pad (a critical each).
                Some(_) => gst::PadProbeReturn::Handled,
                None => gst::PadProbeReturn::Ok,
            }
        });
    }
}

/// The buffer time at `stream_time` seconds in the segment `pad` is in.
fn buffer_time_at(pad: &gst::Pad, stream_time: f64) -> Option<gst::ClockTime> {
    let event = pad.sticky_event::<gst::event::Segment>(0)?;
    let segment = event.segment().downcast_ref::<gst::ClockTime>()?.clone();
    let at = gst::ClockTime::from_nseconds((stream_time.max(0.0) * 1e9) as u64);
    match segment.position_from_stream_time_full(at)? {
        gst::Signed::Positive(t) => Some(t),
        gst::Signed::Negative(_) => Some(gst::ClockTime::ZERO),
    }
}

/// `filesrc ! parsebin` → decoder → upright frames of `size` → `sink`,
/// with a tap on the decoded frames' time and a `SkipBefore` in front of
/// the conversion.
pub(crate) fn decode_to_sink(
    input: &Path,
    facts: &MediaFacts,
    size: (u32, u32),
    sink: &gst_app::AppSink,
) -> Result<(gst::Pipeline, PositionTap, SkipBefore)> {
    let pipeline = gst::Pipeline::new();
    pipeline.add(sink)?;
    let (prep_head, prep_tail) = graph::add_video_prep(&pipeline, &facts.video, size)?;
    prep_tail.link(sink)?;
    let tap = PositionTap::default();
    if let Some(pad) = prep_tail.static_pad("src") {
        tap.attach(&pad);
    }
    let skip = SkipBefore::default();
    let (watch, origin) = (skip.clone(), facts.start);
    graph::add_source(
        &pipeline,
        input,
        graph::Picture::of(&facts.video),
        Box::new(move |pipeline, pad| {
            if let Some(decoded) = prep_head.static_pad("sink") {
                watch.attach(pad, &decoded, origin);
            }
            graph::decode_into(pipeline, pad, &prep_head)
        }),
        None,
    )?;
    Ok((pipeline, tap, skip))
}

/// A pipeline that seeks to a time and hands back the frame on screen
/// there (the model is gstreamer-rs's thumbnail example). It seeks to the
/// keyframe at or before the time and decodes forward, frames that end
/// before the time dropped ahead of conversion. Not an accurate seek: the
/// decoder would clip the frame that straddles the position to start
/// there (its own time lost), and drop it when its duration is unknown.
pub(crate) struct Grabber<'c> {
    running: Running<'c>,
    sink: gst_app::AppSink,
    tap: PositionTap,
    skip: SkipBefore,
    origin: f64,
    /// How far past a target the first seek goes: three frames.
    lead: f64,
    playing: bool,
}

/// What one seek found.
enum Pulled {
    Frame((f64, gst::Sample)),
    /// The first frame was after the time: the seek landed too late.
    Late,
    /// No frame reached the sink.
    Nothing,
}

impl<'c> Grabber<'c> {
    pub(crate) fn open(
        input: &Path,
        facts: &MediaFacts,
        size: (u32, u32),
        ctl: &'c Control,
    ) -> Result<Self> {
        // A short queue: once the frame is found, decoding stops here
        // until the next seek flushes it.
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(2)
            .build();
        let (pipeline, _, skip) = decode_to_sink(input, facts, size, &sink)?;
        let tap = PositionTap::default();
        let mut running = Running::start(
            pipeline,
            gst::State::Paused,
            ctl,
            tap.clone(),
            facts.duration(),
        )?;
        loop {
            match running.pop(Duration::from_millis(50))? {
                Some(BusEvent::AsyncDone) | Some(BusEvent::Eos) => break,
                None => running.tick(None)?,
            }
        }
        Ok(Self {
            running,
            sink,
            tap,
            skip,
            origin: facts.start,
            lead: 3.0 / facts.video.frame_rate.filter(|f| *f >= 1.0).unwrap_or(25.0),
            playing: false,
        })
    }

    /// The frame on screen at `t` seconds (exact), or the keyframe at or
    /// before it, with its media time; the last frame when `t` is past it,
    /// `None` when the seek finds no frame at all.
    pub(crate) fn grab(
        &mut self,
        t: f64,
        accuracy: Accuracy,
    ) -> Result<Option<(f64, gst::Sample)>> {
        // First a few frames past `t`: with B-frames, qtdemux takes a
        // keyframe at `t` for one after it and lands a whole GOP early,
        // which doubled the decoding whenever targets fell on keyframes
        // (fixed-GOP cameras, synthetic media).
        if let Pulled::Frame(found) = self.seek_and_pull(t, t + self.lead, accuracy, false)? {
            return Ok(Some(found));
        }
        // Landed after `t`: from the keyframe before it.
        match self.seek_and_pull(t, t + EPSILON, accuracy, true)? {
            Pulled::Frame(found) => Ok(Some(found)),
            _ => Ok(None),
        }
    }

    /// Seeks to the keyframe at or before `seek_to` and pulls the frame
    /// `accuracy` wants at `t`; a first frame after `t` is `Late` unless
    /// `late_ok`.
    fn seek_and_pull(
        &mut self,
        t: f64,
        seek_to: f64,
        accuracy: Accuracy,
        late_ok: bool,
    ) -> Result<Pulled> {
        let exact = accuracy == Accuracy::Exact;
        self.skip.set(exact.then_some(t));
        let target = Duration::from_secs_f64(self.origin + seek_to);
        self.running
            .pipeline()
            .seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT | gst::SeekFlags::SNAP_BEFORE,
                gst::ClockTime::from_nseconds(target.as_nanos() as u64),
            )
            .map_err(|e| MediaError::Corrupt(format!("seek to {t:.3} s failed: {e}")))?;
        if !self.playing {
            self.running.pipeline().set_state(gst::State::Playing)?;
            self.playing = true;
        }
        // Progress counts seek targets: media time advances with each one.
        let position = Duration::from_secs_f64(t);
        self.tap.set(position);
        let mut shown = OnScreen::at(t);
        let mut first = true;
        loop {
            while let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::ZERO) {
                let Some(time) = sample_time(&sample, self.origin) else {
                    continue;
                };
                if first && !late_ok && time > t + EPSILON {
                    return Ok(Pulled::Late);
                }
                first = false;
                if accuracy == Accuracy::Keyframe {
                    return Ok(Pulled::Frame((time, sample)));
                }
                if shown.offer(time, sample) {
                    return Ok(shown.frame().map_or(Pulled::Nothing, Pulled::Frame));
                }
            }
            if self.sink.is_eos() {
                return Ok(shown.frame().map_or(Pulled::Nothing, Pulled::Frame));
            }
            if self.running.pop(Duration::from_millis(20))? == Some(BusEvent::Eos) {
                continue;
            }
            self.running.tick(Some(position))?;
        }
    }

    /// Reports the whole job done (progress 100 %).
    pub(crate) fn report_done(&self) {
        self.running.report_done();
    }
}
