//! ffmpeg and ffprobe as the independent reader: they make the corpus and
//! say what a player sees in a file (timeline, frames, pictures, audio).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs one ffmpeg command line in `dir`. The line is split on whitespace,
/// so filter graphs in it are written without spaces.
pub fn generate(dir: &Path, line: &str) -> Result<(), String> {
    let out = Command::new("ffmpeg")
        .current_dir(dir)
        .args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
        .args(line.split_whitespace())
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ffmpeg {line}\n  failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ffprobe_json(path: &Path, args: &[&str]) -> Result<Value, String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run ffprobe: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ffprobe {args:?} {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("ffprobe json: {e}"))
}

/// A number ffprobe printed as a string (or a number); `None` for N/A.
pub fn num(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

pub fn text(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty() && *s != "unknown")
}

/// One decoded video frame: its index in decode output order (what
/// ffmpeg's `select` counts), its presentation time relative to the file's
/// start and how long it is shown.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub n: usize,
    pub t: f64,
    pub dur: f64,
}

/// What a player sees in a file, as ffprobe tells it.
#[derive(Debug)]
pub struct Media {
    pub probe: Value,
    /// Earliest start of an audio or video stream (container time).
    pub origin: f64,
    /// Latest end of an audio or video stream, relative to `origin`.
    pub duration: f64,
    /// The video's frames in presentation order, times relative to `origin`.
    pub frames: Vec<Frame>,
    /// Typical frame duration (median interval).
    pub frame_dur: f64,
    pub video_start: f64,
    pub video_end: f64,
    /// Start of the default (or first) audio stream relative to `origin`.
    pub audio_start: Option<f64>,
    pub audio_end: Option<f64>,
}

