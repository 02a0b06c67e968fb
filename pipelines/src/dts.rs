//! Decode timestamps for video whose container stores none (Matroska,
//! WebM, AVI). MP4 needs them: without them `mp4mux` takes presentation
//! times as decode times, and with B-frames those run out of order, so the
//! sample durations it derives add up to nearly twice the real length.
//!
//! A first pass over the parsed (not decoded) stream collects every
//! packet's presentation time in decode order; decode time `i` is then the
//! `i`-th smallest presentation time, moved back by the stream's reorder
//! delay so that no frame is decoded after it is shown. That is what an
//! encoder would have written. During the remux a pad probe stamps each
//! packet with its decode time. Since the first decode times fall before
//! zero, every timestamp and the segment are moved forward together by a
//! constant, which changes no running or stream time (x264enc does the
//! same), and `mp4mux` writes the delay as an edit list.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gst::prelude::*;

use crate::control::Control;
use crate::error::{MediaError, Result};
use crate::graph;
use crate::runner::{PositionTap, Running};

/// What every timestamp is moved forward by (x264enc uses the same): far
/// more than any reorder delay.
const SHIFT: gst::ClockTime = gst::ClockTime::from_seconds(1000 * 3600);

/// Containers whose demuxers give every video packet its decode time.
const STORE_DTS: &[&str] = &["mp4", "quicktime", "mpegts", "flv", "mpeg-ps"];

/// Whether a remux from `container` needs decode times made up.
pub(crate) fn needed_for(container: &str) -> bool {
    !STORE_DTS.contains(&container)
}

/// Decode times for every video packet of `input`, in decode order, or
/// `None` when the demuxer gives them itself.
pub(crate) fn plan(input: &Path, ctl: &Control) -> Result<Option<Arc<Vec<u64>>>> {
    let seen: Arc<Mutex<Scan>> = Arc::default();
    let pipeline = gst::Pipeline::new();
    let tap = PositionTap::default();
    let (scan, probe_tap) = (seen.clone(), tap.clone());
    // Only H.264 is remuxed: the picture is never a still-image stream.
    graph::add_source(
        &pipeline,
        input,
        graph::Picture::Moving,
        Box::new(move |pipeline, pad| {
            let sink = graph::make("fakesink")?;
            sink.set_property("sync", false);
            pipeline.add(&sink)?;
            sink.sync_state_with_parent()?;
            let scan = scan.clone();
            probe_tap.attach(pad);
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let (Some(buf), Ok(mut s)) = (info.buffer(), scan.lock()) {
                    s.any_dts |= buf.dts().is_some();
                    s.pts.push(buf.pts().map(|t| t.nseconds()));
                }
                gst::PadProbeReturn::Ok
            });
            pad.link(&graph::sink_pad(&sink)?)
                .map_err(|e| MediaError::Pipeline(format!("link scan sink: {e:?}")))?;
            Ok(())
        }),
        None,
    )?;
    let scan_ctl = Control {
        cancel: ctl.cancel.clone(),
        progress: None,
        stall_timeout: ctl.stall_timeout,
        deadline: ctl.deadline,
        limits: ctl.limits,
    };
    let mut running = Running::start(pipeline, gst::State::Playing, &scan_ctl, tap, None)?;
    running.run_to_eos()?;
    drop(running);
    let s = seen
        .lock()
        .map_err(|_| MediaError::Pipeline("timestamp scan poisoned".into()))?;
    if s.any_dts {
        return Ok(None);
    }
    Ok(Some(Arc::new(decode_times(&s.pts))))
}

#[derive(Debug, Default)]
struct Scan {
    pts: Vec<Option<u64>>,
    any_dts: bool,
}

