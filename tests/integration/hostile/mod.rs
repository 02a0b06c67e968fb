//! The hostile corpus (issue 10): files made at test time to lie, flood,
//! break off or not be video at all, each uploaded to one real server.
//! Each row is held to its documented outcome (the status and code of a
//! refused upload, or the state and failure code the video ends in), with
//! nothing left behind, and all the while `/healthz` is asked every 100 ms
//! from another thread and must answer 200 within a second. The server's
//! peak memory is reported. `make test` runs the rows marked quick;
//! `make test-hostile` (`VIDMILL_HOSTILE=all`) runs every row.

mod files;

use std::io::Write;
use std::time::Instant;

use crate::support::*;
use files::*;

/// How a row must end.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The upload is answered with this status and code; nothing is kept.
    Refused(u16, &'static str),
    /// The video becomes ready.
    Ready,
    /// The video fails with this code.
    Failed(&'static str),
}

struct Row {
    name: &'static str,
    bytes: Vec<u8>,
    query: &'static str,
    expect: Expect,
    /// In the short form that `make test` runs.
    quick: bool,
}

fn row(name: &'static str, bytes: Vec<u8>, expect: Expect) -> Row {
    Row {
        name,
        bytes,
        query: "",
        expect,
        quick: false,
    }
}

impl Row {
    fn query(mut self, q: &'static str) -> Self {
        self.query = q;
        self
    }

    fn quick(mut self) -> Self {
        self.quick = true;
        self
    }
}

use Expect::*;

const UNSUPPORTED: Expect = Refused(415, "unsupported-media");
const OVER_LIMIT: Expect = Refused(422, "limit-exceeded");

/// Every row. Made in a second or two each.
fn rows(dir: &std::path::Path, trap: &str) -> Vec<Row> {
    let mp4_6s = mp4(dir, "base.mp4", 6);
    let mp4_tail = ffmpeg(
        dir,
        "tail.mp4",
        &["testsrc=size=320x240:rate=25:duration=4"],
        &["-c:v", "libx264", "-preset", "ultrafast"],
    );
    let webm_2s = ffmpeg(
        dir,
        "base.webm",
        &["testsrc=size=320x240:rate=25:duration=2", "sine=duration=2"],
        &[
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-c:a",
            "libvorbis",
        ],
    );
    let mkv_4s = ffmpeg(
        dir,
        "base.mkv",
        &["testsrc=size=320x240:rate=25:duration=4", "sine=duration=4"],
        &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
    );
    let ts_4s = ffmpeg(
        dir,
        "base.ts",
        &["testsrc=size=320x240:rate=25:duration=4", "sine=duration=4"],
        &["-c:v", "mpeg2video", "-c:a", "mp2"],
    );
    let mjpeg_avi = ffmpeg(
        dir,
        "base.avi",
        &["testsrc=size=64x64:rate=5:duration=1"],
        &["-c:v", "mjpeg"],
    );
    let mut rows = vec![
        // Lying headers.
        row(
            "mkv_declares_1e12_seconds",
            claim_mkv_duration(webm_2s.clone(), 1e15),
            Ready,
        )
        .query("frames_every=0.5")
        .quick(),
        // GStreamer 1.22's qtdemux finds no playable stream when the movie
        // header disagrees with its tracks.
        row(
            "mp4_movie_header_declares_49_days",
            claim_mp4_duration(mp4_6s.clone(), 49 * 86_400),
            UNSUPPORTED,
        )
        .quick(),
        row(
            "mp4_movie_header_declares_11_hours",
            claim_mp4_duration(mp4_6s.clone(), 11 * 3600),
            UNSUPPORTED,
        )
        .query("frames_every=1"),
        row(
            "mjpeg_frames_claim_30000x30000",
            claim_jpeg_size(mjpeg_avi.clone(), 30000, 30000),
            OVER_LIMIT,
        )
        .quick(),
        // The pictures are read from the frames, which are small.
        row(
            "avi_headers_claim_30000x30000",
            claim_avi_size(mjpeg_avi.clone(), 30000, 30000),
            Ready,
        ),
        row(
            "mp4_box_size_2_pow_62",
            huge_box(mp4_6s.clone(), b"moov"),
            UNSUPPORTED,
        ),
        // A box that ends past the file's end: cut off, or lying.
        row(
            "mp4_mdat_size_2_pow_62",
            huge_box(mp4_6s.clone(), b"mdat"),
            UNSUPPORTED,
        ),
        // Decompression bombs and floods.
        row(
            "h264_8192x8192_one_frame",
            ffmpeg(
                dir,
                "big.mp4",
                &["color=c=gray:size=8192x8192:rate=1:duration=1"],
                &["-c:v", "libx264", "-preset", "ultrafast"],
            ),
            OVER_LIMIT,
        )
        .quick(),
        row(
            "mpeg4_1000_fps",
            ffmpeg(
                dir,
                "fast.mp4",
                &["testsrc=size=32x32:rate=1000:duration=1"],
                &["-c:v", "mpeg4"],
            ),
            OVER_LIMIT,
        ),
        row(
            "frames_every_0_01_over_300_s",
            ffmpeg(
                dir,
                "long.mkv",
                &["color=c=black:size=32x32:rate=1:duration=300"],
                &["-c:v", "mpeg4"],
            ),
            OVER_LIMIT,
        )
        .query("frames_every=0.01")
        .quick(),
        row(
            "a_hundred_audio_tracks",
            ffmpeg(
                dir,
                "tracks.mkv",
                &["testsrc=size=64x64:rate=5:duration=1", "sine=duration=1"],
                &hundred_tracks(),
            ),
            Ready,
        ),
        // Breaks.
        row("mp4_cut_at_10_percent", cut(&mp4_6s, 0.1), UNSUPPORTED),
        row("mp4_cut_at_half", cut(&mp4_6s, 0.5), UNSUPPORTED).quick(),
        row(
            "mp4_moov_at_end_cut_at_90_percent",
            cut(&mp4_tail, 0.9),
            UNSUPPORTED,
        ),
        row("mkv_cut_at_half", cut(&mkv_4s, 0.5), Ready),
        row("ts_cut_at_half", cut(&ts_4s, 0.5), Ready),
        row("webm_only_its_header", cut(&webm_2s, 0.01), UNSUPPORTED),
        row(
            "mp4_moov_scribbled",
            scribble(mp4_6s.clone(), find(&mp4_6s, b"stsz"), 512),
            UNSUPPORTED,
        ),
        // Read as a transport stream, as ffprobe reads it: vidmill's own
        // type finder finds the packets behind the garbage and tsdemux
        // skips to them (GStreamer's finder found a bare MPEG-2 stream
        // inside them, without the audio, and verification failed it).
        row(
            "garbage_then_ts",
            [noise(65_536, 7), ts_4s.clone()].concat(),
            Ready,
        ),
        row(
            "garbage_then_mp4",
            [noise(65_536, 9), mp4_6s.clone()].concat(),
            UNSUPPORTED,
        ),
        // Not video.
        row("empty", Vec::new(), Refused(400, "empty-upload")).quick(),
        row("one_byte", vec![0x47], UNSUPPORTED),
        row(
            "text",
            b"just some text, not a video\n".repeat(100),
            UNSUPPORTED,
        ),
        row(
            "html",
            b"<!doctype html><html><body><video src=x></video></body></html>".to_vec(),
            UNSUPPORTED,
        ),
        row(
            "png_still",
            ffmpeg(
                dir,
                "still.png",
                &["testsrc=size=64x64:rate=1:duration=1"],
                &["-frames:v", "1"],
            ),
            UNSUPPORTED,
        ),
        row(
            "gif_animation",
            ffmpeg(
                dir,
                "anim.gif",
                &["testsrc=size=64x64:rate=5:duration=1"],
                &[],
            ),
            UNSUPPORTED,
        ),
        row(
            "mp3_audio_only",
            ffmpeg(dir, "a.mp3", &["sine=duration=2"], &["-c:a", "libmp3lame"]),
            UNSUPPORTED,
        ),
        row("subtitles_only", ffmpeg_srt(dir), UNSUPPORTED),
        row(
            "zip_archive",
            {
                let mut zip = zip_bytes();
                zip.extend(noise(100, 3));
                zip
            },
            UNSUPPORTED,
        ),
        row(
            "mp4_with_a_zip_appended",
            [mp4_6s.clone(), zip_bytes()].concat(),
            Ready,
        ),
        row(
            "jpeg_with_an_mp4_appended",
            [
                ffmpeg(
                    dir,
                    "still.jpg",
                    &["testsrc=size=64x64:rate=1:duration=1"],
                    &["-frames:v", "1"],
                ),
                mp4_6s.clone(),
            ]
            .concat(),
            UNSUPPORTED,
        ),
        row(
            "mkv_video_track_without_frames",
            ffmpeg(
                dir,
                "noframes.mkv",
                &["testsrc=size=64x64:rate=5:duration=1"],
                &["-c:v", "mpeg4", "-frames:v", "0"],
            ),
            UNSUPPORTED,
        ),
        // Odd shapes and times.
        // Smaller than 16 pixels on a side: no real video.
        row(
            "h264_2x2",
            ffmpeg(
                dir,
                "tiny.mp4",
                &["testsrc=size=2x2:rate=5:duration=1"],
                &["-c:v", "libx264", "-preset", "ultrafast"],
            ),
            UNSUPPORTED,
        ),
        row(
            "h264_2x2000",
            ffmpeg(
                dir,
                "tall.mp4",
                &["testsrc=size=2x2000:rate=5:duration=1"],
                &["-c:v", "libx264", "-preset", "ultrafast"],
            ),
            UNSUPPORTED,
        ),
        // GStreamer 1.22's qtdemux finds no playable stream behind an edit
        // list that starts ten hours in (ffprobe reads it).
        row(
            "mp4_starting_at_10_hours",
            ffmpeg(
                dir,
                "late.mp4",
                &["testsrc=size=64x64:rate=5:duration=2"],
                &[
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-output_ts_offset",
                    "36000",
                ],
            ),
            UNSUPPORTED,
        ),
        // Its packets are read at upload: it lasts a billion seconds.
        row(
            "mkv_time_jumps_a_billion_seconds",
            ffmpeg(
                dir,
                "jump.mkv",
                &["testsrc=size=64x64:rate=5:duration=4"],
                &[
                    "-c:v",
                    "mpeg4",
                    "-bsf:v",
                    "setts=ts='if(gt(N,10),TS+1000000000000,TS)'",
                ],
            ),
            OVER_LIMIT,
        )
        .quick(),
        row(
            "ts_starting_near_the_33_bit_wrap",
            ffmpeg(
                dir,
                "wrap.ts",
                &["testsrc=size=64x64:rate=5:duration=4"],
                &["-c:v", "mpeg2video", "-output_ts_offset", "95443"],
            ),
            Ready,
        ),
    ];
    for (name, bytes) in playlists(trap) {
        let quick = name == "playlist_hls_media";
        let r = row(name, bytes, UNSUPPORTED);
        rows.push(if quick { r.quick() } else { r });
    }
    rows
}

/// ffmpeg arguments mapping the video and the same audio 100 times.
fn hundred_tracks() -> Vec<&'static str> {
    let mut args = vec!["-map", "0:v"];
    for _ in 0..100 {
        args.extend(["-map", "1:a"]);
    }
    args.extend(["-c:v", "mpeg4", "-c:a", "mp2"]);
    args
}