impl Media {
    pub fn read(path: &Path) -> Result<Self, String> {
        let probe = ffprobe_json(path, &["-show_format", "-show_streams"])?;
        let streams = probe["streams"].as_array().cloned().unwrap_or_default();
        let video = main_video(&probe)
            .ok_or_else(|| format!("{}: ffprobe sees no video stream", path.display()))?;
        let index = video["index"].as_i64().unwrap_or(0).to_string();
        let audio = default_audio(&probe);

        let raw = ffprobe_json(
            path,
            &[
                "-select_streams",
                &index,
                "-show_entries",
                "frame=best_effort_timestamp_time,pkt_duration_time",
            ],
        )?;
        let decoded = raw["frames"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default();
        let avi = probe["format"]["format_name"]
            .as_str()
            .is_some_and(|f| f.split(',').any(|n| n == "avi"));
        let mut frames: Vec<(usize, f64, Option<f64>)> = if avi {
            avi_frames(path, &index, decoded.len())?
        } else {
            decoded
                .iter()
                .enumerate()
                .filter_map(|(n, f)| {
                    let t = num(&f["best_effort_timestamp_time"])?;
                    Some((n, t, num(&f["pkt_duration_time"]).filter(|d| *d > 0.0)))
                })
                .collect()
        };
        if frames.is_empty() {
            return Err(format!(
                "{}: ffprobe decodes no video frame",
                path.display()
            ));
        }
        frames.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let mut gaps: Vec<f64> = frames
            .windows(2)
            .map(|w| w[1].1 - w[0].1)
            .filter(|d| *d > 1e-6)
            .collect();
        gaps.sort_by(f64::total_cmp);
        // Seconds per frame by the stream's nominal rate.
        let rate = ["avg_frame_rate", "r_frame_rate"].iter().find_map(|k| {
            let (a, b) = video[*k].as_str()?.split_once('/')?;
            let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
            (a > 0.0 && b > 0.0).then_some(b / a)
        });
        let frame_dur = gaps
            .get(gaps.len() / 2)
            .copied()
            .or_else(|| frames[0].2)
            .or(rate)
            .unwrap_or(0.04);

        // Ends: video from its last frame, audio from its packets.
        let video_start_abs = frames[0].1;
        let video_end_abs = frames
            .iter()
            .map(|f| f.1 + f.2.unwrap_or(frame_dur))
            .fold(f64::MIN, f64::max);
        let mut starts = vec![video_start_abs];
        let mut ends = vec![video_end_abs];
        let mut audio_span = None;
        let audio_streams: Vec<&Value> = streams
            .iter()
            .filter(|s| s["codec_type"] == "audio")
            .collect();
        if !audio_streams.is_empty() {
            let packets = ffprobe_json(
                path,
                &[
                    "-select_streams",
                    "a",
                    "-show_entries",
                    "packet=stream_index,pts_time,dts_time,duration_time,flags",
                ],
            )?;
            let mut spans: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
            for p in packets["packets"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
            {
                if p["flags"].as_str().is_some_and(|f| f.contains('D')) {
                    continue;
                }
                let Some(t) = num(&p["pts_time"]).or_else(|| num(&p["dts_time"])) else {
                    continue;
                };
                let d = num(&p["duration_time"]).unwrap_or(0.0);
                let idx = p["stream_index"].as_i64().unwrap_or(-1);
                let e = spans.entry(idx).or_insert((t, t + d));
                e.0 = e.0.min(t);
                e.1 = e.1.max(t + d);
            }
            for s in &audio_streams {
                let idx = s["index"].as_i64().unwrap_or(-2);
                let start = num(&s["start_time"]).or(spans.get(&idx).map(|x| x.0));
                if let Some(start) = start {
                    starts.push(start);
                }
                if let Some((_, end)) = spans.get(&idx) {
                    ends.push(*end);
                }
            }
            if let Some(a) = audio {
                let idx = a["index"].as_i64().unwrap_or(-2);
                let start = num(&a["start_time"]).or(spans.get(&idx).map(|x| x.0));
                let end = spans.get(&idx).map(|x| x.1);
                if let (Some(s), Some(e)) = (start, end) {
                    audio_span = Some((s, e));
                }
            }
        }
        let video_start_stream = num(&video["start_time"]).unwrap_or(video_start_abs);
        starts.push(video_start_stream);
        let origin = starts.iter().copied().fold(f64::MAX, f64::min);
        let duration = ends.iter().copied().fold(f64::MIN, f64::max) - origin;
        Ok(Self {
            origin,
            duration,
            frames: frames
                .iter()
                .map(|(n, t, d)| Frame {
                    n: *n,
                    t: t - origin,
                    dur: d.unwrap_or(frame_dur),
                })
                .collect(),
            frame_dur,
            video_start: video_start_stream - origin,
            video_end: video_end_abs - origin,
            audio_start: audio_span.map(|(s, _)| s - origin),
            audio_end: audio_span.map(|(_, e)| e - origin),
            probe,
        })
    }

    pub fn video(&self) -> &Value {
        main_video(&self.probe).unwrap_or(&Value::Null)
    }

    pub fn audio_streams(&self) -> Vec<&Value> {
        self.probe["streams"]
            .as_array()
            .map(|a| a.iter().filter(|s| s["codec_type"] == "audio").collect())
            .unwrap_or_default()
    }

    pub fn video_streams(&self) -> usize {
        self.probe["streams"]
            .as_array()
            .map(|a| a.iter().filter(|s| s["codec_type"] == "video").count())
            .unwrap_or(0)
    }

    pub fn format_duration(&self) -> Option<f64> {
        num(&self.probe["format"]["duration"])
    }

    /// The frame on screen at `t` (relative to the start): the last one
    /// whose time is not after it, or the first frame before the video
    /// begins.
    pub fn on_screen(&self, t: f64) -> Frame {
        self.frames
            .iter()
            .rev()
            .find(|f| f.t <= t + 1e-4)
            .copied()
            .unwrap_or(self.frames[0])
    }

    /// Width and height as coded, before sample aspect ratio and rotation.
    pub fn coded_size(&self) -> (f64, f64) {
        let v = self.video();
        (
            v["width"].as_f64().unwrap_or(0.0),
            v["height"].as_f64().unwrap_or(0.0),
        )
    }

    /// The picture is turned a quarter for display.
    pub fn quarter_turn(&self) -> bool {
        rotation(self.video()).rem_euclid(180) == 90
    }

    /// The display size: sample aspect ratio and rotation applied.
    pub fn display_size(&self) -> (f64, f64) {
        let (w, h) = self.coded_size();
        let (sn, sd) = sar(self.video()).unwrap_or((1.0, 1.0));
        let w = w * sn / sd;
        if self.quarter_turn() {
            (h, w)
        } else {
            (w, h)
        }
    }
}

/// The video frames of an AVI, which stores no presentation times: each
/// chunk of the video stream is one frame interval (its decode time), and
/// the k-th picture out of the decoder is shown in the k-th chunk's
/// interval, a B-frame decoder's one-picture delay included. (ffmpeg's
/// best-effort times for AVI with B-frames are the decode times of the
/// pictures' own packets, a frame late, and its last picture has none.)
/// Empty chunks (dropped frames) hold no picture and are skipped; chunks
/// that decode to no picture (packed B-frames) make the count differ, and
/// then the frames cannot be placed.
fn avi_frames(
    path: &Path,
    index: &str,
    decoded: usize,
) -> Result<Vec<(usize, f64, Option<f64>)>, String> {
    let packets = ffprobe_json(
        path,
        &[
            "-select_streams",
            index,
            "-show_entries",
            "packet=dts_time,duration_time,size",
        ],
    )?;
    let chunks: Vec<(f64, Option<f64>)> = packets["packets"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|p| num(&p["size"]).is_some_and(|s| s > 0.0))
        .filter_map(|p| {
            let t = num(&p["dts_time"])?;
            Some((t, num(&p["duration_time"]).filter(|d| *d > 0.0)))
        })
        .collect();
    if chunks.len() != decoded {
        return Err(format!(
            "{}: {decoded} pictures decoded from {} video chunks: the AVI's frames cannot be placed",
            path.display(),
            chunks.len()
        ));
    }
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(k, (t, d))| (k, t, d))
        .collect())
}

