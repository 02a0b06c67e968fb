//! The real-world media corpus: files as phones, cameras, OBS, editors,
//! browsers and old tools write them, made at test time with ffmpeg's own
//! encoders, run through the pipelines the way the server runs them, and
//! checked with ffprobe/ffmpeg as the independent reader (docs/MEDIA.md).
//!
//! One test per kind, named after it: `cargo test -p vidmill-pipelines
//! --test corpus` runs them all, `... --test corpus -- dvd` one. Set
//! `CORPUS_KEEP=1` to keep a row's files for a look. One more test checks
//! the reference itself: that it tells a dropped or repeated frame.

#[path = "corpus/check.rs"]
mod check;
#[path = "corpus/ff.rs"]
mod ff;
#[path = "corpus/kinds.rs"]
mod kinds;

macro_rules! corpus {
    ($($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                let kind = kinds::$name();
                assert_eq!(kind.name, stringify!($name), "a kind is named after its test");
                check::row(&kind);
            }
        )+
    };
}

/// The reference itself: on the XviD AVI (no presentation times, B-frames)
/// ffmpeg's faithful transcode passes the picture check, and the same with
/// a frame dropped or a frame shown twice fails it.
#[test]
fn reference_sees_a_dropped_or_repeated_frame() {
    check::reference_self_check(&kinds::xvid_avi_mp3());
}

corpus! {
    phone_h264_rotated_vfr,
    phone_portrait_1080x1920,
    phone_portrait_720x1280,
    iphone_hevc_main10_rotated,
    obs_mkv_h264_aac,
    obs_fragmented_mp4,
    av1_webm_svt_opus,
    av1_mp4_aom_aac,
    dvd_mpeg2_576i_ac3_anamorphic,
    hdv_mpeg2_1440x1080_ts,
    dv_ntsc_widescreen_avi,
    h264_full_range,
    h264_bt709_1080p,
    aac_5_1_surround,
    mkv_two_audio_tracks,
    prores_422hq_pcm24_timecode,
    wmv2_wma2_asf,
    flv1_mp3_flash,
    h263_3gp_aac,
    mjpeg_avi_pcm,
    audio_longer_than_video,
    audio_starts_late_mkv_opus,
    video_starts_late_edit_list,
    uhd_8k_hevc,
    single_frame,
    h264_1080p60,
    hdr_hevc_hlg_10bit,
    vp8_vorbis_webm,
    vp9_opus_webm,
    mpegts_h264_aac_broadcast,
    mov_h264_pcm_camera,
    mp4_h264_mp3,
    mp4_h264_opus,
    mkv_vfr_frame_times_double,
    odd_size_321x241_vp9,
    xvid_avi_mp3,
    theora_vorbis_ogv,
    webm_mediarecorder_no_duration,
    mov_h264_pcm96k_24bit,
    h264_in_avi_mp3,
    mkv_cover_art_first,
    mov_png_rgba_export,
    phone_mirrored_transverse,
    phone_mirrored_transpose,
    mpegts_aac_rate_switch,
}
