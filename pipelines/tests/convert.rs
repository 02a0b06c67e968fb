//! Conversion of every source kind vidmill promises to handle, checked with
//! ffprobe: H.264 8-bit 4:2:0 + AAC (when the source has audio), `moov`
//! before `mdat`, duration kept, dimensions even, upright and capped, and
//! remux chosen exactly when allowed.

mod common;

use std::path::Path;

use common::*;
use vidmill_pipelines::synth::{AudioCodec, Container, SynthSpec, VideoCodec};
use vidmill_pipelines::{self as media, Control, ConvertSpec, Method};

struct Expect {
    method: Method,
    size: (u32, u32),
}

fn check(source: &Path, spec: ConvertSpec, expect: Expect) {
    let dir = source.parent().expect("dir");
    let facts = media::probe(source).expect("probe source");
    let report = media::convert(source, &facts, &spec, &Control::default()).expect("convert");
    assert_eq!(report.method, expect.method, "method");
    assert_eq!((report.width, report.height), expect.size, "reported size");

    let out = &spec.output;
    let probe = ffprobe(out);
    let video = stream(&probe, "video").expect("output has video");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["pix_fmt"], "yuv420p");
    let profile = video["profile"].as_str().unwrap_or_default();
    assert!(
        ["High", "Main", "Baseline", "Constrained Baseline"].contains(&profile),
        "profile {profile}"
    );
    let (w, h) = (
        video["width"].as_u64().expect("w") as u32,
        video["height"].as_u64().expect("h") as u32,
    );
    assert_eq!((w, h), expect.size, "ffprobe size");
    assert!(w % 2 == 0 && h % 2 == 0, "even dimensions");
    assert!(h <= spec.max_height, "height capped");
    let rotated = video["side_data_list"]
        .as_array()
        .is_some_and(|l| l.iter().any(|d| d["rotation"].as_i64().unwrap_or(0) != 0));
    assert!(!rotated, "output carries no rotation to apply");

    let audio = stream(&probe, "audio");
    assert_eq!(
        audio.is_some(),
        facts.audio.is_some(),
        "audio present exactly when the source has it"
    );
    if let Some(a) = audio {
        assert_eq!(a["codec_name"], "aac");
    }
    assert!(
        moov_before_mdat(out),
        "moov before mdat: {:?}",
        top_level_boxes(out)
    );
    let source_duration = facts.duration.expect("source duration");
    let d = duration(&probe);
    assert!(
        (d - source_duration).abs() <= 0.5,
        "duration {d} vs source {source_duration}"
    );
    assert_eq!(
        leftovers(dir, &[source, out]),
        Vec::<String>::new(),
        "temp files left"
    );
}

fn spec(dir: &Path) -> ConvertSpec {
    ConvertSpec {
        preset: "ultrafast".into(),
        ..ConvertSpec::new(dir.join("out.mp4"))
    }
}

fn synth(video: VideoCodec, container: Container, audio: Option<AudioCodec>) -> SynthSpec {
    SynthSpec {
        audio,
        ..SynthSpec::new(video, container)
    }
}

#[test]
fn h264_aac_mp4_with_moov_at_end_is_remuxed_with_moov_first() {
    let dir = tempdir();
    let src = make(
        dir.path(),
        "in.mp4",
        &synth(VideoCodec::H264, Container::Mp4, Some(AudioCodec::Aac)),
    );
    assert!(
        !moov_before_mdat(&src),
        "the source really has moov at the end"
    );
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Remux,
            size: (320, 240),
        },
    );
}

#[test]
fn h264_aac_in_mpeg_ts_is_remuxed() {
    let dir = tempdir();
    let src = make(
        dir.path(),
        "in.ts",
        &synth(VideoCodec::H264, Container::MpegTs, Some(AudioCodec::Aac)),
    );
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Remux,
            size: (320, 240),
        },
    );
}

#[test]
fn remux_can_be_refused() {
    let dir = tempdir();
    let src = make(
        dir.path(),
        "in.mp4",
        &synth(VideoCodec::H264, Container::Mp4, None),
    );
    let spec = ConvertSpec {
        allow_remux: false,
        ..spec(dir.path())
    };
    check(
        &src,
        spec,
        Expect {
            method: Method::Transcode,
            size: (320, 240),
        },
    );
}

#[test]
fn vp8_webm_is_transcoded() {
    let dir = tempdir();
    let src = make(
        dir.path(),
        "in.webm",
        &synth(VideoCodec::Vp8, Container::Webm, Some(AudioCodec::Vorbis)),
    );
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Transcode,
            size: (320, 240),
        },
    );
}

#[test]
fn vp9_webm_is_transcoded() {
    let dir = tempdir();
    let src = make(
        dir.path(),
        "in.webm",
        &synth(VideoCodec::Vp9, Container::Webm, Some(AudioCodec::Opus)),
    );
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Transcode,
            size: (320, 240),
        },
    );
}

