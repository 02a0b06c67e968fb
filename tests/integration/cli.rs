//! The offline command line, run as a real process: JSON on success, a
//! non-zero exit and a one-line reason on failure.

use std::process::Command;

use vidmill_pipelines::synth::{self, AudioCodec, Container, SynthSpec, VideoCodec};

fn vidmill(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vidmill"))
        .args(args)
        .output()
        .expect("run vidmill")
}

#[test]
fn probe_convert_frames_and_poster_work_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("in.webm");
    let spec = SynthSpec {
        audio: Some(AudioCodec::Vorbis),
        ..SynthSpec::new(VideoCodec::Vp8, Container::Webm)
    };
    synth::generate(&spec, &src).expect("generate");

    let probe = vidmill(&["probe".as_ref(), src.as_os_str()]);
    assert!(probe.status.success());
    let facts: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("probe json");
    assert_eq!(facts["video"]["codec"], "vp8");
    assert_eq!(facts["audio"]["codec"], "vorbis");

    let mp4 = dir.path().join("out.mp4");
    let convert = vidmill(&[
        "convert".as_ref(),
        src.as_os_str(),
        mp4.as_os_str(),
        "--preset".as_ref(),
        "ultrafast".as_ref(),
    ]);
    assert!(
        convert.status.success(),
        "{}",
        String::from_utf8_lossy(&convert.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&convert.stdout).expect("convert json");
    assert_eq!(report["method"], "transcode");
    assert!(mp4.metadata().expect("mp4").len() > 0);

    let zip = dir.path().join("frames.zip");
    let frames = vidmill(&[
        "frames".as_ref(),
        src.as_os_str(),
        "-o".as_ref(),
        zip.as_os_str(),
        "--every".as_ref(),
        "0.5".as_ref(),
    ]);
    assert!(
        frames.status.success(),
        "{}",
        String::from_utf8_lossy(&frames.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&frames.stdout).expect("frames json");
    assert_eq!(report["count"], 4);

    let jpg = dir.path().join("poster.jpg");
    let poster = vidmill(&["poster".as_ref(), src.as_os_str(), jpg.as_os_str()]);
    assert!(poster.status.success());
    assert_eq!(&std::fs::read(&jpg).expect("poster")[..2], &[0xff, 0xd8]);
}

#[test]
fn failures_exit_non_zero_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "not a video\n".repeat(100)).expect("write");
    let out = vidmill(&[
        "convert".as_ref(),
        text.as_os_str(),
        dir.path().join("o.mp4").as_os_str(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].starts_with("vidmill: unsupported media"),
        "{stderr}"
    );

    let bad = vidmill(&[
        "frames".as_ref(),
        text.as_os_str(),
        "-o".as_ref(),
        "f.zip".as_ref(),
        "--every".as_ref(),
        "2".as_ref(),
        "--accuracy".as_ref(),
        "sometimes".as_ref(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("exact, keyframe"));
}

#[test]
fn a_reader_that_goes_away_is_no_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("in.webm");
    synth::generate(&SynthSpec::new(VideoCodec::Vp8, Container::Webm), &src).expect("generate");
    // `vidmill probe in.webm | head -0`: the pipe is closed before the
    // report is written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vidmill"))
        .arg("probe")
        .arg(&src)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run vidmill");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}