/// The video stream ffmpeg's command line maps when told nothing: the
/// largest picture, a stream marked default counting as 5 million pixels
/// more, an attached picture (cover art) as one pixel; the first of equals.
pub fn main_video(probe: &Value) -> Option<&Value> {
    let score = |s: &Value| {
        let area = s["width"].as_i64().unwrap_or(0) * s["height"].as_i64().unwrap_or(0);
        let default = if s["disposition"]["default"] == 1 {
            5_000_000
        } else {
            0
        };
        if s["disposition"]["attached_pic"] == 1 {
            1
        } else {
            area + default
        }
    };
    let mut best: Option<(&Value, i64)> = None;
    for s in probe["streams"].as_array()? {
        if s["codec_type"] != "video" {
            continue;
        }
        let score = score(s);
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((s, score));
        }
    }
    best.map(|(s, _)| s)
}

/// `-map` for [`main_video`] of the file at `path`.
fn main_video_map(path: &Path) -> Result<String, String> {
    let probe = ffprobe_json(path, &["-show_streams"])?;
    let index = main_video(&probe)
        .and_then(|v| v["index"].as_i64())
        .ok_or_else(|| format!("{}: ffprobe sees no video stream", path.display()))?;
    Ok(format!("0:{index}"))
}

/// The default audio stream, else the first.
pub fn default_audio(probe: &Value) -> Option<&Value> {
    let audio: Vec<&Value> = probe["streams"]
        .as_array()?
        .iter()
        .filter(|s| s["codec_type"] == "audio")
        .collect();
    audio
        .iter()
        .find(|s| s["disposition"]["default"] == 1)
        .or(audio.first())
        .copied()
}

/// The sample aspect ratio when the stream states a valid one.
pub fn sar(v: &Value) -> Option<(f64, f64)> {
    let s = v["sample_aspect_ratio"].as_str()?;
    let (n, d) = s.split_once(':')?;
    let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
    (n > 0.0 && d > 0.0).then_some((n, d))
}

/// Rotation in degrees from the display matrix or the legacy tag; 0 if none.
pub fn rotation(v: &Value) -> i64 {
    let matrix = v["side_data_list"].as_array().and_then(|l| {
        l.iter()
            .find_map(|d| d["rotation"].as_f64().map(|r| r.round() as i64))
    });
    let tag = v["tags"]["rotate"]
        .as_str()
        .and_then(|r| r.parse::<i64>().ok());
    matrix.or(tag).unwrap_or(0)
}

/// How a source picture becomes what a correct output could be before it
/// is compared: scaled to the output's size with its chroma on the 4:2:0
/// grid every output has (one swscale pass, bicubic, exactly rounded, 16
/// bits so nothing is lost to the bit depth). Scaling after conversion to
/// RGB instead would give the reference full-resolution chroma that no
/// 4:2:0 output can have (31 dB on a correct result); left on its own grid,
/// a 4:2:2 source's chroma costs its correct 4:2:0 output about 1 dB, a
/// 4:1:1 (DV) source's about 4 dB.
const TO_420: &str = "flags=bicubic+accurate_rnd,format=yuv420p16le";

/// How every picture, the reference and the outputs alike, becomes RGB:
/// swscale's full-chroma path, one and the same for every pixel format, bit
/// depth and range, each chroma sample applied to the pixels it covers
/// (point-sampled: no interpolation of the reference's own, as GStreamer's
/// converters do it for the stills) and exactly rounded. swscale's default
/// conversion takes a different path per input format (8-bit 4:2:0 repeats
/// chroma both ways; 10-bit and 4:2:2 interpolate it vertically; rounding
/// biased by up to two levels), so a 10-bit source against its correct
/// 8-bit MP4 lost 2-3 dB to the reference itself.
const TO_RGB: &str = "scale=flags=neighbor+full_chroma_int+accurate_rnd";

