//! Frame extraction: each image is the frame it should be (the counter
//! pattern carries its frame index), `index.csv` says so, both strategies and
//! both accuracies agree with that, rotation is applied.

mod common;

use std::path::Path;

use common::*;
use vidmill_pipelines::synth::{Container, Pattern, SynthSpec, VideoCodec};
use vidmill_pipelines::{
    self as media, Accuracy, Control, ConvertSpec, FramesSpec, ImageFormat, JobSpec, Strategy,
};

fn counter(seconds: f64, keyframe_every: u32) -> SynthSpec {
    SynthSpec {
        seconds,
        keyframe_every,
        pattern: Pattern::Counter,
        ..SynthSpec::new(VideoCodec::H264, Container::Mkv)
    }
}

/// The frame on screen at `t`: the last one whose time is not after it.
fn on_screen(times: &[f64], t: f64) -> usize {
    times.iter().rposition(|f| *f <= t + 0.001).unwrap_or(0)
}

/// Checks every image and row of a frames ZIP against the source's frame
/// times; `pick` maps a requested time to the frame index that must answer.
fn check_zip(zip: &Path, every: f64, duration: f64, times: &[f64], pick: impl Fn(f64) -> usize) {
    let entries = zip_entries(zip);
    let rows = index_rows(&entries);
    let expected = ((duration / every).ceil() as usize).max(1);
    let expected = (0..expected)
        .filter(|k| (*k as f64) * every < duration)
        .count()
        .max(1);
    assert_eq!(
        rows.len(),
        expected,
        "one row per requested time before the end"
    );
    assert_eq!(
        entries.len(),
        rows.len() + 1,
        "one image per row plus index.csv"
    );
    assert_eq!(entries.last().map(|e| e.0.as_str()), Some("index.csv"));
    for (k, row) in rows.iter().enumerate() {
        let (index, requested, actual, name, w, h) = row;
        assert_eq!(*index, k as u64 + 1);
        assert!(
            (requested - k as f64 * every).abs() < 1e-3,
            "row {k} requested {requested}"
        );
        let want = pick(*requested);
        assert!(
            (actual - times[want]).abs() < 2e-3,
            "row {k}: actual {actual} but frame {want} is at {}",
            times[want]
        );
        assert_eq!(name, &format!("frames/{:06}.jpg", k + 1));
        let image = &entries
            .iter()
            .find(|(n, _)| n == name)
            .expect("image entry")
            .1;
        let (got, iw, ih) = counter_in(image);
        assert_eq!(
            got as usize, want,
            "row {k} at {requested} s shows frame {got}, not {want}"
        );
        assert_eq!(
            (iw as u32, ih as u32),
            (*w, *h),
            "row size matches the image"
        );
    }
}

fn extract(src: &Path, spec: &FramesSpec) -> (media::MediaFacts, media::FramesReport) {
    let facts = media::probe(src).expect("probe");
    let report = media::frames(src, &facts, spec, &Control::default()).expect("frames");
    (facts, report)
}

#[test]
fn exact_frames_decoding_straight_through_are_the_frames_on_screen() {
    let dir = tempdir();
    let source = counter(4.0, 30);
    let src = make(dir.path(), "in.mkv", &source);
    let spec = FramesSpec::new(dir.path().join("f.zip"), 0.3);
    let (facts, report) = extract(&src, &spec);
    assert_eq!(report.strategy, Strategy::Decode);
    let times = source.frame_times();
    check_zip(&spec.output, 0.3, facts.duration.expect("d"), &times, |t| {
        on_screen(&times, t)
    });
    assert_eq!(
        leftovers(dir.path(), &[&src, &spec.output]),
        Vec::<String>::new()
    );
}

#[test]
fn exact_frames_by_seeking_are_the_frames_on_screen() {
    let dir = tempdir();
    let source = counter(12.0, 15);
    let src = make(dir.path(), "in.mkv", &source);
    let spec = FramesSpec::new(dir.path().join("f.zip"), 2.5);
    let (facts, report) = extract(&src, &spec);
    assert_eq!(report.strategy, Strategy::Seek);
    let times = source.frame_times();
    check_zip(&spec.output, 2.5, facts.duration.expect("d"), &times, |t| {
        on_screen(&times, t)
    });
}

