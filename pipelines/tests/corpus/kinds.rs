//! The corpus: each kind of file as a device or tool writes it, made with
//! ffmpeg's own encoders and muxers. docs/MEDIA.md has one row per kind
//! saying what it imitates and what vidmill must make of it.
//!
//! Pictures are `testsrc2` (colour, text, moving parts: neighbouring frames
//! differ by ~19 dB) softened with a slight blur, so that the scaler of the
//! rows that scale (GStreamer's videoscale against swscale) stays far above
//! the 35 dB bar while a wrong frame, range or matrix falls far below it.

use vidmill_pipelines::Method;

use crate::check::{Colour, Kind, Patch};

/// `testsrc2` at `size` and `rate` for `secs`, softened (more for small
/// pictures, whose x264 loss at CRF 23 would otherwise approach the bar).
fn video(size: &str, rate: &str, secs: f64) -> String {
    soft_video(size, rate, secs, blur(size))
}

/// `testsrc2` blurred by `sigma` pixels.
fn soft_video(size: &str, rate: &str, secs: f64, sigma: f64) -> String {
    format!("-f lavfi -i testsrc2=size={size}:rate={rate}:duration={secs},gblur=sigma={sigma}")
}

/// Interlaced rows carry progressive pictures (both fields from one
/// instant, as film on PAL DVD or 30p shot to DV); a deinterlacer that
/// rebuilds each frame from one field halves their vertical detail, which
/// costs a sharp test pattern ~5 dB, so these rows get a softer one.
const INTERLACED_BLUR: f64 = 3.5;

fn blur(size: &str) -> f64 {
    let short = size
        .split('x')
        .filter_map(|v| v.parse::<u32>().ok())
        .min()
        .unwrap_or(360);
    match short {
        0..=199 => 4.0,
        200..=299 => 2.4,
        _ => 1.2,
    }
}

/// A sine tone.
fn sine(freq: u32, rate: u32, secs: f64) -> String {
    format!("-f lavfi -i sine=frequency={freq}:sample_rate={rate}:duration={secs}")
}

/// Six distinct tones, one per 5.1 channel.
fn surround(secs: f64) -> String {
    let tones = [440, 554, 659, 110, 784, 880]
        .iter()
        .map(|f| format!("0.2*sin({f}*2*PI*t)"))
        .collect::<Vec<_>>()
        .join("|");
    format!("-f lavfi -i aevalsrc={tones}:c=5.1:s=48000:d={secs}")
}

/// Converts to limited-range 4:2:0 (or `fmt`) with the BT.709 matrix and
/// tags the frames so every encoder writes the tags.
fn bt709(fmt: &str) -> String {
    format!(
        "scale=out_color_matrix=bt709:out_range=tv,format={fmt},setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv"
    )
}

/// Encoder-level BT.709 tags (written into the bitstream or container).
const TAGS_709: &str = "-colorspace bt709 -color_primaries bt709 -color_trc bt709 -color_range tv";

#[allow(clippy::too_many_arguments)]
fn kind(
    name: &'static str,
    file: &'static str,
    steps: &[String],
    every: f64,
    method: Option<Method>,
    colour: Colour,
    tone: Option<f64>,
) -> Kind {
    Kind {
        name,
        file,
        steps: steps.to_vec(),
        every,
        method,
        colour,
        tone,
        spec_sar: None,
        patch: None,
    }
}

const REMUX: Option<Method> = Some(Method::Remux);
const TRANSCODE: Option<Method> = Some(Method::Transcode);
const EITHER: Option<Method> = None;
const A440: Option<f64> = Some(440.0);

/// A phone camera: H.264 High with B-frames, jittery frame times, rotated
/// 90° in the track matrix, `moov` at the end.
pub fn phone_h264_rotated_vfr() -> Kind {
    let jitter = "settb=1/90000,setpts='if(eq(N,0),0,N/30+0.002+0.004*random(0))/TB'";
    kind(
        "phone_h264_rotated_vfr",
        "source.mp4",
        &[
            format!(
                "{} {} -vf {jitter},{} -fps_mode passthrough -enc_time_base 1:90000 -c:v libx264 -preset veryfast -profile:v high -bf 3 -g 30 {TAGS_709} -c:a aac -ac 2 -b:a 128k -video_track_timescale 90000 camera.mp4",
                video("640x360", "30", 3.0),
                sine(440, 48000, 3.0),
                bt709("yuv420p")
            ),
            "-i camera.mp4 -c copy -metadata:s:v:0 rotate=90 source.mp4".into(),
        ],
        1.0,
        TRANSCODE,
        Colour::Bt709,
        A440,
    )
}