/// Decodes the frames with decode-order indexes `picks` from `path`'s
/// [`main_video`] stream, as ffmpeg shows them (rotation applied), scaled to `w`×`h`
/// with 4:2:0 chroma ([`TO_420`]) and converted to RGB ([`TO_RGB`]) by the
/// colour tags the stream carries. Returns one picture per pick, by pick.
pub fn rgb_frames(
    path: &Path,
    picks: &[usize],
    w: u32,
    h: u32,
    hlg_to_bt709: bool,
) -> Result<BTreeMap<usize, Vec<u8>>, String> {
    let mut unique: Vec<usize> = picks.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if unique.is_empty() {
        return Ok(BTreeMap::new());
    }
    let select = unique
        .iter()
        .map(|n| format!("eq(n,{n})"))
        .collect::<Vec<_>>()
        .join("+");
    let rgb = if hlg_to_bt709 { "rgb48le" } else { "rgb24" };
    let graph = format!("select='{select}',scale={w}:{h}:{TO_420},{TO_RGB},format={rgb}");
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", &main_video_map(path)?, "-vf", &graph])
        .args(["-fps_mode", "passthrough"])
        .args(["-f", "rawvideo", "-"])
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ffmpeg could not decode frames {unique:?} of {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let size = (w * h * 3) as usize * if hlg_to_bt709 { 2 } else { 1 };
    let got = out.stdout.len() / size;
    if got != unique.len() || out.stdout.len() % size != 0 {
        return Err(format!(
            "ffmpeg gave {} bytes ({got} pictures of {w}x{h}) for frames {unique:?} of {}",
            out.stdout.len(),
            path.display()
        ));
    }
    Ok(unique
        .iter()
        .zip(out.stdout.chunks(size))
        .map(|(n, c)| {
            (
                *n,
                if hlg_to_bt709 {
                    hlg_to_bt709_rgb(c)
                } else {
                    c.to_vec()
                },
            )
        })
        .collect())
}

/// HLG BT.2020 R'G'B' (16-bit) to BT.709 R'G'B' (8-bit) the way docs/MEDIA.md
/// says vidmill converts HDR: HLG inverse OETF to scene light, BT.2020 to
/// BT.709 primaries in linear light (ITU-R BT.2087), clipped, BT.709 OETF.
/// No tone mapping.
fn hlg_to_bt709_rgb(rgb48: &[u8]) -> Vec<u8> {
    const A: f64 = 0.178_832_77;
    const B: f64 = 0.284_668_92;
    const C: f64 = 0.559_910_73;
    const M: [[f64; 3]; 3] = [
        [1.6605, -0.5876, -0.0728],
        [-0.1246, 1.1329, -0.0083],
        [-0.0182, -0.1006, 1.1187],
    ];
    let linear: Vec<f64> = (0..=u16::MAX)
        .map(|v| {
            let x = f64::from(v) / 65535.0;
            if x <= 0.5 {
                x * x / 3.0
            } else {
                (((x - C) / A).exp() + B) / 12.0
            }
        })
        .collect();
    let oetf = |l: f64| {
        let l = l.clamp(0.0, 1.0);
        let v = if l < 0.018 {
            4.5 * l
        } else {
            1.099 * l.powf(0.45) - 0.099
        };
        (v * 255.0).round().clamp(0.0, 255.0) as u8
    };
    rgb48
        .chunks_exact(6)
        .flat_map(|p| {
            let c = [0, 2, 4].map(|i| linear[usize::from(u16::from_le_bytes([p[i], p[i + 1]]))]);
            M.map(|row| oetf(row[0] * c[0] + row[1] * c[1] + row[2] * c[2]))
        })
        .collect()
}

/// An image file (JPEG, PNG) as ffmpeg decodes it: RGB24 and its size.
pub fn rgb_image(path: &Path) -> Result<(Vec<u8>, u32, u32), String> {
    let info = ffprobe_json(path, &["-show_streams"])?;
    let s = &info["streams"][0];
    let (w, h) = (
        s["width"].as_u64().unwrap_or(0) as u32,
        s["height"].as_u64().unwrap_or(0) as u32,
    );
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-vf",
            &format!("{TO_RGB},format=rgb24"),
            "-f",
            "rawvideo",
            "-",
        ])
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !out.status.success() || out.stdout.len() != (w * h * 3) as usize {
        return Err(format!(
            "ffmpeg could not decode image {} ({w}x{h}, {} bytes): {}",
            path.display(),
            out.stdout.len(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((out.stdout, w, h))
}

/// PSNR in dB of two RGB24 pictures of the same size (infinite if equal).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "pictures differ in size");
    let se: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let d = x.abs_diff(*y) as u64;
            d * d
        })
        .sum();
    if se == 0 {
        return f64::INFINITY;
    }
    let mse = se as f64 / a.len() as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// The dominant frequency of the audio stream `map` (e.g. `0:a:0`), from
/// sign changes with hysteresis, over the part that is not silent.
pub fn tone(path: &Path, map: &str) -> Result<f64, String> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", map, "-ac", "1", "-ar", "48000", "-f", "s16le", "-"])
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ffmpeg could not decode audio {map} of {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let samples = out
        .stdout
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]));
    let mut state = 0i8;
    let mut changes = Vec::new();
    for (i, s) in samples.enumerate() {
        let now = if s > 1000 {
            1
        } else if s < -1000 {
            -1
        } else {
            state
        };
        if now != state && state != 0 {
            changes.push(i);
        }
        state = now;
    }
    match (changes.first(), changes.last()) {
        (Some(a), Some(b)) if changes.len() > 10 => {
            Ok((changes.len() - 1) as f64 / 2.0 / ((b - a) as f64 / 48000.0))
        }
        _ => Err(format!(
            "audio {map} of {} is silent ({} level changes)",
            path.display(),
            changes.len()
        )),
    }
}