#[test]
fn keyframe_frames_are_the_keyframe_at_or_before_each_time() {
    for every in [0.5, 3.0] {
        let dir = tempdir();
        let source = counter(8.0, 30);
        let src = make(dir.path(), "in.mkv", &source);
        let spec = FramesSpec {
            accuracy: Accuracy::Keyframe,
            ..FramesSpec::new(dir.path().join("f.zip"), every)
        };
        let (facts, report) = extract(&src, &spec);
        let want = if every < 1.0 {
            Strategy::Decode
        } else {
            Strategy::Seek
        };
        assert_eq!(report.strategy, want, "every {every}");
        let times = source.frame_times();
        // Keyframes are every 30th frame.
        check_zip(
            &spec.output,
            every,
            facts.duration.expect("d"),
            &times,
            |t| on_screen(&times, t) / 30 * 30,
        );
    }
}

#[test]
fn variable_frame_rate_frames_follow_real_timestamps() {
    let dir = tempdir();
    let source = SynthSpec {
        vfr: true,
        ..counter(3.0, 30)
    };
    let src = make(dir.path(), "in.mkv", &source);
    let spec = FramesSpec::new(dir.path().join("f.zip"), 0.2);
    let (facts, _) = extract(&src, &spec);
    let times = source.frame_times();
    check_zip(&spec.output, 0.2, facts.duration.expect("d"), &times, |t| {
        on_screen(&times, t)
    });
}

#[test]
fn a_transcode_and_its_frames_share_one_decode() {
    let dir = tempdir();
    let source = SynthSpec {
        pattern: Pattern::Counter,
        seconds: 3.0,
        ..SynthSpec::new(VideoCodec::Vp8, Container::Webm)
    };
    let src = make(dir.path(), "in.webm", &source);
    let facts = media::probe(&src).expect("probe");
    let job = JobSpec {
        convert: Some(ConvertSpec {
            preset: "ultrafast".into(),
            ..ConvertSpec::new(dir.path().join("out.mp4"))
        }),
        frames: Some(FramesSpec::new(dir.path().join("f.zip"), 0.5)),
    };
    let report = media::run_job(&src, &facts, &job, &Control::default()).expect("job");
    let frames = report.frames.expect("frames report");
    assert_eq!(frames.strategy, Strategy::Shared);
    assert_eq!(
        report.convert.expect("convert report").method,
        media::Method::Transcode
    );
    let probe = ffprobe(&dir.path().join("out.mp4"));
    assert_eq!(
        stream(&probe, "video").expect("video")["codec_name"],
        "h264"
    );
    let times = source.frame_times();
    check_zip(
        &dir.path().join("f.zip"),
        0.5,
        facts.duration.expect("d"),
        &times,
        |t| on_screen(&times, t),
    );
}

#[test]
fn a_clip_shorter_than_the_interval_gives_one_frame() {
    let dir = tempdir();
    let source = SynthSpec {
        seconds: 0.2,
        ..counter(0.2, 30)
    };
    let src = make(dir.path(), "in.mkv", &source);
    let spec = FramesSpec::new(dir.path().join("f.zip"), 2.0);
    let (facts, report) = extract(&src, &spec);
    assert_eq!(report.count, 1);
    let times = source.frame_times();
    check_zip(&spec.output, 2.0, facts.duration.expect("d"), &times, |_| 0);
}