fn portrait(name: &'static str, size: &str, rate: u32) -> Kind {
    kind(
        name,
        "source.mp4",
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast -profile:v high -g 30 {TAGS_709} -c:a aac -ac 2 -movflags +faststart source.mp4",
            video(size, "30", 2.0),
            sine(440, rate, 2.0),
            bt709("yuv420p")
        )],
        1.0,
        REMUX,
        Colour::Bt709,
        A440,
    )
}

/// An upright portrait phone video at full HD: must not be shrunk.
pub fn phone_portrait_1080x1920() -> Kind {
    portrait("phone_portrait_1080x1920", "1080x1920", 48000)
}

/// An upright portrait phone video at 720p.
pub fn phone_portrait_720x1280() -> Kind {
    portrait("phone_portrait_720x1280", "720x1280", 44100)
}

/// An iPhone: HEVC Main 10 tagged `hvc1` in QuickTime, rotated.
pub fn iphone_hevc_main10_rotated() -> Kind {
    kind(
        "iphone_hevc_main10_rotated",
        "source.mov",
        &[
            format!(
                "{} {} -vf {} -c:v libx265 -preset ultrafast -profile:v main10 -x265-params log-level=error:bframes=3 -tag:v hvc1 {TAGS_709} -c:a aac -ac 2 -f mov camera.mov",
                video("640x360", "30", 2.0),
                sine(440, 44100, 2.0),
                bt709("yuv420p10le")
            ),
            "-i camera.mov -c copy -tag:v hvc1 -metadata:s:v:0 rotate=90 source.mov".into(),
        ],
        1.0,
        TRANSCODE,
        Colour::Bt709,
        A440,
    )
}

fn obs(name: &'static str, file: &'static str, extra: &str) -> Kind {
    kind(
        name,
        file,
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast -b:v 2500k -maxrate 2500k -bufsize 5000k -g 60 {TAGS_709} -c:a aac -ac 2 -b:a 160k {extra} {file}",
            video("1280x720", "30", 3.0),
            sine(440, 48000, 3.0),
            bt709("yuv420p")
        )],
        1.0,
        REMUX,
        Colour::Bt709,
        A440,
    )
}

/// OBS Studio recording to Matroska (its default since 30).
pub fn obs_mkv_h264_aac() -> Kind {
    obs("obs_mkv_h264_aac", "source.mkv", "")
}

/// OBS Studio's crash-safe fragmented MP4 (libavformat with these flags).
pub fn obs_fragmented_mp4() -> Kind {
    obs(
        "obs_fragmented_mp4",
        "source.mp4",
        "-movflags frag_keyframe+empty_moov",
    )
}

/// AV1 + Opus in WebM, as YouTube serves and downloaders save it.
pub fn av1_webm_svt_opus() -> Kind {
    kind(
        "av1_webm_svt_opus",
        "source.webm",
        &[format!(
            "{} {} -vf {} -c:v libsvtav1 -preset 12 {TAGS_709} -c:a libopus -ac 2 source.webm",
            video("640x360", "30", 2.0),
            sine(440, 48000, 2.0),
            bt709("yuv420p")
        )],
        1.0,
        TRANSCODE,
        Colour::Bt709,
        A440,
    )
}

/// AV1 + AAC in MP4 (libaom, as newer phones and encoders write it).
pub fn av1_mp4_aom_aac() -> Kind {
    kind(
        "av1_mp4_aom_aac",
        "source.mp4",
        &[format!(
            "{} {} -c:v libaom-av1 -cpu-used 8 -row-mt 1 -usage realtime -pix_fmt yuv420p -c:a aac source.mp4",
            video("320x240", "24", 2.0),
            sine(440, 48000, 2.0)
        )],
        1.0,
        TRANSCODE,
        Colour::Sd,
        A440,
    )
}

