//! How a caller steers a running operation: a cancel token, a progress
//! channel, a stall timeout, a wall-clock cap and the media limits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::limits::MediaLimits;

/// A cheap, cloneable flag that asks an operation to stop. Operations check
/// it at least every 50 ms, so a cancel takes effect well within 2 s.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// A token that fires when `flag` is set, so a caller's own cancel flag
    /// can drive an operation without a bridge thread.
    pub fn from_flag(flag: Arc<AtomicBool>) -> Self {
        Self(flag)
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One progress report. Sent at most every 250 ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Progress {
    /// Media time processed so far, in seconds.
    pub position: f64,
    /// Media duration in seconds, when known.
    pub duration: Option<f64>,
    /// 0 to 100.
    pub percent: f64,
    /// Media seconds processed per wall-clock second.
    pub speed: f64,
    /// Seconds until done at the current speed, when it can be told.
    pub eta_seconds: Option<f64>,
}

impl Progress {
    /// Derives percent, speed and ETA from a position after `elapsed`.
    pub fn at(position: Duration, duration: Option<Duration>, elapsed: Duration) -> Self {
        let pos = position.as_secs_f64();
        let dur = duration.map(|d| d.as_secs_f64()).filter(|d| *d > 0.0);
        let wall = elapsed.as_secs_f64();
        let speed = if wall > 0.0 { pos / wall } else { 0.0 };
        let percent = dur.map_or(0.0, |d| (pos / d * 100.0).clamp(0.0, 100.0));
        let eta_seconds = match dur {
            Some(d) if speed > 0.0 => Some(((d - pos) / speed).max(0.0)),
            _ => None,
        };
        Self {
            position: pos,
            duration: dur,
            percent,
            speed,
            eta_seconds,
        }
    }
}

/// Latest-wins progress channel: a slow reader sees the newest report and
/// never holds the pipeline back.
pub type ProgressTx = tokio::sync::watch::Sender<Progress>;
pub type ProgressRx = tokio::sync::watch::Receiver<Progress>;

/// Makes a progress channel.
pub fn progress_channel() -> (ProgressTx, ProgressRx) {
    tokio::sync::watch::channel(Progress::default())
}

/// Everything an operation needs from its caller besides the spec.
#[derive(Debug)]
pub struct Control {
    pub cancel: CancelToken,
    pub progress: Option<ProgressTx>,
    /// Fail with `Stalled` when media time does not advance for this long.
    pub stall_timeout: Duration,
    /// Fail with `TimedOut` after this much wall-clock time, if set.
    pub deadline: Option<Duration>,
    /// What the media may be; checked again while decoding.
    pub limits: MediaLimits,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            cancel: CancelToken::new(),
            progress: None,
            stall_timeout: Duration::from_secs(60),
            deadline: None,
            limits: MediaLimits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_derives_percent_speed_and_eta() {
        let p = Progress::at(
            Duration::from_secs(30),
            Some(Duration::from_secs(60)),
            Duration::from_secs(10),
        );
        assert_eq!(p.percent, 50.0);
        assert_eq!(p.speed, 3.0);
        assert_eq!(p.eta_seconds, Some(10.0));
    }

    #[test]
    fn progress_without_duration_has_no_percent_or_eta() {
        let p = Progress::at(Duration::from_secs(5), None, Duration::from_secs(1));
        assert_eq!(p.percent, 0.0);
        assert_eq!(p.eta_seconds, None);
        assert_eq!(p.speed, 5.0);
    }

    #[test]
    fn cancel_is_seen_by_clones() {
        let t = CancelToken::new();
        let c = t.clone();
        t.cancel();
        assert!(c.is_cancelled());
    }
}
