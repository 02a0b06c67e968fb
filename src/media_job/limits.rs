//! What one worker process may use, from `[limits]`: resident memory, and
//! a wall clock that grows with the source's duration above a floor. The
//! memory limit is enforced twice: the server samples the worker's
//! resident set and kills it over the limit (a clean `limit-exceeded`),
//! and the worker's own `RLIMIT_DATA`, set higher, stops a spike between
//! two samples before it can hurt the machine.

use std::time::Duration;

use super::watch::Budget;
use crate::config::Limits;

/// How far above the resident limit the worker's `RLIMIT_DATA` sits: data
/// mappings count memory allocated but not yet touched (thread stacks,
/// malloc arenas, frame pools: measured 1.3 to 2 times the resident set
/// for transcodes from 320x240 to 4K, plus about 100 MiB of GStreamer
/// itself), so at the same value the rlimit would fail healthy jobs, and
/// fail them as broken pipelines, before the sampled limit speaks.
const DATA_LIMIT_FACTOR: u64 = 2;
const DATA_LIMIT_SLACK: u64 = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerLimits {
    /// Resident memory one worker may use, in bytes.
    pub memory_bytes: u64,
    /// Least wall-clock time any job is given.
    pub timeout_floor: Duration,
    /// Wall-clock seconds allowed per second of source.
    pub timeout_factor: f64,
    /// The largest file a worker may write (an MP4, a ZIP), in bytes.
    pub output_bytes: u64,
}

impl WorkerLimits {
    pub fn from_config(limits: &Limits) -> Self {
        Self {
            memory_bytes: limits.worker_memory_bytes,
            timeout_floor: Duration::from_secs(limits.worker_timeout_floor_seconds),
            timeout_factor: limits.worker_timeout_factor,
            output_bytes: limits.max_output_bytes,
        }
    }

    /// The budget of a job on a source of `media_seconds` (probes and
    /// verifications pass `None` and get the floor).
    pub fn budget(&self, media_seconds: Option<f64>) -> Budget {
        let scaled = media_seconds
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| (s * self.timeout_factor).min(f64::from(u32::MAX)))
            .filter(|s| *s >= 0.0)
            .map_or(Duration::ZERO, Duration::from_secs_f64);
        Budget {
            memory: self.memory_bytes,
            wall_clock: scaled.max(self.timeout_floor),
            output: self.output_bytes,
        }
    }

    /// The worker's `RLIMIT_DATA`.
    pub fn data_limit(&self) -> u64 {
        self.memory_bytes
            .saturating_mul(DATA_LIMIT_FACTOR)
            .saturating_add(DATA_LIMIT_SLACK)
    }
}

impl Default for WorkerLimits {
    fn default() -> Self {
        Self::from_config(&Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_grows_with_the_source_above_the_floor() {
        let l = WorkerLimits {
            memory_bytes: 1 << 30,
            timeout_floor: Duration::from_secs(300),
            timeout_factor: 10.0,
            output_bytes: 1 << 30,
        };
        assert_eq!(l.budget(None).wall_clock, Duration::from_secs(300));
        assert_eq!(l.budget(Some(5.0)).wall_clock, Duration::from_secs(300));
        assert_eq!(l.budget(Some(600.0)).wall_clock, Duration::from_secs(6000));
        assert_eq!(
            l.budget(Some(f64::NAN)).wall_clock,
            Duration::from_secs(300)
        );
        assert_eq!(
            l.budget(Some(1e300)).wall_clock,
            Duration::from_secs(u32::MAX.into())
        );
        assert_eq!(l.data_limit(), (2 << 30) + (256 << 20));
    }
}
