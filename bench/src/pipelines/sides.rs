//! The two contenders of a row and what each does in one run: the vidmill
//! operation called through the library, the ffmpeg anchor commands run as
//! child processes, and the description of the files a run left behind.
//! Timing them is `measure`'s business.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vidmill_pipelines::{
    convert, frames, run_job, Accuracy, Control, ConvertSpec, FramesSpec, JobSpec,
};

use crate::inputs::Input;
use crate::report::megabytes;
use crate::server::{json_field, upload, wait_ready, Vidmill};
use crate::tools::video_format;
use crate::{BenchResult, Row};

/// The two contenders of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Vidmill,
    Ffmpeg,
}

/// The conversion every row asks for: what the anchors' `-preset veryfast
/// -crf 23` ask of ffmpeg (a browser-ready source is remuxed instead).
fn convert_spec(output: PathBuf) -> ConvertSpec {
    ConvertSpec {
        preset: "veryfast".into(),
        crf: 23,
        ..ConvertSpec::new(output)
    }
}

/// One vidmill operation, run through the library.
#[derive(Debug)]
pub(crate) enum Op<'a> {
    /// `convert` with [`convert_spec`].
    Convert { input: &'a Input },
    Frames {
        input: &'a Input,
        every: f64,
        accuracy: Accuracy,
    },
    /// `run_job` with [`convert_spec`] and frames every `every` seconds.
    Job { input: &'a Input, every: f64 },
    /// The whole service: upload to a running `vidmill serve` and wait for
    /// the video to be ready (probe, MP4, frames every 10 s, poster, each
    /// verified, every GStreamer job in a worker process).
    Upload {
        input: &'a Input,
        server: &'a Server,
    },
}

/// A running server and a token for it.
pub(crate) struct Server {
    pub(crate) vidmill: Vidmill,
    pub(crate) token: String,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.vidmill.addr)
            .finish_non_exhaustive()
    }
}

impl Op<'_> {
    /// Runs the operation with outputs in `dir`; returns what it chose.
    pub(crate) fn run(&self, dir: &Path) -> BenchResult<String> {
        let ctl = Control::default();
        match self {
            Op::Convert { input } => {
                let spec = convert_spec(dir.join("out.mp4"));
                let r = convert(&input.path, &input.facts, &spec, &ctl)?;
                Ok(format!("method {:?}, {}x{}", r.method, r.width, r.height))
            }
            Op::Frames {
                input,
                every,
                accuracy,
            } => {
                let spec = FramesSpec {
                    accuracy: *accuracy,
                    ..FramesSpec::new(dir.join("frames.zip"), *every)
                };
                let r = frames(&input.path, &input.facts, &spec, &ctl)?;
                Ok(format!("strategy {:?}, {} images", r.strategy, r.count))
            }
            Op::Job { input, every } => {
                let job = JobSpec {
                    convert: Some(convert_spec(dir.join("out.mp4"))),
                    frames: Some(FramesSpec::new(dir.join("frames.zip"), *every)),
                };
                let r = run_job(&input.path, &input.facts, &job, &ctl)?;
                let method = r.convert.map(|c| format!("method {:?}", c.method));
                let frames = r
                    .frames
                    .map(|f| format!("strategy {:?}, {} images", f.strategy, f.count));
                Ok([method, frames]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" + "))
            }
            Op::Upload { input, server } => {
                let (v, token) = (&server.vidmill, &server.token);
                let id = upload(v, token, &input.path, "frames_every=10")?;
                let video = wait_ready(v, token, &id)?;
                let method = json_field(&video, "\"method\":\"").unwrap_or_default();
                Ok(format!("ready, method {method}"))
            }
        }
    }

    /// The process whose CPU time the operation uses, when not this one.
    pub(crate) fn cpu_pid(&self) -> Option<u32> {
        match self {
            Op::Upload { server, .. } => Some(server.vidmill.child.id()),
            _ => None,
        }
    }
}

/// An anchor's arguments with `A` and `B` replaced by the input paths.
fn anchor_args(template: &str, a: &Input, b: &Input) -> Vec<String> {
    template
        .split_whitespace()
        .map(|t| match t {
            "A" => a.path.to_string_lossy().into_owned(),
            "B" => b.path.to_string_lossy().into_owned(),
            t => t.to_string(),
        })
        .collect()
}

/// The program and its first arguments for an anchor template: `ffprobe`
/// when the template starts with it, else `ffmpeg`.
pub(crate) fn anchor_program(template: &str) -> (&'static str, &str, &'static [&'static str]) {
    match template.strip_prefix("ffprobe ") {
        Some(rest) => ("ffprobe", rest, &["-v", "error"]),
        None => ("ffmpeg", template, &["-y", "-v", "error"]),
    }
}

/// Runs a row's anchor commands in `dir`, one after the other.
pub(crate) fn run_anchor(row: &Row<'_>, inputs: (&Input, &Input), dir: &Path) -> BenchResult<()> {
    for template in &row.anchor {
        let (program, rest, first) = anchor_program(template);
        let a = anchor_args(rest, inputs.0, inputs.1);
        let out = Command::new(program)
            .args(first)
            .args(&a)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "{template} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
    }
    Ok(())
}

/// "mp4 15.2 MB (High yuv420p) + 6 jpg", from the files a run left in `dir`.
pub(crate) fn describe_outputs(dir: &Path) -> BenchResult<String> {
    let mut jpgs = 0;
    let mut parts = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("jpg") => jpgs += 1,
            Some("mp4") => parts.push(format!(
                "mp4 {:.1} MB ({})",
                megabytes(fs::metadata(&path)?.len()),
                video_format(&path)
            )),
            _ => {}
        }
    }
    if jpgs > 0 {
        parts.push(format!("{jpgs} jpg"));
    }
    Ok(parts.join(" + "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vidmill_pipelines::MediaFacts;

    #[test]
    fn anchors_get_the_input_paths() {
        let input = |path: &str| Input {
            label: "X",
            path: PathBuf::from(path),
            facts: MediaFacts::default(),
            probe_seconds: 0.0,
            generated: false,
            requested_spacing: 3.0,
        };
        let (a, b) = (input("/in/a b.mp4"), input("/in/b.webm"));
        assert_eq!(
            anchor_args("-i A -i B out.mp4", &a, &b),
            ["-i", "/in/a b.mp4", "-i", "/in/b.webm", "out.mp4"]
        );
    }
}