/// A PAL DVD: interlaced MPEG-2 576i (top field first), 16:9 anamorphic,
/// AC-3 5.1, in a VOB (MPEG-PS).
pub fn dvd_mpeg2_576i_ac3_anamorphic() -> Kind {
    kind(
        "dvd_mpeg2_576i_ac3_anamorphic",
        "source.vob",
        &[format!(
            "{} {} -vf scale=out_color_matrix=bt601:out_range=tv,format=yuv420p,setparams=colorspace=bt470bg:color_primaries=bt470bg:color_trc=bt470bg:range=tv -c:v mpeg2video -b:v 6M -maxrate 9M -bufsize 1835k -g 12 -bf 2 -flags +ilme+ildct -top 1 -aspect 16:9 -colorspace bt470bg -color_primaries bt470bg -color_trc gamma28 -c:a ac3 -b:a 448k -f dvd source.vob",
            soft_video("720x576", "25", 3.0, INTERLACED_BLUR),
            surround(3.0)
        )],
        1.0,
        TRANSCODE,
        Colour::Sd,
        None,
    )
}

/// An HDV camcorder: MPEG-2 1440x1080 with 4:3 pixels (16:9 picture) and
/// MPEG-1 Layer II audio in a transport stream.
pub fn hdv_mpeg2_1440x1080_ts() -> Kind {
    kind(
        "hdv_mpeg2_1440x1080_ts",
        "source.m2t",
        &[format!(
            "-f lavfi -i testsrc2=size=1920x1080:rate=25:duration=1.5,gblur=sigma=1.5 {} -vf scale=1440:1080,setsar=4/3,{} -c:v mpeg2video -b:v 25M -g 12 -bf 2 {TAGS_709} -c:a mp2 -ac 2 -b:a 384k -f mpegts source.m2t",
            sine(440, 48000, 1.5),
            bt709("yuv420p")
        )],
        0.5,
        TRANSCODE,
        Colour::Bt709,
        A440,
    )
}

/// A MiniDV camcorder captured to AVI: DV 720x480 4:1:1 at 29.97, 16:9
/// anamorphic (SAR 32:27), 16-bit PCM.
pub fn dv_ntsc_widescreen_avi() -> Kind {
    kind(
        "dv_ntsc_widescreen_avi",
        "source.avi",
        &[format!(
            "{} {} -vf format=yuv411p -c:v dvvideo -aspect 16:9 -c:a pcm_s16le -ac 2 source.avi",
            soft_video("720x480", "30000/1001", 2.0, INTERLACED_BLUR),
            sine(440, 48000, 2.0)
        )],
        1.0,
        TRANSCODE,
        Colour::Sd,
        A440,
    )
}

/// Full-range H.264 (yuvj420p, `color_range pc`), as some phones and
/// screen recorders write it: browsers honour the flag, so it is copied
/// with its range; frames and poster are converted from full range.
pub fn h264_full_range() -> Kind {
    kind(
        "h264_full_range",
        "source.mp4",
        &[format!(
            "{} {} -vf scale=out_color_matrix=bt709:out_range=pc,format=yuvj420p,setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=pc -c:v libx264 -preset veryfast -colorspace bt709 -color_primaries bt709 -color_trc bt709 -color_range pc -c:a aac source.mp4",
            video("640x360", "30", 2.0),
            sine(440, 48000, 2.0)
        )],
        1.0,
        REMUX,
        Colour::FullRangeBt709,
        A440,
    )
}

/// An editor's export (Premiere, Resolve, HandBrake): BT.709-tagged H.264
/// 1080p with AAC, `moov` first.
pub fn h264_bt709_1080p() -> Kind {
    kind(
        "h264_bt709_1080p",
        "source.mp4",
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast -profile:v main {TAGS_709} -c:a aac -ac 2 -movflags +faststart source.mp4",
            video("1920x1080", "25", 2.0),
            sine(440, 48000, 2.0),
            bt709("yuv420p")
        )],
        1.0,
        REMUX,
        Colour::Bt709,
        A440,
    )
}

