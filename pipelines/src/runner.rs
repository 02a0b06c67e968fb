//! Runs one GStreamer pipeline under a [`Control`]: polls its bus, turns error
//! messages into [`MediaError`]s, reports progress, watches for stalls,
//! cancel and the deadline, and always takes the pipeline to `Null`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;

use crate::control::{Control, Progress};
use crate::error::{MediaError, Result};

/// How often the bus is polled: the bound on how late a cancel is noticed.
const POLL: Duration = Duration::from_millis(50);
/// Progress reports are sent at most this often.
const REPORT_EVERY: Duration = Duration::from_millis(250);
/// How long `Null` may take before the pipeline is abandoned to its thread.
const NULL_TIMEOUT: Duration = Duration::from_secs(5);
/// The same wait after a cancel.
const CANCEL_NULL_TIMEOUT: Duration = Duration::from_millis(1200);

/// The furthest media time seen at the points of a pipeline it is attached
/// to, shared with pad probes. With every stream attached, progress goes on
/// while any stream does: a video that ends before its audio is no stall.
/// Stored as nanoseconds + 1; 0 means nothing seen yet.
#[derive(Debug, Clone, Default)]
pub(crate) struct PositionTap(Arc<AtomicU64>);

impl PositionTap {
    pub(crate) fn set(&self, t: Duration) {
        let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX - 1);
        self.0.fetch_max(ns + 1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }

    /// Records the stream time of every buffer that passes `pad`.
    pub(crate) fn attach(&self, pad: &gst::Pad) {
        let tap = self.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(t) = info.buffer().and_then(|b| stream_time(pad, b.pts())) {
                tap.set(t);
            }
            gst::PadProbeReturn::Ok
        });
    }
}

/// The stream time (0 = start of the media) of `pts` on `pad`, using the
/// pad's current segment; container start offsets and edit lists are folded in.
pub(crate) fn stream_time(pad: &gst::Pad, pts: Option<gst::ClockTime>) -> Option<Duration> {
    let pts = pts?;
    let seg = pad.sticky_event::<gst::event::Segment>(0)?;
    let seg = seg.segment().downcast_ref::<gst::ClockTime>()?.clone();
    segment_stream_time(&seg, pts)
}

/// Like `to_stream_time`, but a frame that starts before the segment (the
/// one on screen at an accurate seek's position) still gets its time.
pub(crate) fn segment_stream_time(
    seg: &gst::FormattedSegment<gst::ClockTime>,
    pts: gst::ClockTime,
) -> Option<Duration> {
    match seg.to_stream_time_full(pts)? {
        gst::Signed::Positive(t) => Some(Duration::from_nanos(t.nseconds())),
        gst::Signed::Negative(_) => Some(Duration::ZERO),
    }
}

/// What the bus said, when it said something the caller acts on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BusEvent {
    Eos,
    AsyncDone,
}

/// A pipeline being run. Dropping it takes the pipeline to `Null`.
pub(crate) struct Running<'c> {
    pipeline: gst::Pipeline,
    bus: gst::Bus,
    ctl: &'c Control,
    tap: PositionTap,
    duration: Option<Duration>,
    started: Instant,
    last_report: Option<Instant>,
    last_position: Option<Duration>,
    last_advance: Instant,
}

impl std::fmt::Debug for Running<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("pipeline", &self.pipeline.name())
            .finish_non_exhaustive()
    }
}

impl<'c> Running<'c> {
    /// Takes `pipeline` to `state` (Playing, or Paused to preroll).
    pub(crate) fn start(
        pipeline: gst::Pipeline,
        state: gst::State,
        ctl: &'c Control,
        tap: PositionTap,
        duration: Option<Duration>,
    ) -> Result<Self> {
        let bus = pipeline
            .bus()
            .ok_or_else(|| MediaError::Pipeline("pipeline has no bus".into()))?;
        // Every parser and decoder that joins the pipeline has the pictures
        // it announces held to the limits.
        crate::limits::watch_new_elements(&pipeline, ctl.limits);
        let now = Instant::now();
        let running = Self {
            pipeline,
            bus,
            ctl,
            tap,
            duration,
            started: now,
            last_report: None,
            last_position: None,
            last_advance: now,
        };
        if let Err(e) = running.pipeline.set_state(state) {
            // The bus usually holds the real reason (a missing file, a bad header).
            running.pop(Duration::ZERO)?;
            return Err(e.into());
        }
        Ok(running)
    }

