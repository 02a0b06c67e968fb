//! Bad input: every kind is told apart into the right error class, quickly,
//! and leaves no temp file behind.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use vidmill_pipelines::synth::{AudioCodec, Container, SynthSpec, VideoCodec};
use vidmill_pipelines::{self as media, MediaError};

/// Probing fails with the expected class within a second or two.
fn assert_probe_fails(path: &Path, unsupported: bool) {
    let started = Instant::now();
    let err = media::probe(path).expect_err("probe must fail");
    let elapsed = started.elapsed();
    match (&err, unsupported) {
        (MediaError::Unsupported(_), true) | (MediaError::Corrupt(_), false) => {}
        _ => panic!("{}: wrong class: {err:?}", path.display()),
    }
    assert!(
        elapsed < Duration::from_secs(5),
        "{}: took {elapsed:?}",
        path.display()
    );
    assert!(err.is_input_error());
}

fn ffmpeg(args: &[&str], out: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .arg(out)
        .status()
        .expect("run ffmpeg");
    assert!(status.success());
}

#[test]
fn empty_random_and_text_files_are_unsupported() {
    let dir = tempdir();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").expect("write");
    let random = dir.path().join("random.mp4");
    let noise: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&random, noise).expect("write");
    let text = dir.path().join("notes.mov");
    std::fs::write(&text, "this is not a video\n".repeat(200)).expect("write");
    for path in [&empty, &random, &text] {
        assert_probe_fails(path, true);
    }
    assert_eq!(
        leftovers(dir.path(), &[&empty, &random, &text]),
        Vec::<String>::new()
    );
}

#[test]
fn audio_only_and_still_images_are_unsupported() {
    let dir = tempdir();
    let audio = dir.path().join("sound.m4a");
    ffmpeg(
        &["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac"],
        &audio,
    );
    let png = dir.path().join("still.png");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240",
            "-frames:v",
            "1",
        ],
        &png,
    );
    let jpeg = dir.path().join("still.jpg");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240",
            "-frames:v",
            "1",
        ],
        &jpeg,
    );
    for path in [&audio, &png, &jpeg] {
        assert_probe_fails(path, true);
    }
}

#[test]
fn an_mp4_cut_before_its_index_is_corrupt() {
    let dir = tempdir();
    let spec = SynthSpec {
        audio: Some(AudioCodec::Aac),
        ..SynthSpec::new(VideoCodec::H264, Container::Mp4)
    };
    let src = make(dir.path(), "whole.mp4", &spec);
    let bytes = std::fs::read(&src).expect("read");
    let cut = dir.path().join("cut.mp4");
    // moov is at the end: half the file has media data and no index.
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    assert_probe_fails(&cut, false);
}

#[test]
fn a_truncated_stream_fails_or_converts_what_is_there_without_leftovers() {
    let dir = tempdir();
    let spec = SynthSpec {
        seconds: 4.0,
        ..SynthSpec::new(VideoCodec::Vp8, Container::Webm)
    };
    let src = make(dir.path(), "whole.webm", &spec);
    let bytes = std::fs::read(&src).expect("read");
    let cut = dir.path().join("cut.webm");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    std::fs::remove_file(&src).expect("remove");
    let out = dir.path().join("out.mp4");
    // A stream cut mid-cluster is still readable up to the cut: either a
    // shorter, valid MP4 or a Corrupt error, never a hang or a half file.
    let started = Instant::now();
    let result = media::probe(&cut).and_then(|facts| {
        media::convert(
            &cut,
            &facts,
            &media::ConvertSpec::new(&out),
            &media::Control::default(),
        )
    });
    assert!(started.elapsed() < Duration::from_secs(20));
    match result {
        Ok(_) => {
            let probe = ffprobe(&out);
            assert_eq!(
                stream(&probe, "video").expect("video")["codec_name"],
                "h264"
            );
            assert_eq!(leftovers(dir.path(), &[&cut, &out]), Vec::<String>::new());
        }
        Err(e) => {
            assert!(e.is_input_error(), "{e:?}");
            assert_eq!(leftovers(dir.path(), &[&cut]), Vec::<String>::new());
        }
    }
}

#[test]
fn a_missing_file_is_an_io_error() {
    let err = media::probe(Path::new("/nonexistent/video.mp4")).expect_err("missing");
    assert!(matches!(err, MediaError::Io { .. }), "{err:?}");
}