/// H.264 with 5.1 AAC (a home-theatre rip or a camera with a surround mic).
pub fn aac_5_1_surround() -> Kind {
    kind(
        "aac_5_1_surround",
        "source.mp4",
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast {TAGS_709} -c:a aac -b:a 384k source.mp4",
            video("1280x720", "25", 2.0),
            surround(2.0),
            bt709("yuv420p")
        )],
        1.0,
        EITHER,
        Colour::Bt709,
        None,
    )
}

/// Matroska with two audio tracks: the default (440 Hz) and a commentary
/// (880 Hz) that must not be the one kept.
pub fn mkv_two_audio_tracks() -> Kind {
    kind(
        "mkv_two_audio_tracks",
        "source.mkv",
        &[format!(
            "{} {} {} -map 0:v -map 1:a -map 2:a -vf {} -c:v libx264 -preset veryfast {TAGS_709} -c:a aac -ac 2 -disposition:a:0 default -disposition:a:1 0 -metadata:s:a:0 language=eng -metadata:s:a:1 title=Commentary source.mkv",
            video("640x360", "30", 3.0),
            sine(440, 48000, 3.0),
            sine(880, 48000, 3.0),
            bt709("yuv420p")
        )],
        1.0,
        REMUX,
        Colour::Bt709,
        A440,
    )
}

/// A camera or editor master: ProRes 422 HQ 10-bit, 24-bit PCM and a
/// timecode track starting at 01:00:00:00, in QuickTime.
pub fn prores_422hq_pcm24_timecode() -> Kind {
    kind(
        "prores_422hq_pcm24_timecode",
        "source.mov",
        &[format!(
            "{} {} -vf {} -c:v prores_ks -profile:v 3 -vendor apl0 {TAGS_709} -c:a pcm_s24le -ac 2 -timecode 01:00:00:00 source.mov",
            video("1280x720", "25", 2.0),
            sine(440, 48000, 2.0),
            bt709("yuv422p10le")
        )],
        1.0,
        TRANSCODE,
        Colour::Bt709,
        A440,
    )
}

/// Windows Media: WMV2 + WMA2 in ASF.
pub fn wmv2_wma2_asf() -> Kind {
    kind(
        "wmv2_wma2_asf",
        "source.wmv",
        &[format!(
            "{} {} -c:v wmv2 -b:v 1M -c:a wmav2 -b:a 128k source.wmv",
            video("320x240", "25", 3.0),
            sine(440, 44100, 3.0)
        )],
        1.0,
        TRANSCODE,
        Colour::Sd,
        A440,
    )
}

/// Flash video: Sorenson Spark (FLV1) + MP3.
pub fn flv1_mp3_flash() -> Kind {
    kind(
        "flv1_mp3_flash",
        "source.flv",
        &[format!(
            "{} {} -c:v flv1 -b:v 1M -c:a libmp3lame -b:a 128k source.flv",
            video("320x240", "25", 3.0),
            sine(440, 44100, 3.0)
        )],
        1.0,
        TRANSCODE,
        Colour::Sd,
        A440,
    )
}

/// An old feature phone: H.263 QCIF in 3GP (with AAC: this ffmpeg has no
/// AMR encoder). H.263's standard picture formats have 12:11 pixels, which
/// GStreamer applies and ffmpeg does not: either display is accepted.
pub fn h263_3gp_aac() -> Kind {
    let mut k = kind(
        "h263_3gp_aac",
        "source.3gp",
        &[format!(
            "{} {} -c:v h263 -b:v 256k -c:a aac -ac 1 -b:a 32k source.3gp",
            video("176x144", "15", 3.0),
            sine(440, 22050, 3.0)
        )],
        1.0,
        TRANSCODE,
        Colour::Sd,
        A440,
    );
    k.spec_sar = Some((12.0, 11.0));
    k
}

/// A webcam or compact camera: Motion JPEG (full-range 4:2:2) + PCM in AVI.
pub fn mjpeg_avi_pcm() -> Kind {
    kind(
        "mjpeg_avi_pcm",
        "source.avi",
        &[format!(
            "{} {} -vf format=yuvj422p -c:v mjpeg -q:v 3 -c:a pcm_s16le -ac 1 source.avi",
            video("640x480", "30", 2.0),
            sine(440, 16000, 2.0)
        )],
        1.0,
        TRANSCODE,
        Colour::Sd,
        A440,
    )
}

