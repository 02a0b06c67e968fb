//! Helpers shared by the pipeline tests: synthetic sources, ffprobe as the
//! independent reader of outputs, and checks on files left behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vidmill_pipelines::synth::{self, SynthSpec};

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Generates `spec` into `dir/name`.
pub fn make(dir: &Path, name: &str, spec: &SynthSpec) -> PathBuf {
    let path = dir.join(name);
    synth::generate(spec, &path).unwrap_or_else(|e| panic!("generate {name}: {e}"));
    path
}

/// Rewrites `path`'s rotation metadata with ffmpeg (GStreamer 1.22's muxers
/// cannot write a display matrix) and returns the new file.
pub fn rotate_tag(path: &Path, degrees: u32) -> PathBuf {
    let out = path.with_file_name(format!("rotated-{degrees}.mp4"));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(path)
        .args([
            "-c",
            "copy",
            "-metadata:s:v:0",
            &format!("rotate={degrees}"),
        ])
        .arg(&out)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg failed to tag rotation");
    out
}

/// ffprobe's view of a file: `format` and `streams`.
pub fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success(), "ffprobe failed on {}", path.display());
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

pub fn stream<'a>(probe: &'a Value, kind: &str) -> Option<&'a Value> {
    probe["streams"]
        .as_array()?
        .iter()
        .find(|s| s["codec_type"] == kind)
}

pub fn duration(probe: &Value) -> f64 {
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("duration")
}

/// Top-level MP4 box types in file order.
pub fn top_level_boxes(path: &Path) -> Vec<String> {
    let data = std::fs::read(path).expect("read mp4");
    let mut boxes = Vec::new();
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let mut size = u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes")) as u64;
        let kind = String::from_utf8_lossy(&data[at + 4..at + 8]).to_string();
        if size == 1 && at + 16 <= data.len() {
            size = u64::from_be_bytes(data[at + 8..at + 16].try_into().expect("8 bytes"));
        } else if size == 0 {
            size = (data.len() - at) as u64;
        }
        boxes.push(kind);
        if size < 8 {
            break;
        }
        at += size as usize;
    }
    boxes
}

pub fn moov_before_mdat(path: &Path) -> bool {
    let boxes = top_level_boxes(path);
    let moov = boxes.iter().position(|b| b == "moov");
    let mdat = boxes.iter().position(|b| b == "mdat");
    matches!((moov, mdat), (Some(m), Some(d)) if m < d)
}

/// Files in `dir` other than `keep`: what an operation left behind.
pub fn leftovers(dir: &Path, keep: &[&Path]) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| !keep.contains(&p.as_path()))
        .map(|p| p.display().to_string())
        .collect()
}

/// The ZIP's entries: (name, bytes).
pub fn zip_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).expect("open zip");
    let mut zip = zip::ZipArchive::new(file).expect("read zip");
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).expect("entry");
            let name = entry.name().expect("name").to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).expect("entry bytes");
            (name, bytes)
        })
        .collect()
}

/// `index.csv` rows as (index, requested, actual, filename, width, height).
pub fn index_rows(entries: &[(String, Vec<u8>)]) -> Vec<(u64, f64, f64, String, u32, u32)> {
    let (_, csv) = entries
        .iter()
        .find(|(n, _)| n == "index.csv")
        .expect("index.csv in zip");
    let text = String::from_utf8(csv.clone()).expect("utf8 csv");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("index,requested_seconds,actual_seconds,filename,width,height")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 6, "row {l}");
            (
                f[0].parse().expect("index"),
                f[1].parse().expect("requested"),
                f[2].parse().expect("actual"),
                f[3].to_string(),
                f[4].parse().expect("width"),
                f[5].parse().expect("height"),
            )
        })
        .collect()
}

/// The frame index drawn into an extracted counter-pattern image.
pub fn counter_in(image: &[u8]) -> (u32, usize, usize) {
    let (gray, w, h) = synth::decode_gray(image).expect("decode image");
    (synth::read_counter(&gray, w, h), w, h)
}

/// The frame ffmpeg shows at `t` seconds (it applies rotation itself), in
/// 8-bit grey: the independent reference for orientation checks.
pub fn ffmpeg_frame(path: &Path, t: f64) -> (Vec<u8>, usize, usize) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &format!("{t}"), "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg could not decode {}",
        path.display()
    );
    synth::decode_gray(&out.stdout).expect("decode ffmpeg frame")
}

/// Mean absolute difference of two grey pictures of the same size.
pub fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "pictures differ in size");
    let sum: u64 = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u64).sum();
    sum as f64 / a.len() as f64
}