#[test]
fn hevc_mkv_is_transcoded() {
    let dir = tempdir();
    let src = make(
        dir.path(),
        "in.mkv",
        &synth(VideoCodec::Hevc, Container::Mkv, Some(AudioCodec::Aac)),
    );
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Transcode,
            size: (320, 240),
        },
    );
}

#[test]
fn mpeg4_part2_avi_is_transcoded() {
    let dir = tempdir();
    let src = make(
        dir.path(),
        "in.avi",
        &synth(VideoCodec::Mpeg4, Container::Avi, Some(AudioCodec::Mp3)),
    );
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Transcode,
            size: (320, 240),
        },
    );
}

#[test]
fn mpeg2_ts_is_transcoded() {
    let dir = tempdir();
    let src = make(
        dir.path(),
        "in.ts",
        &synth(VideoCodec::Mpeg2, Container::MpegTs, Some(AudioCodec::Mp2)),
    );
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Transcode,
            size: (320, 240),
        },
    );
}

#[test]
fn mjpeg_mov_without_audio_is_transcoded() {
    let dir = tempdir();
    let src = make(
        dir.path(),
        "in.mov",
        &synth(VideoCodec::Mjpeg, Container::Mov, None),
    );
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Transcode,
            size: (320, 240),
        },
    );
}

#[test]
fn theora_ogv_is_transcoded() {
    let dir = tempdir();
    let src = make(
        dir.path(),
        "in.ogv",
        &synth(VideoCodec::Theora, Container::Ogg, Some(AudioCodec::Vorbis)),
    );
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Transcode,
            size: (320, 240),
        },
    );
}

#[test]
fn ten_bit_h264_is_transcoded_to_8_bit() {
    let dir = tempdir();
    let src = make(
        dir.path(),
        "in.mkv",
        &synth(
            VideoCodec::H264High10,
            Container::Mkv,
            Some(AudioCodec::Aac),
        ),
    );
    let facts = media::probe(&src).expect("probe");
    assert_eq!(facts.video.bit_depth, Some(10));
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Transcode,
            size: (320, 240),
        },
    );
}

#[test]
fn yuv444_h264_is_transcoded_to_420() {
    let dir = tempdir();
    let src = make(
        dir.path(),
        "in.mp4",
        &synth(VideoCodec::H264Yuv444, Container::Mp4, None),
    );
    let facts = media::probe(&src).expect("probe");
    assert_eq!(facts.video.chroma_format.as_deref(), Some("4:4:4"));
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Transcode,
            size: (320, 240),
        },
    );
}

#[test]
fn odd_dimensions_become_even() {
    let dir = tempdir();
    let source = SynthSpec {
        width: 321,
        height: 241,
        ..synth(VideoCodec::Vp8, Container::Webm, None)
    };
    let src = make(dir.path(), "in.webm", &source);
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Transcode,
            size: (320, 240),
        },
    );
}

#[test]
fn rotated_phone_video_is_turned_upright() {
    let dir = tempdir();
    let source = SynthSpec {
        width: 640,
        height: 360,
        audio: Some(AudioCodec::Aac),
        ..SynthSpec::new(VideoCodec::H264, Container::Mp4)
    };
    let plain = make(dir.path(), "plain.mp4", &source);
    let src = rotate_tag(&plain, 90);
    std::fs::remove_file(&plain).expect("remove");
    let facts = media::probe(&src).expect("probe");
    assert!(
        facts.video.orientation.swaps_axes(),
        "probe sees the rotation"
    );
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Transcode,
            size: (360, 640),
        },
    );
}

#[test]
fn variable_frame_rate_keeps_its_duration() {
    let dir = tempdir();
    let source = SynthSpec {
        vfr: true,
        pattern: media::synth::Pattern::Counter,
        ..synth(VideoCodec::H264, Container::Mkv, None)
    };
    let src = make(dir.path(), "in.mkv", &source);
    check(
        &src,
        ConvertSpec {
            allow_remux: false,
            ..spec(dir.path())
        },
        Expect {
            method: Method::Transcode,
            size: (320, 240),
        },
    );
}

#[test]
fn four_k_is_scaled_to_1080p() {
    let dir = tempdir();
    let source = SynthSpec {
        width: 3840,
        height: 2160,
        fps: 10,
        seconds: 1.0,
        keyframe_every: 10,
        ..SynthSpec::new(VideoCodec::H264, Container::Mp4)
    };
    let src = make(dir.path(), "in.mp4", &source);
    check(
        &src,
        spec(dir.path()),
        Expect {
            method: Method::Transcode,
            size: (1920, 1080),
        },
    );
}