/// A screen recorder stopped its video before its audio: 3 s of video,
/// 5 s of audio.
pub fn audio_longer_than_video() -> Kind {
    kind(
        "audio_longer_than_video",
        "source.mp4",
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast {TAGS_709} -c:a aac -ac 2 source.mp4",
            video("640x360", "30", 3.0),
            sine(440, 48000, 5.0),
            bt709("yuv420p")
        )],
        1.0,
        REMUX,
        Colour::Bt709,
        A440,
    )
}

/// A capture whose audio device started 1.5 s after the video: Matroska,
/// H.264 + Opus.
pub fn audio_starts_late_mkv_opus() -> Kind {
    kind(
        "audio_starts_late_mkv_opus",
        "source.mkv",
        &[format!(
            "{} -itsoffset 1.5 {} -vf {} -c:v libx264 -preset veryfast {TAGS_709} -c:a libopus -ac 2 source.mkv",
            video("640x360", "30", 3.0),
            sine(440, 48000, 1.5),
            bt709("yuv420p")
        )],
        1.0,
        EITHER,
        Colour::Bt709,
        A440,
    )
}

/// An edit whose picture starts 1 s after its sound: an MP4 edit list with
/// an empty edit before the video.
pub fn video_starts_late_edit_list() -> Kind {
    kind(
        "video_starts_late_edit_list",
        "source.mp4",
        &[format!(
            "{} {} -vf setpts=PTS+1/TB,{} -c:v libx264 -preset veryfast {TAGS_709} -c:a aac -ac 2 source.mp4",
            video("640x360", "30", 2.0),
            sine(440, 48000, 3.0),
            bt709("yuv420p")
        )],
        1.0,
        REMUX,
        Colour::Bt709,
        A440,
    )
}

/// An 8K phone or camera clip: HEVC 7680x4320 (short and at 5 fps to stay
/// cheap; a smooth picture, so the 4:1 downscale compares fairly).
pub fn uhd_8k_hevc() -> Kind {
    kind(
        "uhd_8k_hevc",
        "source.mp4",
        &[format!(
            "{} {} -vf scale=7680:4320:flags=bicubic,{} -c:v libx265 -preset ultrafast -x265-params log-level=error:frame-threads=1 -tag:v hvc1 {TAGS_709} -c:a aac -ac 2 source.mp4",
            video("1920x1080", "5", 1.0),
            sine(440, 48000, 1.0),
            bt709("yuv420p")
        )],
        0.5,
        TRANSCODE,
        Colour::Bt709,
        A440,
    )
}

/// A single-frame video (a still exported as a movie).
pub fn single_frame() -> Kind {
    kind(
        "single_frame",
        "source.mp4",
        &[format!(
            "{} -vf {} -frames:v 1 -c:v libx264 -preset veryfast {TAGS_709} source.mp4",
            video("640x360", "25", 1.0),
            bt709("yuv420p")
        )],
        0.5,
        REMUX,
        Colour::Bt709,
        None,
    )
}

/// A phone or action camera at 1080p60.
pub fn h264_1080p60() -> Kind {
    kind(
        "h264_1080p60",
        "source.mp4",
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset ultrafast -profile:v high {TAGS_709} -c:a aac -ac 2 source.mp4",
            video("1920x1080", "60", 1.0),
            sine(440, 48000, 1.0),
            bt709("yuv420p")
        )],
        0.5,
        REMUX,
        Colour::Bt709,
        A440,
    )
}

/// HDR from a phone or camera: HEVC Main 10, BT.2020 with the HLG transfer.
pub fn hdr_hevc_hlg_10bit() -> Kind {
    kind(
        "hdr_hevc_hlg_10bit",
        "source.mp4",
        &[format!(
            "{} {} -vf scale=out_color_matrix=bt2020:out_range=tv,format=yuv420p10le,setparams=colorspace=bt2020nc:color_primaries=bt2020:color_trc=arib-std-b67:range=tv -c:v libx265 -preset ultrafast -profile:v main10 -x265-params log-level=error:colorprim=bt2020:transfer=arib-std-b67:colormatrix=bt2020nc -tag:v hvc1 -c:a aac -ac 2 source.mp4",
            video("1280x720", "25", 1.5),
            sine(440, 48000, 1.5)
        )],
        0.5,
        TRANSCODE,
        Colour::HlgToBt709,
        A440,
    )
}