/// A Matroska file with only a subtitle stream.
fn ffmpeg_srt(dir: &std::path::Path) -> Vec<u8> {
    let srt = dir.join("subs.srt");
    std::fs::write(&srt, "1\n00:00:00,000 --> 00:00:02,000\nhello\n").expect("srt");
    let out = dir.join("subs.mkv");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&srt)
        .arg(&out)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    std::fs::read(out).expect("read")
}

/// A small ZIP archive (one stored file), as `zip` writes it.
fn zip_bytes() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    zip.start_file("a.txt", zip::write::SimpleFileOptions::default())
        .expect("zip entry");
    zip.write_all(b"not a video").expect("zip write");
    zip.finish().expect("zip finish");
    out.into_inner()
}

/// What became of one row.
fn outcome(server: &Server, token: &str, row: &Row) -> Expect {
    let query = match row.query {
        "" => format!("filename={}.bin", row.name),
        q => format!("filename={}.bin&{q}", row.name),
    };
    let r = server.upload(token, &query, &row.bytes);
    if r.status != 201 {
        let code: &'static str = Box::leak(r.code().into_boxed_str());
        return Refused(r.status, code);
    }
    let id = r.json()["id"].as_str().expect("id").to_string();
    let v = server.wait_for(token, &id, |v| {
        v["state"] == "ready" || v["state"] == "failed"
    });
    match v["state"].as_str() {
        Some("ready") => Ready,
        _ => {
            let code = v["error"]["code"].as_str().unwrap_or("?").to_string();
            Failed(Box::leak(code.into_boxed_str()))
        }
    }
}

