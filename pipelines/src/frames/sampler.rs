//! Which decoded frame answers which requested time. Pure logic: frames come
//! in presentation order with their stream times; target `k` (at
//! `k * every`) gets the frame on screen at that time, i.e. the last frame
//! whose time is not after it.

use std::ops::Range;

/// Container time bases round timestamps (a frame meant for 1.0 s may say
/// 1.0000004 s, or 1.0005 s in Matroska's milliseconds); a frame this
/// close after a target still counts as on screen. Less than the 1 ms by
/// which NTSC's frame 30 (1.001 s) misses 1.0 s.
pub(crate) const EPSILON: f64 = 0.0005;

/// One decoded frame chosen for one or more targets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pick<T> {
    pub frame: T,
    /// The frame's stream time in seconds.
    pub time: f64,
    /// Zero-based target indices this frame answers: a range, not a list,
    /// since a jump in time (or a declared end far past the last frame)
    /// may span any number of them.
    pub targets: Range<u64>,
}

#[derive(Debug)]
pub(crate) struct Sampler<T> {
    every: f64,
    end: Option<f64>,
    next: u64,
    held: Option<(f64, T)>,
}

impl<T: Clone> Sampler<T> {
    /// Targets at `0, every, 2·every, …` strictly before `end` (or, when the
    /// end is unknown, up to the last frame).
    pub(crate) fn new(every: f64, end: Option<f64>) -> Self {
        Self {
            every,
            end,
            next: 0,
            held: None,
        }
    }

    pub(crate) fn target(&self, k: u64) -> f64 {
        k as f64 * self.every
    }

    /// How many targets there are: all of them before the end, or
    /// without end as many as frames reach.
    fn due_count(&self) -> u64 {
        self.end
            .map_or(u64::MAX, |end| target_count(self.every, end))
    }

    /// The index of the first target at or after `t` (with `inclusive`,
    /// the first one after it): computed, not counted, so that any span
    /// of time costs the same.
    fn first_from(&self, t: f64, inclusive: bool) -> u64 {
        let before = |k: u64| match inclusive {
            true => self.target(k) <= t,
            false => self.target(k) < t,
        };
        if t.is_nan() || t < 0.0 {
            return 0;
        }
        // Far past any real end; keeps the guess inside u64.
        let mut k = (t / self.every).ceil().min(1e18) as u64;
        while k > 0 && !before(k - 1) {
            k -= 1;
        }
        while before(k) {
            k += 1;
        }
        k
    }

    /// Takes the next frame; returns the frame it displaces when that one was
    /// on screen at one or more targets.
    pub(crate) fn push(&mut self, time: f64, frame: T) -> Option<Pick<T>> {
        let stop = self
            .first_from(time - EPSILON, false)
            .min(self.due_count())
            .max(self.next);
        let targets = self.next..stop;
        self.next = stop;
        let pick = match (targets.is_empty(), self.held.take()) {
            (true, _) => None,
            (false, Some((held_time, held))) => Some(Pick {
                frame: held,
                time: held_time,
                targets,
            }),
            // Targets before the first frame: the first frame is what shows.
            (false, None) => Some(Pick {
                frame: frame.clone(),
                time,
                targets,
            }),
        };
        self.held = Some((time, frame));
        pick
    }

    /// At end of stream: the last frame answers every remaining target.
    pub(crate) fn finish(&mut self) -> Option<Pick<T>> {
        let (time, frame) = self.held.take()?;
        let stop = match self.end {
            Some(_) => self.due_count(),
            None => self.first_from(time + EPSILON, true),
        }
        .max(self.next);
        let targets = self.next..stop;
        self.next = stop;
        (!targets.is_empty()).then_some(Pick {
            frame,
            time,
            targets,
        })
    }
}