/// Decode times (shifted by [`SHIFT`]) for presentation times in decode
/// order. A packet without a presentation time gets the previous decode
/// time's successor, so decode times never go back.
fn decode_times(pts: &[Option<u64>]) -> Vec<u64> {
    let mut sorted: Vec<u64> = pts.iter().flatten().copied().collect();
    sorted.sort_unstable();
    // The reorder delay: how far the i-th smallest presentation time runs
    // ahead of the i-th packet's own, at worst.
    let delay = pts
        .iter()
        .flatten()
        .zip(&sorted)
        .map(|(p, s)| s.saturating_sub(*p))
        .max()
        .unwrap_or(0);
    let shift = SHIFT.nseconds();
    let mut out = Vec::with_capacity(pts.len());
    let mut k = 0usize;
    let mut last: Option<u64> = None;
    for p in pts {
        let dts = match p {
            Some(_) => {
                let d = (sorted[k] + shift).saturating_sub(delay);
                k += 1;
                d
            }
            None => last.map_or(shift.saturating_sub(delay), |l| l + 1),
        };
        let dts = last.map_or(dts, |l| dts.max(l + 1));
        out.push(dts);
        last = Some(dts);
    }
    out
}

/// Stamps each buffer leaving `pad` with its decode time from `plan` and
/// moves presentation times and the segment forward by [`SHIFT`]. Add it
/// before any other probe that reads times on the same pad.
pub(crate) fn stamp(pad: &gst::Pad, plan: Arc<Vec<u64>>) {
    let next = AtomicUsize::new(0);
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            match &mut info.data {
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let b = buffer.make_mut();
                    let pts = b.pts().map(|p| p + SHIFT);
                    b.set_pts(pts);
                    // Past the plan (the scan saw fewer packets, which a
                    // deterministic demuxer does not do): fall back on the
                    // presentation time.
                    let dts = plan
                        .get(i)
                        .map(|d| gst::ClockTime::from_nseconds(*d))
                        .or(pts);
                    b.set_dts(dts);
                }
                Some(gst::PadProbeData::Event(event)) => {
                    if let gst::EventView::Segment(seg) = event.view() {
                        if let Some(shifted) = shift_segment(seg.segment()) {
                            *event = gst::event::Segment::builder(&shifted)
                                .seqnum(event.seqnum())
                                .build();
                        }
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

fn shift_segment(seg: &gst::Segment) -> Option<gst::FormattedSegment<gst::ClockTime>> {
    let mut seg = seg.downcast_ref::<gst::ClockTime>()?.clone();
    let start = seg.start().unwrap_or(gst::ClockTime::ZERO);
    if seg.time().is_none() {
        seg.set_time(start);
    }
    seg.set_start(start + SHIFT);
    if let Some(stop) = seg.stop() {
        seg.set_stop(stop + SHIFT);
    }
    if let Some(position) = seg.position() {
        seg.set_position(position + SHIFT);
    }
    Some(seg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_times_follow_the_sorted_presentation_times() {
        // I P B B P B B in decode order; display order 0 1 2 3 4 5 6.
        let pts: Vec<Option<u64>> = [0, 3, 1, 2, 6, 4, 5].iter().map(|p| Some(p * 10)).collect();
        let dts = decode_times(&pts);
        let shift = SHIFT.nseconds();
        let rel: Vec<i64> = dts.iter().map(|d| *d as i64 - shift as i64).collect();
        assert_eq!(rel, vec![-10, 0, 10, 20, 30, 40, 50]);
        for (d, p) in dts.iter().zip(&pts) {
            assert!(*d <= p.expect("pts") + shift, "decoded before shown");
        }
    }

    #[test]
    fn no_reordering_means_decode_time_equals_presentation_time() {
        let pts: Vec<Option<u64>> = (0..5).map(|p| Some(p * 40)).collect();
        let shift = SHIFT.nseconds();
        assert_eq!(
            decode_times(&pts),
            (0..5).map(|p| p * 40 + shift).collect::<Vec<_>>()
        );
    }

    #[test]
    fn missing_presentation_times_keep_decode_times_rising() {
        let pts = vec![Some(0), None, Some(20)];
        let dts = decode_times(&pts);
        assert!(dts[0] < dts[1] && dts[1] < dts[2]);
    }
}
