//! The hostile files, made at test time: ffmpeg's encoders for the media
//! they start from, byte patches for the lies (durations, picture sizes,
//! box sizes), and plain text for playlists and other things that are
//! not video.

use std::path::Path;
use std::process::Command;

/// A file ffmpeg writes from its test sources: `input` are the lavfi
/// inputs and `args` everything between them and the output.
pub fn ffmpeg(dir: &Path, name: &str, input: &[&str], args: &[&str]) -> Vec<u8> {
    let out = dir.join(name);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y"]);
    for i in input {
        cmd.args(["-f", "lavfi", "-i", i]);
    }
    let status = cmd.args(args).arg(&out).status().expect("run ffmpeg");
    assert!(status.success(), "ffmpeg made {name}");
    std::fs::read(&out).expect("read what ffmpeg made")
}

/// A small ordinary video: H.264 + AAC in MP4 with `moov` first.
pub fn mp4(dir: &Path, name: &str, seconds: u32) -> Vec<u8> {
    let video = format!("testsrc=size=320x240:rate=25:duration={seconds}");
    let audio = format!("sine=frequency=440:duration={seconds}");
    ffmpeg(
        dir,
        name,
        &[&video, &audio],
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-movflags",
            "+faststart",
        ],
    )
}

/// Where `needle` first occurs in `bytes`.
pub fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

/// Makes an MP4's movie header (`mvhd`) declare `seconds`.
pub fn claim_mp4_duration(mut mp4: Vec<u8>, seconds: u64) -> Vec<u8> {
    let body = find(&mp4, b"mvhd") + 4;
    let version = mp4[body];
    let (scale_at, duration_at) = if version == 1 { (20, 24) } else { (12, 16) };
    let scale = u32::from_be_bytes(
        mp4[body + scale_at..body + scale_at + 4]
            .try_into()
            .expect("4"),
    );
    let units = seconds * u64::from(scale);
    if version == 1 {
        mp4[body + duration_at..body + duration_at + 8].copy_from_slice(&units.to_be_bytes());
    } else {
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        mp4[body + duration_at..body + duration_at + 4].copy_from_slice(&units.to_be_bytes());
    }
    mp4
}

/// Makes a top-level box of type `kind` declare a 64-bit size of 2^62.
pub fn huge_box(mut mp4: Vec<u8>, kind: &[u8; 4]) -> Vec<u8> {
    let at = find(&mp4, kind) - 4;
    mp4[at..at + 4].copy_from_slice(&1u32.to_be_bytes());
    // A 64-bit size follows the type; the 8 bytes overwrite the start of
    // the box body, as a forged size would.
    mp4[at + 8..at + 16].copy_from_slice(&(1u64 << 62).to_be_bytes());
    mp4
}

/// Makes the Matroska `Duration` element claim `ms` milliseconds.
pub fn claim_mkv_duration(mut mkv: Vec<u8>, ms: f64) -> Vec<u8> {
    let at = find(&mkv, &[0x44, 0x89]);
    match mkv[at + 2] {
        0x88 => mkv[at + 3..at + 11].copy_from_slice(&ms.to_be_bytes()),
        0x84 => mkv[at + 3..at + 7].copy_from_slice(&(ms as f32).to_be_bytes()),
        size => panic!("Duration of unexpected size {size:#x}"),
    }
    mkv
}

/// Makes every JPEG frame header (SOF0) claim `w`×`h`.
pub fn claim_jpeg_size(mut bytes: Vec<u8>, w: u16, h: u16) -> Vec<u8> {
    let mut i = 0;
    while i + 9 < bytes.len() {
        if bytes[i] == 0xff && bytes[i + 1] == 0xc0 {
            bytes[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
            bytes[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
        }
        i += 1;
    }
    bytes
}

/// Makes an AVI's main and stream headers claim `w`×`h` (the frames
/// themselves stay small).
pub fn claim_avi_size(mut avi: Vec<u8>, w: u32, h: u32) -> Vec<u8> {
    // avih: 8 u32 fields in, width and height.
    let avih = find(&avi, b"avih") + 8;
    avi[avih + 32..avih + 36].copy_from_slice(&w.to_le_bytes());
    avi[avih + 36..avih + 40].copy_from_slice(&h.to_le_bytes());
    // strf (BITMAPINFOHEADER): size, then width and height.
    let strf = find(&avi, b"strf") + 8;
    avi[strf + 4..strf + 8].copy_from_slice(&w.to_le_bytes());
    avi[strf + 8..strf + 12].copy_from_slice(&h.to_le_bytes());
    avi
}

/// The first `fraction` of `bytes`.
pub fn cut(bytes: &[u8], fraction: f64) -> Vec<u8> {
    bytes[..(bytes.len() as f64 * fraction) as usize].to_vec()
}

/// `n` bytes of a fixed pseudo-random sequence (xorshift; the same every run).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `bytes` with `count` bytes from `from` on overwritten by noise.
pub fn scribble(mut bytes: Vec<u8>, from: usize, count: usize) -> Vec<u8> {
    let end = (from + count).min(bytes.len());
    bytes[from..end].copy_from_slice(&noise(end - from, from as u64));
    bytes
}

/// An HLS media playlist, a master playlist, a DASH manifest, a Smooth
/// Streaming manifest, a PLS playlist and an SDP session, each pointing at
/// `http://{at}/`.
pub fn playlists(at: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("playlist_hls_media", format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nhttp://{at}/0.ts\n#EXT-X-ENDLIST\n"
        )),
        ("playlist_hls_master", format!(
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nhttp://{at}/low.m3u8\n"
        )),
        ("playlist_dash", format!(
            "<?xml version=\"1.0\"?><MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"static\" \
             mediaPresentationDuration=\"PT10S\"><Period><AdaptationSet mimeType=\"video/mp4\">\
             <Representation id=\"1\" bandwidth=\"1\"><BaseURL>http://{at}/v.mp4</BaseURL>\
             </Representation></AdaptationSet></Period></MPD>\n"
        )),
        ("playlist_smooth", format!(
            "<?xml version=\"1.0\"?><SmoothStreamingMedia MajorVersion=\"2\" MinorVersion=\"0\" \
             Duration=\"100000000\"><StreamIndex Type=\"video\" Url=\"http://{at}/{{bitrate}}/{{start time}}\" \
             Chunks=\"1\"><QualityLevel Bitrate=\"1\" FourCC=\"H264\"/><c d=\"100000000\"/></StreamIndex>\
             </SmoothStreamingMedia>\n"
        )),
        ("playlist_pls", format!("[playlist]\nFile1=http://{at}/v.mp4\nNumberOfEntries=1\n")),
        ("session_sdp", format!(
            "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 {}\nt=0 0\nm=video 5004 RTP/AVP 96\n\
             a=rtpmap:96 H264/90000\n",
            at.split(':').next().unwrap_or("127.0.0.1")
        )),
    ]
    .into_iter()
    .map(|(n, s)| (n, s.into_bytes()))
    .collect()
}