#[test]
fn rotated_video_gives_upright_frames() {
    let dir = tempdir();
    let plain = make(
        dir.path(),
        "plain.mp4",
        &SynthSpec {
            width: 640,
            height: 360,
            ..SynthSpec::new(VideoCodec::H264, Container::Mp4)
        },
    );
    let src = rotate_tag(&plain, 90);
    let spec = FramesSpec::new(dir.path().join("f.zip"), 1.0);
    extract(&src, &spec);
    let entries = zip_entries(&spec.output);
    let (gray, w, h) = media::synth::decode_gray(&entries[0].1).expect("decode");
    let (reference, rw, rh) = ffmpeg_frame(&src, 0.0);
    assert_eq!((w, h), (rw, rh), "same upright size as ffmpeg shows");
    assert_eq!((w, h), (360, 640));
    let diff = mean_abs_diff(&gray, &reference);
    // Lossy coding twice over leaves some difference; turned the wrong way,
    // the picture differs several times more.
    let turned: Vec<u8> = reference.iter().rev().copied().collect();
    let wrong = mean_abs_diff(&gray, &turned);
    assert!(
        diff < 25.0 && diff * 3.0 < wrong,
        "not ffmpeg's upright frame: {diff} (turned: {wrong})"
    );
}

#[test]
fn png_frames_and_a_poster_decode() {
    let dir = tempdir();
    let src = make(dir.path(), "in.mkv", &counter(2.0, 30));
    let spec = FramesSpec {
        format: ImageFormat::Png,
        ..FramesSpec::new(dir.path().join("f.zip"), 1.0)
    };
    let (facts, _) = extract(&src, &spec);
    let entries = zip_entries(&spec.output);
    assert_eq!(entries[0].0, "frames/000001.png");
    assert_eq!(counter_in(&entries[1].1).0, 30);
    let poster = media::PosterSpec::new(dir.path().join("poster.jpg"));
    let report = media::poster(&src, &facts, &poster, &Control::default()).expect("poster");
    let image = std::fs::read(&poster.output).expect("poster file");
    let (index, w, h) = counter_in(&image);
    assert_eq!((w as u32, h as u32), (report.width, report.height));
    assert_eq!(
        index as usize,
        on_screen(
            &SynthSpec::frame_times(&counter(2.0, 30)),
            media::poster_time(&facts)
        )
    );
}

#[test]
fn bad_intervals_are_refused() {
    let dir = tempdir();
    let src = make(dir.path(), "in.mkv", &counter(1.0, 30));
    let facts = media::probe(&src).expect("probe");
    for every in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let spec = FramesSpec::new(dir.path().join("f.zip"), every);
        let err = media::frames(&src, &facts, &spec, &Control::default()).expect_err("refused");
        assert!(
            matches!(err, media::MediaError::Invalid(_)),
            "{every}: {err}"
        );
    }
    assert_eq!(leftovers(dir.path(), &[&src]), Vec::<String>::new());
}

#[test]
fn a_720p_transcode_with_audio_and_frames_shares_its_decode_without_deadlock() {
    // x264 (veryfast) holds ~16 frames before its first output; at 720p the
    // frames branch fills up first. A preroll-holding sink deadlocked here.
    let dir = tempdir();
    let source = SynthSpec {
        width: 1280,
        height: 720,
        seconds: 3.0,
        pattern: Pattern::Counter,
        audio: Some(media::synth::AudioCodec::Vorbis),
        ..SynthSpec::new(VideoCodec::Vp8, Container::Webm)
    };
    let src = make(dir.path(), "in.webm", &source);
    let facts = media::probe(&src).expect("probe");
    let job = JobSpec {
        convert: Some(ConvertSpec::new(dir.path().join("out.mp4"))),
        frames: Some(FramesSpec::new(dir.path().join("f.zip"), 0.5)),
    };
    let ctl = Control {
        stall_timeout: std::time::Duration::from_secs(10),
        ..Control::default()
    };
    let report = media::run_job(&src, &facts, &job, &ctl).expect("job finishes");
    assert_eq!(report.frames.expect("frames").strategy, Strategy::Shared);
    let probe = ffprobe(&dir.path().join("out.mp4"));
    assert_eq!(stream(&probe, "audio").expect("audio")["codec_name"], "aac");
    let times = source.frame_times();
    check_zip(
        &dir.path().join("f.zip"),
        0.5,
        facts.duration.expect("d"),
        &times,
        |t| on_screen(&times, t),
    );
}