    pub(crate) fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// Waits up to `timeout` for one bus message; errors become `Err`.
    pub(crate) fn pop(&self, timeout: Duration) -> Result<Option<BusEvent>> {
        let timeout = gst::ClockTime::from_nseconds(timeout.as_nanos() as u64);
        let Some(msg) = self.bus.timed_pop(timeout) else {
            return Ok(None);
        };
        match msg.view() {
            gst::MessageView::Eos(_) => Ok(Some(BusEvent::Eos)),
            gst::MessageView::AsyncDone(_) => Ok(Some(BusEvent::AsyncDone)),
            gst::MessageView::Error(err) => {
                let src = err.src().map(|s| s.path_string().to_string());
                tracing::debug!(src, error = %err.error(), debug = ?err.debug(), "pipeline error");
                let limit = err
                    .details()
                    .filter(|d| d.name() == crate::limits::LIMIT_DETAILS)
                    .map(|d| {
                        d.get::<&str>(crate::limits::LIMIT_FIELD)
                            .ok()
                            .and_then(crate::limits::Limit::from_key)
                            // Only pictures are watched on the bus today.
                            .unwrap_or(crate::limits::Limit::Pixels)
                    });
                if let Some(limit) = limit {
                    return Err(MediaError::LimitExceeded {
                        limit,
                        why: err.error().message().to_string(),
                    });
                }
                Err(MediaError::from_gst(&err.error(), err.debug().as_deref()))
            }
            gst::MessageView::Warning(w) => {
                tracing::debug!(error = %w.error(), debug = ?w.debug(), "pipeline warning");
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Checks cancel, deadline and stall; sends progress when due. Uses the
    /// position tap unless the caller knows better (`position`).
    pub(crate) fn tick(&mut self, position: Option<Duration>) -> Result<()> {
        if self.ctl.cancel.is_cancelled() {
            return Err(MediaError::Cancelled);
        }
        let now = Instant::now();
        if let Some(cap) = self.ctl.deadline {
            if now.duration_since(self.started) > cap {
                return Err(MediaError::TimedOut(cap));
            }
        }
        let position = position.or_else(|| self.tap.get());
        if let Some(p) = position {
            // A file may declare an hour and hold a day.
            self.ctl.limits.check_media_time(p.as_secs_f64())?;
        }
        if position > self.last_position {
            self.last_position = position;
            self.last_advance = now;
        } else if now.duration_since(self.last_advance) > self.ctl.stall_timeout {
            return Err(MediaError::Stalled(self.ctl.stall_timeout));
        }
        let due = self
            .last_report
            .is_none_or(|t| now.duration_since(t) >= REPORT_EVERY);
        if due {
            if let (Some(tx), Some(pos)) = (&self.ctl.progress, self.last_position) {
                tx.send_replace(Progress::at(pos, self.duration, now - self.started));
                self.last_report = Some(now);
            }
        }
        Ok(())
    }

    /// Polls until end of stream, failing on error, cancel, stall or deadline.
    pub(crate) fn run_to_eos(&mut self) -> Result<()> {
        loop {
            if self.pop(POLL)? == Some(BusEvent::Eos) {
                // A short file decodes between two ticks: the media time
                // it reached is held to the limit all the same.
                if let Some(p) = self.tap.get() {
                    self.ctl.limits.check_media_time(p.as_secs_f64())?;
                }
                return Ok(());
            }
            self.tick(None)?;
        }
    }

    /// Polls until `done` returns a value or the stream ends (`Ok(None)`).
    pub(crate) fn wait_for<T>(
        &mut self,
        position: Option<Duration>,
        mut done: impl FnMut() -> Option<T>,
    ) -> Result<Option<T>> {
        loop {
            if let Some(v) = done() {
                return Ok(Some(v));
            }
            if self.pop(POLL)? == Some(BusEvent::Eos) {
                return Ok(done());
            }
            self.tick(position)?;
        }
    }

    /// Sends a final 100 % report once the work is complete.
    pub(crate) fn report_done(&self) {
        if let Some(tx) = &self.ctl.progress {
            let end = self.duration.or(self.last_position).unwrap_or_default();
            let mut p = Progress::at(end, self.duration, self.started.elapsed());
            p.percent = 100.0;
            p.eta_seconds = Some(0.0);
            tx.send_replace(p);
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        // An encoder torn down mid-stream finishes the frames its threads
        // hold first (seconds with x264's slow presets); a cancelled caller
        // was promised a stop within 2 s, so it waits less and leaves the
        // rest to the shutdown thread.
        let wait = match self.ctl.cancel.is_cancelled() {
            true => CANCEL_NULL_TIMEOUT,
            false => NULL_TIMEOUT,
        };
        shut_down_within(&self.pipeline, wait);
    }
}

/// Takes a pipeline to `Null`, giving up after [`NULL_TIMEOUT`] so that an
/// element stuck in a blocking call cannot hang the caller; the stuck thread
/// then finishes the transition on its own.
pub(crate) fn shut_down(pipeline: &gst::Pipeline) {
    shut_down_within(pipeline, NULL_TIMEOUT);
}

fn shut_down_within(pipeline: &gst::Pipeline, wait: Duration) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let p = pipeline.clone();
    let spawned = std::thread::Builder::new()
        .name("vidmill-null".into())
        .spawn(move || {
            let _ = p.set_state(gst::State::Null);
            let _ = tx.send(());
        });
    match spawned {
        Ok(_) => {
            if rx.recv_timeout(wait).is_err() && wait == NULL_TIMEOUT {
                tracing::error!(pipeline = %pipeline.name(), "pipeline did not reach Null in time; abandoning it");
            }
        }
        Err(_) => {
            let _ = pipeline.set_state(gst::State::Null);
        }
    }
}