/// Early WebM: VP8 + Vorbis.
pub fn vp8_vorbis_webm() -> Kind {
    kind(
        "vp8_vorbis_webm",
        "source.webm",
        &[format!(
            "{} {} -c:v libvpx -b:v 1M -deadline realtime -cpu-used 8 -c:a libvorbis source.webm",
            video("320x240", "25", 3.0),
            sine(440, 48000, 3.0)
        )],
        1.0,
        TRANSCODE,
        Colour::Sd,
        A440,
    )
}

/// VP9 + Opus in WebM (YouTube downloads, browser exports).
pub fn vp9_opus_webm() -> Kind {
    kind(
        "vp9_opus_webm",
        "source.webm",
        &[format!(
            "{} {} -vf {} -c:v libvpx-vp9 -b:v 1M -deadline realtime -cpu-used 8 -row-mt 1 {TAGS_709} -c:a libopus -ac 2 source.webm",
            video("640x360", "30", 2.0),
            sine(440, 48000, 2.0),
            bt709("yuv420p")
        )],
        1.0,
        TRANSCODE,
        Colour::Bt709,
        A440,
    )
}

/// A broadcast recording: H.264 + AAC (ADTS) in MPEG-TS at 720p50, its
/// clock starting at 11.4 s rather than zero.
pub fn mpegts_h264_aac_broadcast() -> Kind {
    kind(
        "mpegts_h264_aac_broadcast",
        "source.ts",
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast -profile:v main -g 25 {TAGS_709} -c:a aac -ac 2 -output_ts_offset 10 -f mpegts source.ts",
            video("1280x720", "50", 2.0),
            sine(440, 48000, 2.0),
            bt709("yuv420p")
        )],
        1.0,
        REMUX,
        Colour::Bt709,
        A440,
    )
}

/// A DSLR or mirrorless camera: H.264 + 16-bit PCM in QuickTime.
pub fn mov_h264_pcm_camera() -> Kind {
    kind(
        "mov_h264_pcm_camera",
        "source.mov",
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast -profile:v high -g 15 {TAGS_709} -c:a pcm_s16le -ac 2 source.mov",
            video("1280x720", "25", 2.0),
            sine(440, 48000, 2.0),
            bt709("yuv420p")
        )],
        1.0,
        EITHER,
        Colour::Bt709,
        A440,
    )
}

/// H.264 with MP3 audio in MP4 (older screen recorders and converters).
pub fn mp4_h264_mp3() -> Kind {
    kind(
        "mp4_h264_mp3",
        "source.mp4",
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast {TAGS_709} -c:a libmp3lame -ac 2 -b:a 128k source.mp4",
            video("640x360", "30", 2.0),
            sine(440, 44100, 2.0),
            bt709("yuv420p")
        )],
        1.0,
        EITHER,
        Colour::Bt709,
        A440,
    )
}

/// H.264 with Opus audio in MP4.
pub fn mp4_h264_opus() -> Kind {
    kind(
        "mp4_h264_opus",
        "source.mp4",
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast {TAGS_709} -c:a libopus -ac 2 source.mp4",
            video("640x360", "30", 2.0),
            sine(440, 48000, 2.0),
            bt709("yuv420p")
        )],
        1.0,
        EITHER,
        Colour::Bt709,
        A440,
    )
}

/// Variable frame rate in Matroska: 30 fps for 1.5 s, then frames twice as
/// far apart (a game capture or screen recorder dropping to 15 fps).
pub fn mkv_vfr_frame_times_double() -> Kind {
    let times = "settb=1/1000,setpts='if(lt(N,45),N/30,1.5+(N-45)/15)/TB'";
    kind(
        "mkv_vfr_frame_times_double",
        "source.mkv",
        &[format!(
            "{} {} -vf {times},{} -fps_mode passthrough -enc_time_base 1:1000 -c:v libx264 -preset veryfast {TAGS_709} -c:a aac -ac 2 source.mkv",
            video("640x360", "30", 2.25),
            sine(440, 48000, 3.0),
            bt709("yuv420p")
        )],
        1.0,
        REMUX,
        Colour::Bt709,
        A440,
    )
}