/// Top-level box types of an ISO BMFF file, in order.
pub fn top_level_boxes(path: &Path) -> Vec<String> {
    let Ok(data) = std::fs::read(path) else {
        return Vec::new();
    };
    let mut boxes = Vec::new();
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let mut size =
            u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as u64;
        boxes.push(String::from_utf8_lossy(&data[at + 4..at + 8]).to_string());
        if size == 1 && at + 16 <= data.len() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[at + 8..at + 16]);
            size = u64::from_be_bytes(b);
        } else if size == 0 {
            size = (data.len() - at) as u64;
        }
        if size < 8 {
            break;
        }
        at += size as usize;
    }
    boxes
}

/// Writes the display matrix `[a b; c d]` (in units of 1.0) into the
/// `tkhd` of every video track of the MP4 at `path`, in place: what a
/// device writes and ffmpeg 5.1 has no option for.
pub fn set_display_matrix(path: &Path, [a, b, c, d]: [i32; 4]) -> Result<(), String> {
    let mut bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let moov = boxes(&bytes, 0, bytes.len())
        .into_iter()
        .find(|b| b.0 == *b"moov")
        .ok_or("no moov")?;
    let mut written = 0;
    for trak in boxes(&bytes, moov.1, moov.2)
        .into_iter()
        .filter(|b| b.0 == *b"trak")
    {
        let inner = boxes(&bytes, trak.1, trak.2);
        let video = inner.iter().filter(|b| b.0 == *b"mdia").any(|m| {
            boxes(&bytes, m.1, m.2)
                .iter()
                .any(|h| h.0 == *b"hdlr" && bytes.get(h.1 + 8..h.1 + 12) == Some(b"vide"))
        });
        let Some(tkhd) = inner.iter().find(|b| b.0 == *b"tkhd") else {
            continue;
        };
        if !video {
            continue;
        }
        // Version and flags, times and ids (20 bytes in version 0, 32 in
        // 1), reserved, layer, group, volume, reserved: then the matrix.
        let times = if bytes[tkhd.1] == 1 { 32 } else { 20 };
        let at = tkhd.1 + 4 + times + 16;
        let matrix = [a, b, 0, c, d, 0, 0, 0, 0];
        for (i, v) in matrix.iter().enumerate() {
            let fixed = if i == 8 { 1 << 30 } else { v * 0x1_0000 };
            bytes[at + 4 * i..at + 4 * i + 4].copy_from_slice(&fixed.to_be_bytes());
        }
        written += 1;
    }
    if written == 0 {
        return Err(format!("{}: no video track", path.display()));
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The boxes between `from` and `to` in `bytes`: (type, body start, end).
fn boxes(bytes: &[u8], from: usize, to: usize) -> Vec<([u8; 4], usize, usize)> {
    let mut out = Vec::new();
    let mut at = from;
    while at + 8 <= to {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind: [u8; 4] = bytes[at + 4..at + 8].try_into().expect("4 bytes");
        if size < 8 || at + size > to {
            break;
        }
        out.push((kind, at + 8, at + size));
        at += size;
    }
    out
}