/// How many targets `every` gives before `end`.
pub(crate) fn target_count(every: f64, end: f64) -> u64 {
    let mut n = (end / every).ceil().max(1.0) as u64;
    // Guard the float division: target n-1 must be before the end.
    while n > 1 && (n - 1) as f64 * every >= end {
        n -= 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(every: f64, end: Option<f64>, times: &[f64]) -> Vec<(f64, Vec<u64>)> {
        let mut s = Sampler::new(every, end);
        let mut out: Vec<_> = times
            .iter()
            .filter_map(|t| s.push(*t, *t))
            .map(|p| (p.time, p.targets.collect()))
            .collect();
        out.extend(s.finish().map(|p| (p.time, p.targets.collect())));
        out
    }

    fn frames(fps: f64, seconds: f64) -> Vec<f64> {
        (0..(fps * seconds) as u64)
            .map(|i| i as f64 / fps)
            .collect()
    }

    #[test]
    fn each_target_gets_the_frame_on_screen() {
        let picks = run(1.0, Some(3.0), &frames(10.0, 3.0));
        assert_eq!(picks, vec![(0.0, vec![0]), (1.0, vec![1]), (2.0, vec![2])]);
    }

    #[test]
    fn a_target_between_frames_gets_the_earlier_frame() {
        // 4 fps, targets every 0.3 s: 0.3 shows the frame at 0.25.
        let picks = run(0.3, Some(1.0), &frames(4.0, 1.0));
        assert_eq!(
            picks,
            vec![
                (0.0, vec![0]),
                (0.25, vec![1]),
                (0.5, vec![2]),
                (0.75, vec![3])
            ]
        );
    }

    #[test]
    fn rounded_timestamps_still_match_their_target() {
        let picks = run(1.0, Some(2.0), &[0.0, 0.5, 1.000_000_4, 1.5]);
        assert_eq!(picks, vec![(0.0, vec![0]), (1.000_000_4, vec![1])]);
        // NTSC: frame 30 is at 1.001 s, after 1.0 s; frame 29 is on screen.
        let ntsc: Vec<f64> = (0..60).map(|i| i as f64 * 1.001 / 30.0).collect();
        let picks = run(1.0, Some(2.0), &ntsc);
        assert_eq!(picks[1].0, 29.0 * 1.001 / 30.0);
    }

    #[test]
    fn a_short_clip_gives_one_frame() {
        let picks = run(2.0, Some(0.2), &frames(30.0, 0.2));
        assert_eq!(picks, vec![(0.0, vec![0])]);
    }

    #[test]
    fn sparse_frames_answer_several_targets() {
        // Keyframes every 3 s, targets every second.
        let picks = run(1.0, Some(7.0), &[0.0, 3.0, 6.0]);
        assert_eq!(
            picks,
            vec![(0.0, vec![0, 1, 2]), (3.0, vec![3, 4, 5]), (6.0, vec![6])]
        );
    }

    #[test]
    fn a_late_first_frame_answers_the_targets_before_it() {
        let picks = run(1.0, Some(3.0), &[0.5, 1.5, 2.5]);
        assert_eq!(picks, vec![(0.5, vec![0]), (0.5, vec![1]), (1.5, vec![2])]);
    }

    #[test]
    fn unknown_end_stops_at_the_last_frame() {
        let picks = run(1.0, None, &frames(2.0, 3.0));
        assert_eq!(picks.last(), Some(&(2.0, vec![2])));
        assert_eq!(picks.len(), 3);
    }

    #[test]
    fn any_span_of_targets_costs_the_same() {
        // A declared end of 10^12 s, or a frame time far ahead: one range.
        let mut s = Sampler::new(0.5, Some(1e12));
        assert!(s.push(0.0, ()).is_none());
        let pick = s.push(1e9, ()).expect("a pick");
        assert_eq!(pick.targets, 0..2_000_000_000);
        let last = s.finish().expect("the rest");
        assert_eq!(last.targets, 2_000_000_000..2_000_000_000_000);
    }

    #[test]
    fn target_count_is_strictly_before_the_end() {
        assert_eq!(target_count(1.0, 60.0), 60);
        assert_eq!(target_count(1.0, 60.01), 61);
        assert_eq!(target_count(2.0, 0.2), 1);
        assert_eq!(target_count(0.1, 60.0), 600);
        assert_eq!(target_count(10.0, 60.0), 6);
    }
}