/// A cropped screen capture with odd dimensions: VP9 321x241, no audio.
pub fn odd_size_321x241_vp9() -> Kind {
    kind(
        "odd_size_321x241_vp9",
        "source.webm",
        &["-f lavfi -i testsrc2=size=322x242:rate=25:duration=2,format=rgb24,crop=321:241:0:0,gblur=sigma=2.4 -pix_fmt yuv420p -c:v libvpx-vp9 -b:v 1M -deadline realtime -cpu-used 8 source.webm".into()],
        1.0,
        TRANSCODE,
        Colour::Sd,
        None,
    )
}

/// An XviD AVI from the file-sharing era: MPEG-4 Part 2 with B-frames,
/// FourCC `XVID`, + MP3. (ffmpeg's own MPEG-4 encoder: libxvid's B-frames
/// in ffmpeg's AVI muxer leave empty chunks no real file has.)
pub fn xvid_avi_mp3() -> Kind {
    kind(
        "xvid_avi_mp3",
        "source.avi",
        &[format!(
            "{} {} -c:v mpeg4 -vtag XVID -q:v 3 -bf 2 -c:a libmp3lame -ac 2 -b:a 128k source.avi",
            video("640x480", "25", 3.0),
            sine(440, 44100, 3.0)
        )],
        1.0,
        TRANSCODE,
        Colour::Sd,
        A440,
    )
}

/// Theora + Vorbis in Ogg (Wikimedia Commons, old Firefox recordings).
pub fn theora_vorbis_ogv() -> Kind {
    kind(
        "theora_vorbis_ogv",
        "source.ogv",
        &[format!(
            "{} {} -c:v libtheora -q:v 8 -c:a libvorbis source.ogv",
            video("320x240", "25", 3.0),
            sine(440, 44100, 3.0)
        )],
        1.0,
        TRANSCODE,
        Colour::Sd,
        A440,
    )
}

/// A browser's MediaRecorder: VP8 + Opus in live WebM, with no duration in
/// the header and no cues.
pub fn webm_mediarecorder_no_duration() -> Kind {
    kind(
        "webm_mediarecorder_no_duration",
        "source.webm",
        &[format!(
            "{} {} -c:v libvpx -b:v 1M -deadline realtime -cpu-used 8 -c:a libopus -ac 2 -live 1 -f webm source.webm",
            video("640x360", "30", 2.0),
            sine(440, 48000, 2.0)
        )],
        1.0,
        TRANSCODE,
        Colour::Sd,
        A440,
    )
}

/// A camera or recorder writing 96 kHz 24-bit PCM in MOV: qtdemux stamps
/// every chunk of it with time 0, so the audio must be re-timed.
pub fn mov_h264_pcm96k_24bit() -> Kind {
    kind(
        "mov_h264_pcm96k_24bit",
        "source.mov",
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast -g 15 {TAGS_709} -c:a pcm_s24le -ac 2 source.mov",
            video("640x360", "25", 2.0),
            sine(440, 96000, 2.0),
            bt709("yuv420p")
        )],
        1.0,
        EITHER,
        Colour::Bt709,
        A440,
    )
}

/// H.264 in AVI (old converters, some IP cameras): AVI keeps no
/// presentation times for an MP4 to copy, so it is decoded and encoded.
pub fn h264_in_avi_mp3() -> Kind {
    kind(
        "h264_in_avi_mp3",
        "source.avi",
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast -bf 0 {TAGS_709} -c:a libmp3lame -ac 2 source.avi",
            video("640x360", "25", 2.0),
            sine(440, 44100, 2.0),
            bt709("yuv420p")
        )],
        1.0,
        TRANSCODE,
        Colour::Bt709,
        A440,
    )
}

