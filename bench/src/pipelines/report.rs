//! The markdown report printed at the end: the machine the numbers come
//! from (CPU, GStreamer and ffmpeg versions, load before and after), the
//! results table with each row's verdict against its target, the details
//! table (what each side chose and made, every run, CPU time), the failures,
//! the anchor commands and the inputs.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::inputs::Input;
use crate::measure::{median, Measured};
use crate::sides::Side;
use crate::tools::command_output;
use crate::Config;

/// The machine the numbers come from.
#[derive(Debug)]
pub(crate) struct Machine {
    date: String,
    cpus: usize,
    cpu_model: String,
    gstreamer: String,
    ffmpeg: String,
    load_before: String,
}

impl Machine {
    pub(crate) fn describe() -> Self {
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let gst = command_output("gst-inspect-1.0", &["--version"]);
        // Its second line names the library ("GStreamer 1.22.0"), the first the tool.
        let gstreamer = gst
            .lines()
            .find(|l| l.starts_with("GStreamer"))
            .or_else(|| gst.lines().next())
            .unwrap_or("unknown")
            .to_string();
        Self {
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
                .trim()
                .to_string(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            gstreamer,
            ffmpeg: ffmpeg_version(),
            load_before: Self::load_average(),
        }
    }

    /// The 1, 5 and 15 minute load averages, a hint of how busy the machine was.
    pub(crate) fn load_average() -> String {
        fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into())
    }
}

/// `ffmpeg -version`'s first line without its copyright notice.
fn ffmpeg_version() -> String {
    let out = command_output("ffmpeg", &["-version"]);
    let line = out.lines().next().unwrap_or("ffmpeg version unknown");
    line.split(" Copyright")
        .next()
        .unwrap_or(line)
        .trim()
        .to_string()
}

/// Bytes in decimal megabytes, the unit of every size the report gives.
pub(crate) fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

fn median_text(xs: &[f64]) -> String {
    median(xs).map_or("–".into(), |m| format!("{m:.2}"))
}

fn seconds_list(xs: &[f64]) -> String {
    xs.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole markdown report.
pub(crate) fn report(
    machine: &Machine,
    load_after: &str,
    config: &Config,
    inputs: &[&Input],
    rows: &[Measured],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## vidmill pipelines vs ffmpeg\n");
    let _ = writeln!(s, "{}\n", machine_line(machine, load_after));
    let _ = writeln!(
        s,
        "{} round(s) per row, vidmill and ffmpeg alternating which runs first; \
         median wall time of each. CPU s is the median of user + system seconds \
         (all threads, or all ffmpeg processes), which other work on the machine \
         disturbs less than wall time.\n",
        config.rounds
    );
    let _ = writeln!(s, "{}", results_table(rows));
    let _ = writeln!(s, "{}", details_table(rows));
    let _ = writeln!(s, "{}", inputs_section(inputs, &config.inputs_dir));
    s
}

fn machine_line(m: &Machine, load_after: &str) -> String {
    format!(
        "Measured {} on {} CPU(s) ({}), {}, {}; load average {} before, {} after.",
        m.date, m.cpus, m.cpu_model, m.gstreamer, m.ffmpeg, m.load_before, load_after
    )
}

fn results_table(rows: &[Measured]) -> String {
    let mut s = String::from(
        "| work | vidmill median s | ffmpeg median s | ratio | target | met? |\n\
         |---|---:|---:|---:|---:|:---:|\n",
    );
    for r in rows {
        let verdict = match (r.ratio(), &r.failure) {
            (_, Some((side, _))) => format!("**{side:?} failed**"),
            (Some(x), None) if x <= r.target => "yes".into(),
            _ => "**no**".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | ≤ {} | {verdict} |",
            r.work,
            seconds_or_failed(&r.vidmill.wall, r.failed(Side::Vidmill)),
            seconds_or_failed(&r.ffmpeg.wall, r.failed(Side::Ffmpeg)),
            r.ratio().map_or("–".into(), |x| format!("{x:.2}")),
            r.target,
        );
    }
    s
}

/// The median, or "failed" when the side failed before any run finished.
fn seconds_or_failed(times: &[f64], failed: bool) -> String {
    match median(times) {
        Some(m) if failed => format!("{m:.2} (then failed)"),
        Some(m) => format!("{m:.2}"),
        None => "failed".into(),
    }
}

fn details_table(rows: &[Measured]) -> String {
    let mut s = String::from(
        "| work | vidmill chose and made | vidmill runs s | vidmill CPU s | \
         ffmpeg made | ffmpeg runs s | ffmpeg CPU s | CPU ratio |\n\
         |---|---|---|---:|---|---|---:|---:|\n",
    );
    for r in rows {
        let cpu_ratio = median(&r.vidmill.cpu)
            .zip(median(&r.ffmpeg.cpu))
            .map_or("–".into(), |(v, f)| format!("{:.2}", v / f));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {cpu_ratio} |",
            r.work,
            r.vidmill.detail,
            seconds_list(&r.vidmill.wall),
            median_text(&r.vidmill.cpu),
            r.ffmpeg.detail,
            seconds_list(&r.ffmpeg.wall),
            median_text(&r.ffmpeg.cpu),
        );
    }
    let failures: Vec<_> = rows
        .iter()
        .filter_map(|r| r.failure.as_ref().map(|(side, e)| (r.work, side, e)))
        .collect();
    if !failures.is_empty() {
        s.push_str("\nFailures:\n\n");
        for (work, side, e) in failures {
            let _ = writeln!(s, "- {work} ({side:?}): {e}");
        }
    }
    s.push_str("\nAnchor commands (A and B are the inputs below):\n\n");
    for r in rows {
        let _ = writeln!(s, "- {}: `{}`", r.work, r.anchor);
    }
    s
}

fn inputs_section(inputs: &[&Input], dir: &Path) -> String {
    let mut s = format!(
        "Inputs (made with `synth::generate`, cached in {}):\n\n",
        dir.display()
    );
    for i in inputs {
        let origin = if i.generated { "generated" } else { "cached" };
        let _ = writeln!(s, "- {} ({origin}; {})", i.describe(), i.path.display());
    }
    s.push('\n');
    for i in inputs {
        let _ = writeln!(s, "- {}", i.keyframes());
    }
    let probes = inputs
        .iter()
        .map(|i| format!("{} {:.2} s", i.label, i.probe_seconds))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        s,
        "\nProbe runs once per input before the timings, as the server probes at \
         upload time, and is not included above: {probes}."
    );
    s
}
