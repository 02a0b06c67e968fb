//! What external programs report: a command's standard output, and the two
//! ffprobe readings the report quotes as an independent opinion on files
//! (keyframe packets of an input, video format of an output).
//!
//! None of these fail: a program that cannot run gives an empty answer, so
//! a missing tool blanks a line of the report instead of stopping the
//! bench; the callers that need a number fall back to a default.

use std::path::Path;
use std::process::{Command, Stdio};

/// A command's stdout, or an empty string when it cannot run.
pub(crate) fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// "1210 of 1800 video packets are keyframes", from ffprobe (no decoding).
pub(crate) fn keyframe_packets(path: &Path) -> String {
    let flags = command_output(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=flags",
            "-of",
            "csv=p=0",
            &path.to_string_lossy(),
        ],
    );
    let total = flags.lines().count();
    let keys = flags.lines().filter(|l| l.starts_with('K')).count();
    format!("{keys} of {total} video packets are keyframes")
}

/// The H.264 profile and pixel format ffprobe reads from an output.
pub(crate) fn video_format(path: &Path) -> String {
    let out = command_output(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=profile,pix_fmt",
            "-of",
            "default=nw=1:nk=1",
            &path.to_string_lossy(),
        ],
    );
    out.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}