/// A music video or a download with its cover art muxed in: ffmpeg writes
/// an attached picture into Matroska as a one-frame MJPEG track, here the
/// first video track and larger than the video itself.
pub fn mkv_cover_art_first() -> Kind {
    kind(
        "mkv_cover_art_first",
        "source.mkv",
        &[
            format!(
                "{} {} -vf {} -c:v libx264 -preset veryfast -g 30 {TAGS_709} -c:a aac -ac 2 video.mp4",
                video("640x360", "30", 2.0),
                sine(440, 48000, 2.0),
                bt709("yuv420p")
            ),
            "-f lavfi -i testsrc=size=720x720:rate=1:duration=1 -frames:v 1 cover.jpg".into(),
            "-i video.mp4 -i cover.jpg -map 1 -map 0 -c copy -disposition:0 attached_pic source.mkv"
                .into(),
        ],
        1.0,
        REMUX,
        Colour::Bt709,
        A440,
    )
}

/// An animation or motion-graphics export (After Effects, Blender,
/// Premiere's "QuickTime PNG"): lossless PNG frames with alpha in MOV,
/// 16-bit PCM.
pub fn mov_png_rgba_export() -> Kind {
    kind(
        "mov_png_rgba_export",
        "source.mov",
        &[format!(
            "{} {} -pix_fmt rgba -c:v png -c:a pcm_s16le -ac 2 source.mov",
            video("640x360", "25", 2.0),
            sine(440, 48000, 2.0)
        )],
        1.0,
        TRANSCODE,
        Colour::Sd,
        A440,
    )
}

fn mirrored_phone(name: &'static str, patch: Patch) -> Kind {
    let mut k = kind(
        name,
        "source.mp4",
        &[format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast -profile:v high -bf 2 -g 30 {TAGS_709} -c:a aac -ac 2 -movflags +faststart source.mp4",
            video("640x360", "30", 2.0),
            sine(440, 48000, 2.0),
            bt709("yuv420p")
        )],
        1.0,
        TRANSCODE,
        Colour::Bt709,
        A440,
    );
    k.patch = Some(patch);
    k
}

/// A front (selfie) camera's video kept mirrored and held sideways: the
/// track matrix `[0 -1; -1 0]`, mirrored then turned 90° (what ffmpeg 6's
/// `-display_rotation` with `-display_hflip` writes; ffmpeg shows it with
/// `transpose=clock_flip`). qtdemux 1.22 has no tag for this one.
pub fn phone_mirrored_transverse() -> Kind {
    mirrored_phone("phone_mirrored_transverse", |p| {
        crate::ff::set_display_matrix(p, [0, -1, -1, 0])
    })
}

/// The other mirrored quarter turn, `[0 1; 1 0]` (ffmpeg shows it with
/// `transpose=cclock_flip`): qtdemux tags it `flip-rotate-270`.
pub fn phone_mirrored_transpose() -> Kind {
    mirrored_phone("phone_mirrored_transpose", |p| {
        crate::ff::set_display_matrix(p, [0, 1, 1, 0])
    })
}

/// A broadcast recording across a programme boundary: H.264 + AAC in
/// MPEG-TS whose audio switches from 48 kHz to 44.1 kHz halfway (two
/// recordings joined, timestamps running on).
pub fn mpegts_aac_rate_switch() -> Kind {
    let part = |rate: u32, offset: &str, name: &str| {
        format!(
            "{} {} -vf {} -c:v libx264 -preset veryfast -profile:v main -g 25 {TAGS_709} -c:a aac -ac 2 -output_ts_offset {offset} -f mpegts {name}",
            video("640x360", "25", 2.0),
            sine(440, rate, 2.0),
            bt709("yuv420p")
        )
    };
    kind(
        "mpegts_aac_rate_switch",
        "source.ts",
        &[
            part(48000, "0", "part1.ts"),
            // Later by the first part's B-frame delay (80 ms), and a
            // little more, so that the parts do not overlap at the join.
            part(44100, "2.12", "part2.ts"),
            "-i concat:part1.ts|part2.ts -c copy -f mpegts source.ts".into(),
        ],
        1.0,
        REMUX,
        Colour::Bt709,
        A440,
    )
}