#[test]
fn the_hostile_corpus() {
    let all = std::env::var("VIDMILL_HOSTILE").is_ok_and(|v| v == "all");
    let trap = std::net::TcpListener::bind("127.0.0.1:0").expect("trap");
    trap.set_nonblocking(true).expect("nonblocking");
    let at = trap.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let made = dir.path().join("made");
    std::fs::create_dir_all(&made).expect("made");
    let rows: Vec<Row> = rows(&made, &at)
        .into_iter()
        .filter(|r| all || r.quick)
        .collect();
    let server = Server::start(&dir.path().join("server"), "");
    let token = server.token("hostile");
    let watch = HealthWatch::start(&server.addr);
    let mut wrong = Vec::new();
    println!("HOSTILE | file | bytes | expected | got | seconds | server peak MiB");
    for row in &rows {
        let started = Instant::now();
        let got = outcome(&server, &token, row);
        let secs = started.elapsed().as_secs_f64();
        let left = server.temp_files();
        println!(
            "HOSTILE | {} | {} | {:?} | {:?} | {secs:.1} | {}",
            row.name,
            row.bytes.len(),
            row.expect,
            got,
            peak_mib(server.pid())
        );
        if got != row.expect {
            wrong.push(format!(
                "{}: expected {:?}, got {got:?}",
                row.name, row.expect
            ));
        }
        if !left.is_empty() {
            wrong.push(format!("{}: left {left:?}", row.name));
        }
    }
    let (unhealthy, slowest) = watch.finish();
    let peak = peak_mib(server.pid());
    println!(
        "HOSTILE | {} rows | /healthz failures {unhealthy}, slowest {slowest} ms | server peak {peak} MiB",
        rows.len()
    );
    assert!(trap.accept().is_err(), "a hostile file reached the network");
    assert_eq!(
        unhealthy, 0,
        "/healthz failed or was slow {unhealthy} times"
    );
    assert!(peak < 512, "server peak memory {peak} MiB");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
