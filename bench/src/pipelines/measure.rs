//! Timing a row: both sides run `rounds` times in alternating order, each
//! run in a fresh output directory, with its wall time and the CPU time it
//! used; a side whose operation fails is recorded and not run again. It
//! also owns `median`, the statistic behind every figure of the report.

use std::fs;
use std::path::Path;
use std::time::Instant;

use crate::inputs::Input;
use crate::sides::{describe_outputs, run_anchor, Side};
use crate::tools::command_output;
use crate::{BenchResult, Row};

/// One successful timed run.
#[derive(Debug)]
struct Run {
    /// Wall-clock seconds.
    wall: f64,
    /// CPU seconds (user + system) the run used, all threads or children
    /// included: less disturbed than wall time by other work on the machine.
    cpu: Option<f64>,
    /// What the side chose and made.
    detail: String,
}

/// The runs of one side of a row.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    pub(crate) wall: Vec<f64>,
    pub(crate) cpu: Vec<f64>,
    /// From the last run.
    pub(crate) detail: String,
}

impl Runs {
    fn push(&mut self, run: Run) {
        self.wall.push(run.wall);
        self.cpu.extend(run.cpu);
        self.detail = run.detail;
    }
}

/// A row's timings.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) work: &'static str,
    pub(crate) target: f64,
    pub(crate) vidmill: Runs,
    pub(crate) ffmpeg: Runs,
    pub(crate) anchor: String,
    /// The first failed operation: that side is not run again.
    pub(crate) failure: Option<(Side, String)>,
}

impl Measured {
    fn new(row: &Row<'_>) -> Self {
        Self {
            work: row.work,
            target: row.target,
            vidmill: Runs::default(),
            ffmpeg: Runs::default(),
            anchor: row
                .anchor
                .iter()
                .map(|a| {
                    let (program, rest, first) = crate::sides::anchor_program(a);
                    format!("{program} {} {rest}", first.join(" "))
                })
                .collect::<Vec<_>>()
                .join(" && "),
            failure: None,
        }
    }

    /// `None` when a side has no successful run.
    pub(crate) fn ratio(&self) -> Option<f64> {
        Some(median(&self.vidmill.wall)? / median(&self.ffmpeg.wall)?)
    }

    pub(crate) fn failed(&self, side: Side) -> bool {
        self.failure.as_ref().is_some_and(|(s, _)| *s == side)
    }

    fn runs(&mut self, side: Side) -> &mut Runs {
        match side {
            Side::Vidmill => &mut self.vidmill,
            Side::Ffmpeg => &mut self.ffmpeg,
        }
    }
}

/// Times both sides `rounds` times, alternating which goes first. A side
/// whose operation fails is recorded as failed and not run again; the other
/// side still runs, so its time is known.
pub(crate) fn measure(
    row: &Row<'_>,
    inputs: (&Input, &Input),
    rounds: usize,
    scratch: &Path,
) -> BenchResult<Measured> {
    eprintln!("{}", row.work);
    let mut m = Measured::new(row);
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Side::Vidmill, Side::Ffmpeg]
        } else {
            [Side::Ffmpeg, Side::Vidmill]
        };
        for side in order {
            if m.failed(side) {
                continue;
            }
            let progress = format!("  round {}/{rounds} {side:?}", round + 1);
            match time_once(row, inputs, side, scratch)? {
                Ok(run) => {
                    eprintln!("{progress}: {:.2} s ({})", run.wall, run.detail);
                    m.runs(side).push(run);
                }
                Err(e) => {
                    eprintln!("{progress}: FAILED: {e}");
                    m.failure = m.failure.or(Some((side, e)));
                }
            }
        }
    }
    Ok(m)
}

/// One timed run in a fresh output directory, removed afterwards. The outer
/// error is the bench's own (files), the inner one the operation's.
fn time_once(
    row: &Row<'_>,
    inputs: (&Input, &Input),
    side: Side,
    scratch: &Path,
) -> BenchResult<Result<Run, String>> {
    let dir = scratch.join("run");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir(&dir)?;
    let cpu = || match (side, row.vidmill.cpu_pid()) {
        (Side::Vidmill, Some(pid)) => crate::server::cpu_seconds(pid),
        _ => cpu_seconds(side),
    };
    let cpu_before = cpu();
    let started = Instant::now();
    let chose = match side {
        Side::Vidmill => row.vidmill.run(&dir).map(Some),
        Side::Ffmpeg => run_anchor(row, inputs, &dir).map(|()| None),
    };
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu().zip(cpu_before).map(|(after, before)| after - before);
    let chose = match chose {
        Ok(c) => c,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let outputs = describe_outputs(&dir)?;
    fs::remove_dir_all(&dir)?;
    let detail = match chose {
        Some(c) if outputs.is_empty() => c,
        Some(c) => format!("{c}; {outputs}"),
        None => outputs,
    };
    Ok(Ok(Run { wall, cpu, detail }))
}

/// CPU seconds used so far by this process (vidmill runs in it) or by its
/// finished children (the ffmpeg commands), from `/proc/self/stat`.
fn cpu_seconds(side: Side) -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses; `utime` is
    // field 14 of the whole line, so index 11 here.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let index = match side {
        Side::Vidmill => 11,
        Side::Ffmpeg => 13,
    };
    let user: f64 = fields.get(index)?.parse().ok()?;
    let system: f64 = fields.get(index + 1)?.parse().ok()?;
    Some((user + system) / clock_ticks())
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        command_output("getconf", &["CLK_TCK"])
            .trim()
            .parse()
            .unwrap_or(100.0)
    })
}

pub(crate) fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