/// Rewrites every JPEG frame header (SOF0) in `path` to claim `w`×`h`:
/// a small MJPEG file that lies about its picture size.
fn claim_jpeg_size(path: &Path, w: u16, h: u16) {
    let mut bytes = std::fs::read(path).expect("read");
    let mut patched = 0;
    let mut i = 0;
    while i + 9 < bytes.len() {
        // FF C0, length (2), precision (1), height (2), width (2).
        if bytes[i] == 0xff && bytes[i + 1] == 0xc0 {
            bytes[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
            bytes[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
            patched += 1;
        }
        i += 1;
    }
    assert!(patched > 0, "no JPEG frame header found");
    std::fs::write(path, bytes).expect("write");
}

fn limit_named(err: &MediaError, key: &str) -> bool {
    matches!(err, MediaError::LimitExceeded { limit, why } if limit.key() == key && why.contains(key))
}

#[test]
fn pictures_over_the_pixel_limit_are_refused_as_declared_and_as_decoded() {
    let dir = tempdir();
    let src = dir.path().join("lie.avi");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x64:rate=5:duration=1",
            "-c:v",
            "mjpeg",
        ],
        &src,
    );
    claim_jpeg_size(&src, 30000, 30000);
    let limits = media::MediaLimits::default();
    // At probe: the parser announces 30000x30000 before anything decodes.
    let err = media::probe_within(&src, &limits).expect_err("over the limit");
    assert!(limit_named(&err, "limits.max_pixels"), "{err:?}");
    // While running (a probe that did not look): the same, named.
    let facts = media::probe(&src).expect("probe without limits");
    let out = dir.path().join("frames.zip");
    let started = Instant::now();
    let err = media::frames(
        &src,
        &facts,
        &media::FramesSpec::new(&out, 0.5),
        &media::Control::default(),
    )
    .expect_err("over the limit");
    assert!(limit_named(&err, "limits.max_pixels"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(leftovers(dir.path(), &[&src]).is_empty());
}

#[test]
fn too_many_frames_or_too_long_a_source_are_refused_by_name() {
    let dir = tempdir();
    let src = dir.path().join("short.mp4");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x64:rate=25:duration=4",
            "-c:v",
            "libx264",
        ],
        &src,
    );
    let tight = media::MediaLimits {
        max_duration: 2.0,
        max_frames: 10,
        ..media::MediaLimits::default()
    };
    let err = media::probe_within(&src, &tight).expect_err("longer than 2 s");
    assert!(limit_named(&err, "limits.max_duration_seconds"), "{err:?}");
    let facts = media::probe(&src).expect("probe");
    let ctl = media::Control {
        limits: tight,
        ..media::Control::default()
    };
    let out = dir.path().join("frames.zip");
    let err = media::frames(&src, &facts, &media::FramesSpec::new(&out, 0.1), &ctl)
        .expect_err("40 images > 10");
    assert!(limit_named(&err, "limits.max_frames"), "{err:?}");
    // Media time reached while decoding is held too (the probe said less).
    let lying = media::MediaFacts {
        duration: Some(1.0),
        seekable: false,
        ..facts.clone()
    };
    let err = media::frames(&src, &lying, &media::FramesSpec::new(&out, 1.0), &ctl)
        .expect_err("decoded past 2 s");
    assert!(limit_named(&err, "limits.max_duration_seconds"), "{err:?}");
    assert!(leftovers(dir.path(), &[&src]).is_empty());
}

/// 64 KiB of other bytes before an MPEG-TS (a capture begun mid-write, a
/// recorder's header): GStreamer's own type finder gives up, or finds an
/// MPEG-2 elementary stream inside the packets and loses the audio.
/// ffprobe reads it as a transport stream, and so does vidmill: probed as
/// one with its audio and ffprobe's duration, converted in full.
#[test]
fn a_transport_stream_behind_other_bytes_is_read_as_one() {
    let dir = tempdir();
    for (name, video, audio) in [("h264", "libx264", "aac"), ("mpeg2", "mpeg2video", "mp2")] {
        let ts = dir.path().join(format!("{name}.ts"));
        ffmpeg(
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=25:duration=3",
                "-f",
                "lavfi",
                "-i",
                "sine=duration=3",
                "-c:v",
                video,
                "-c:a",
                audio,
                "-f",
                "mpegts",
            ],
            &ts,
        );
        let mut x = 7u64;
        let mut bytes: Vec<u8> = (0..65_536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        bytes.extend(std::fs::read(&ts).expect("read"));
        let src = dir.path().join(format!("{name}-after-junk.ts"));
        std::fs::write(&src, bytes).expect("write");
        let facts = media::probe(&src).expect("probe");
        assert_eq!(facts.container, "mpegts", "{name}");
        assert!(facts.audio.is_some(), "{name}: the audio is found");
        let want = duration(&ffprobe(&src));
        let got = facts.duration.expect("duration");
        assert!(
            (got - want).abs() <= 0.1,
            "{name}: {got} s, ffprobe {want} s"
        );
        let out = dir.path().join(format!("{name}.mp4"));
        media::convert(
            &src,
            &facts,
            &media::ConvertSpec::new(&out),
            &media::Control::default(),
        )
        .expect("convert");
        let probe = ffprobe(&out);
        assert!(stream(&probe, "audio").is_some(), "{name}: audio kept");
        let d = duration(&probe);
        assert!(
            (d - want).abs() <= 0.1,
            "{name}: mp4 {d} s, source {want} s"
        );
    }
}
