//! One corpus row: make the source with ffmpeg, run the pipelines the way
//! the server does (probe; convert and frames, one decode for a transcode;
//! poster), then check every output against what ffmpeg/ffprobe see in the
//! source. All failures of a row are collected and reported together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vidmill_pipelines::{
    self as media, Control, ConvertSpec, FramesSpec, JobSpec, Method, PosterSpec,
};

use crate::ff::{self, Frame, Media};

/// Pictures must match ffmpeg's own decode at least this well.
pub const MIN_PSNR: f64 = 35.0;
/// First audio and first video keep their offset within this.
pub const MAX_SYNC_DRIFT: f64 = 0.040;

/// The colour tags the MP4 must carry (limited range, unless full-range
/// H.264 is copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// BT.709 primaries, transfer and matrix: what an HD (or BT.709-tagged)
    /// source says.
    Bt709,
    /// A standard-definition source: BT.601 (525 or 625) or BT.709, as
    /// long as the tags are present (the pictures check they are right).
    Sd,
    /// An HLG (BT.2020) source: converted to BT.709 SDR by remapping the
    /// transfer and primaries, no tone mapping; BT.709 tags.
    HlgToBt709,
    /// Full-range BT.709 H.264: copied as it is, so the MP4 keeps its full
    /// range and says so (`yuvj420p`, `color_range pc`); stills converted.
    FullRangeBt709,
}

impl Colour {
    /// The pixel format and colour range ffprobe must report for the MP4.
    fn mp4_range(self) -> (&'static str, &'static str) {
        match self {
            Colour::FullRangeBt709 => ("yuvj420p", "pc"),
            _ => ("yuv420p", "tv"),
        }
    }
}

/// Changes a made source in place.
pub type Patch = fn(&Path) -> Result<(), String>;

/// A kind of source: how ffmpeg makes it and what vidmill must make of it.
#[derive(Debug, Clone)]
pub struct Kind {
    pub name: &'static str,
    /// The source file, made in the row's directory by `steps`.
    pub file: &'static str,
    /// ffmpeg command lines (split on whitespace), run in order.
    pub steps: Vec<String>,
    /// Frame interval for the ZIP.
    pub every: f64,
    /// `None` where either method is acceptable.
    pub method: Option<Method>,
    pub colour: Colour,
    /// The frequency of the tone the output's audio must carry.
    pub tone: Option<f64>,
    /// A sample aspect ratio the codec's specification implies where ffmpeg
    /// reports square pixels (H.263's 12:11): either display size passes.
    pub spec_sar: Option<(f64, f64)>,
    /// A change made to the source after ffmpeg has written it: what
    /// devices write and ffmpeg 5.1 cannot (a display matrix it has no
    /// option for).
    pub patch: Option<Patch>,
}

fn control() -> Control {
    Control {
        stall_timeout: Duration::from_secs(15),
        deadline: Some(Duration::from_secs(120)),
        ..Control::default()
    }
}

struct Failures {
    name: &'static str,
    list: Vec<String>,
}

impl Failures {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.list.push(what());
        }
    }

    fn fail(&mut self, what: String) {
        self.list.push(what);
    }
}

/// Runs one row and panics with every failed check.
pub fn row(kind: &Kind) {
    let started = Instant::now();
    let temp = tempfile::Builder::new()
        .prefix(&format!("corpus-{}-", kind.name))
        .tempdir()
        .expect("tempdir");
    let dir = temp.path().to_path_buf();
    if std::env::var_os("CORPUS_KEEP").is_some() {
        let kept = temp.keep();
        eprintln!("CORPUS {}: files kept in {}", kind.name, kept.display());
    }
    for step in &kind.steps {
        if let Err(e) = ff::generate(&dir, step) {
            panic!("{}: could not make the source: {e}", kind.name);
        }
    }
    let source_path = dir.join(kind.file);
    if let Some(patch) = kind.patch {
        if let Err(e) = patch(&source_path) {
            panic!("{}: could not patch the source: {e}", kind.name);
        }
    }
    let source = Media::read(&source_path)
        .unwrap_or_else(|e| panic!("{}: ffprobe cannot read the source: {e}", kind.name));
    let made = started.elapsed();
    let before: BTreeSet<PathBuf> = listing(&dir);

    let mut f = Failures {
        name: kind.name,
        list: Vec::new(),
    };
    let out = dir.join("out.mp4");
    let zip = dir.join("frames.zip");
    let poster = dir.join("poster.jpg");

    let t = Instant::now();
    let facts = match media::probe(&source_path) {
        Ok(facts) => facts,
        Err(e) => panic!("{}: probe: {e}", kind.name),
    };
    let tol = source.frame_dur.max(0.1);
    match facts.duration {
        Some(d) => f.check((d - source.duration).abs() <= tol, || {
            format!(
                "probe: duration {d:.3} s vs source {:.3} s (tolerance {tol:.3})",
                source.duration
            )
        }),
        None => f.fail("probe: no duration".into()),
    }
    let cspec = ConvertSpec::new(&out);
    let fspec = FramesSpec::new(&zip, kind.every);
    let planned = media::plan(&facts, &cspec);
    let (mut convert, mut frames) = (None, None);
    if planned == Method::Transcode {
        let job = JobSpec {
            convert: Some(cspec.clone()),
            frames: Some(fspec.clone()),
        };
        match media::run_job(&source_path, &facts, &job, &control()) {
            Ok(r) => (convert, frames) = (r.convert, r.frames),
            Err(e) => f.fail(format!(
                "run_job (transcode + frames): {e} after {:.1} s",
                t.elapsed().as_secs_f64()
            )),
        }
    } else {
        let c = Instant::now();
        match media::convert(&source_path, &facts, &cspec, &control()) {
            Ok(r) => convert = Some(r),
            Err(e) => f.fail(format!(
                "convert (remux): {e} after {:.1} s",
                c.elapsed().as_secs_f64()
            )),
        }
        let c = Instant::now();
        match media::frames(&source_path, &facts, &fspec, &control()) {
            Ok(r) => frames = Some(r),
            Err(e) => f.fail(format!(
                "frames: {e} after {:.1} s",
                c.elapsed().as_secs_f64()
            )),
        }
    }
    let job_time = t.elapsed();
    let t = Instant::now();
    let poster_time = media::poster_time(&facts);
    let poster_report =
        match media::poster(&source_path, &facts, &PosterSpec::new(&poster), &control()) {
            Ok(r) => Some(r),
            Err(e) => {
                f.fail(format!(
                    "poster: {e} after {:.1} s",
                    t.elapsed().as_secs_f64()
                ));
                None
            }
        };
    let pipelines = job_time + t.elapsed();

    let t = Instant::now();
    let mut produced: BTreeSet<PathBuf> = BTreeSet::new();
    let refs = References {
        path: &source_path,
        hlg: kind.colour == Colour::HlgToBt709,
    };
    let expect = Expect::new(&source, kind);
    let mut out_summary = String::from("no mp4");
    if let Some(report) = &convert {
        produced.insert(out.clone());
        if let Some(m) = kind.method {
            f.check(report.method == m, || {
                format!("method {:?}, expected {m:?}", report.method)
            });
        }
        out_summary = check_mp4(&mut f, &refs, &expect, &source, &out, report, kind);
    }
    let mut psnr_summary = Vec::new();
    if let Some(report) = &frames {
        produced.insert(zip.clone());
        let p = check_frames(&mut f, &refs, &expect, &source, &zip, report, kind, &dir);
        psnr_summary.push(format!("frames min {p:.1} dB"));
    }
    if let Some(report) = &poster_report {
        produced.insert(poster.clone());
        let p = check_poster(
            &mut f,
            &refs,
            &expect,
            &source,
            &poster,
            report,
            poster_time,
        );
        psnr_summary.push(format!("poster {p:.1} dB"));
    }
    let after = listing(&dir);
    let extra: Vec<String> = after
        .difference(&before)
        .filter(|p| !produced.contains(*p))
        .map(|p| p.display().to_string())
        .collect();
    f.check(extra.is_empty(), || format!("files left behind: {extra:?}"));
    let checks = t.elapsed();

    eprintln!(
        "CORPUS {}: {} | plan {:?} | {} | {} | source {:.3} s, made in {:.1} s, pipelines {:.1} s, checks {:.1} s",
        kind.name,
        if f.list.is_empty() { "PASS" } else { "FAIL" },
        planned,
        out_summary,
        psnr_summary.join(", "),
        source.duration,
        made.as_secs_f64(),
        pipelines.as_secs_f64(),
        checks.as_secs_f64(),
    );
    if !f.list.is_empty() {
        panic!(
            "{}: {} check(s) failed:\n  - {}",
            f.name,
            f.list.len(),
            f.list.join("\n  - ")
        );
    }
}

fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// What the source's outputs must look like.
struct Expect {
    /// Display sizes of the source (sample aspect and rotation applied):
    /// ffprobe's, then the one the codec's specification implies, if any.
    displays: Vec<(f64, f64)>,
    /// Duration tolerance: one frame or 0.1 s, whichever is larger.
    tol: f64,
}

impl Expect {
    fn new(source: &Media, kind: &Kind) -> Self {
        let mut displays = vec![source.display_size()];
        if let Some((n, d)) = kind.spec_sar {
            let (w, h) = source.coded_size();
            displays.push(if source.quarter_turn() {
                (h, w * n / d)
            } else {
                (w * n / d, h)
            });
        }
        Self {
            displays,
            tol: source.frame_dur.max(0.1),
        }
    }

    /// Short side capped at 1080 and never upscaled (within 2 pixels for
    /// even rounding), aspect kept within 1%.
    fn size_problem(&self, what: &str, w: u32, h: u32) -> Option<String> {
        let short = w.min(h) as f64;
        let aspect = w as f64 / h.max(1) as f64;
        let fits = |(dw, dh): (f64, f64)| {
            let want = dw.min(dh).min(1080.0);
            (short - want).abs() <= 2.0 && (aspect / (dw / dh) - 1.0).abs() <= 0.01
        };
        if self.displays.iter().any(|d| fits(*d)) {
            return None;
        }
        let (dw, dh) = self.displays[0];
        Some(format!(
            "{what}: size {w}x{h} (short side {short}, aspect {aspect:.4}) but the source displays {dw:.0}x{dh:.0} (aspect {:.4}{}): expected short side {}, capped at 1080 and never upscaled, aspect within 1%",
            dw / dh,
            self.displays
                .get(1)
                .map_or(String::new(), |(w, h)| format!(", or {w:.0}x{h:.0} by the codec's own pixel aspect")),
            dw.min(dh).min(1080.0)
        ))
    }
}

/// ffmpeg's decode of the source: one ffmpeg run per picture size asked.
pub struct References<'a> {
    path: &'a Path,
    hlg: bool,
}

impl References<'_> {
    fn source(&self, picks: &[usize], w: u32, h: u32) -> Result<BTreeMap<usize, Vec<u8>>, String> {
        ff::rgb_frames(self.path, picks, w, h, self.hlg)
    }
}

const PROFILES: &[&str] = &[
    "High",
    "Main",
    "Baseline",
    "Constrained Baseline",
    "Progressive High",
    "Constrained High",
];

#[allow(clippy::too_many_arguments)]
fn check_mp4(
    f: &mut Failures,
    refs: &References,
    expect: &Expect,
    source: &Media,
    out: &Path,
    report: &media::ConvertReport,
    kind: &Kind,
) -> String {
    let boxes = ff::top_level_boxes(out);
    let moov = boxes.iter().position(|b| b == "moov");
    let mdat = boxes.iter().position(|b| b == "mdat");
    f.check(matches!((moov, mdat), (Some(m), Some(d)) if m < d), || {
        format!("mp4: moov not before mdat: top-level boxes {boxes:?}")
    });
    let m = match Media::read(out) {
        Ok(m) => m,
        Err(e) => {
            f.fail(format!("mp4: {e}"));
            return "unreadable mp4".into();
        }
    };
    let v = m.video();
    f.check(m.video_streams() == 1, || {
        format!("mp4: {} video streams, expected 1", m.video_streams())
    });
    let codec = v["codec_name"].as_str().unwrap_or("?");
    f.check(codec == "h264", || {
        format!("mp4: video codec {codec}, expected h264")
    });
    let (want_pix, want_range) = kind.colour.mp4_range();
    let pix = v["pix_fmt"].as_str().unwrap_or("?");
    f.check(pix == want_pix, || {
        format!("mp4: pix_fmt {pix}, expected {want_pix}")
    });
    let profile = v["profile"].as_str().unwrap_or("?");
    f.check(PROFILES.contains(&profile), || {
        format!("mp4: H.264 profile {profile} is not one browsers play")
    });
    let sar = v["sample_aspect_ratio"].as_str().unwrap_or("absent");
    f.check(matches!(sar, "1:1" | "0:1" | "absent" | "N/A"), || {
        format!("mp4: sample aspect ratio {sar}, expected square pixels")
    });
    let rot = ff::rotation(v);
    f.check(rot == 0, || {
        format!("mp4: carries rotation {rot}, expected upright pixels")
    });
    let field = v["field_order"].as_str().unwrap_or("absent");
    f.check(
        matches!(field, "progressive" | "absent" | "unknown"),
        || format!("mp4: field order {field}, expected progressive"),
    );
    let (w, h) = (
        v["width"].as_u64().unwrap_or(0) as u32,
        v["height"].as_u64().unwrap_or(0) as u32,
    );
    if let Some(p) = expect.size_problem("mp4", w, h) {
        f.fail(p);
    }
    f.check(w % 2 == 0 && h % 2 == 0, || {
        format!("mp4: odd size {w}x{h}")
    });
    f.check((report.width, report.height) == (w, h), || {
        format!(
            "mp4: report says {}x{} but the file is {w}x{h}",
            report.width, report.height
        )
    });
    f.check((m.duration - source.duration).abs() <= expect.tol, || {
        format!(
            "mp4: duration {:.3} s vs source {:.3} s (tolerance {:.3}; ffprobe format duration {:?} vs {:?}; mp4 video {:.3}..{:.3}, audio {:?}; source video {:.3}..{:.3}, audio {:?}, clock starts at {:.3})",
            m.duration,
            source.duration,
            expect.tol,
            m.format_duration(),
            source.format_duration(),
            m.video_start,
            m.video_end,
            m.audio_start.zip(m.audio_end),
            source.video_start,
            source.video_end,
            source.audio_start.zip(source.audio_end),
            source.origin,
        )
    });

    // Audio: present exactly when the source has it, AAC, at most stereo,
    // in sync, the right track.
    let src_audio = !source.audio_streams().is_empty();
    let out_audio = m.audio_streams();
    f.check(out_audio.len() == usize::from(src_audio), || {
        format!(
            "mp4: {} audio streams, source has {}",
            out_audio.len(),
            source.audio_streams().len()
        )
    });
    if let Some(a) = out_audio.first() {
        let codec = a["codec_name"].as_str().unwrap_or("?");
        f.check(codec == "aac", || {
            format!("mp4: audio codec {codec}, expected aac")
        });
        let ch = a["channels"].as_u64().unwrap_or(0);
        f.check((1..=2).contains(&ch), || {
            format!("mp4: {ch} audio channels, expected 1 or 2")
        });
    }
    if let (Some(sa), Some(oa)) = (source.audio_start, m.audio_start) {
        let want = sa - source.video_start;
        let got = oa - m.video_start;
        f.check((got - want).abs() <= MAX_SYNC_DRIFT, || {
            format!(
                "mp4: A/V offset (first audio - first video) {:+.3} s vs source {want:+.3} s",
                got
            )
        });
    }
    if let (Some(want), true) = (kind.tone, !out_audio.is_empty()) {
        match ff::tone(out, "0:a:0") {
            Ok(hz) => f.check((hz / want - 1.0).abs() < 0.02, || {
                format!("mp4: audio tone {hz:.1} Hz, expected {want} Hz (the default track)")
            }),
            Err(e) => f.fail(format!("mp4: {e}")),
        }
    }

    // Colour tags.
    let tags = (
        ff::text(&v["color_primaries"]).unwrap_or("absent"),
        ff::text(&v["color_transfer"]).unwrap_or("absent"),
        ff::text(&v["color_space"]).unwrap_or("absent"),
    );
    let range = ff::text(&v["color_range"]).unwrap_or("absent");
    f.check(range == want_range, || {
        format!("mp4: color_range {range}, expected {want_range}")
    });
    let ok = match kind.colour {
        Colour::Bt709 | Colour::HlgToBt709 | Colour::FullRangeBt709 => {
            tags == ("bt709", "bt709", "bt709")
        }
        Colour::Sd => {
            matches!(tags.0, "bt709" | "smpte170m" | "bt470bg")
                && matches!(tags.1, "bt709" | "smpte170m" | "bt470bg" | "bt470m")
                && matches!(tags.2, "bt709" | "smpte170m" | "bt470bg")
        }
    };
    f.check(ok, || {
        format!(
            "mp4: colour primaries/transfer/matrix {}/{}/{}, expected {:?}",
            tags.0, tags.1, tags.2, kind.colour
        )
    });

    // Pictures: the MP4 at a few times against the source at the same times.
    let mut min = f64::INFINITY;
    match mp4_pictures(refs, source, &m, out, w, h) {
        Ok(pictures) => {
            for p in pictures {
                min = min.min(p.psnr);
                f.check(p.psnr >= MIN_PSNR, || p.describe());
            }
        }
        Err(e) => f.fail(format!("mp4 pictures: {e}")),
    }
    format!(
        "mp4 {:?} {w}x{h} {:.3} s, audio {}, {}/{}/{} {range}, pictures min {min:.1} dB",
        report.method,
        m.duration,
        out_audio.first().map_or("none".to_string(), |a| format!(
            "{} {}ch",
            a["codec_name"].as_str().unwrap_or("?"),
            a["channels"]
        )),
        tags.0,
        tags.1,
        tags.2
    )
}

/// One picture of the MP4 against the source at the same time.
pub struct Picture {
    /// The time looked at, relative to the start.
    pub t: f64,
    /// The MP4's frame on screen then.
    pub out: Frame,
    /// The source's frame on screen then.
    pub source: Frame,
    pub psnr: f64,
}

impl Picture {
    fn describe(&self) -> String {
        format!(
            "mp4: picture at {:.3} s (mp4 frame {} at {:.3} s vs source frame {} at {:.3} s) PSNR {:.1} dB < {MIN_PSNR}",
            self.t, self.out.n, self.out.t, self.source.n, self.source.t, self.psnr
        )
    }
}

/// The MP4 `out` (read as `m`, `w`×`h`) at three times, a fifth, half way
/// and 85% through the source's frames, each in the middle of a source
/// frame's display time: the MP4's frame on screen against the source's.
/// A frame dropped, repeated or shifted before a time shows as a neighbour
/// there (about 20 dB).
pub fn mp4_pictures(
    refs: &References,
    source: &Media,
    m: &Media,
    out: &Path,
    w: u32,
    h: u32,
) -> Result<Vec<Picture>, String> {
    let n = source.frames.len();
    let mut picks: Vec<usize> = [n / 5, n / 2, n * 85 / 100]
        .into_iter()
        .map(|i| i.min(n - 1))
        .collect();
    picks.dedup();
    let mut pairs = Vec::new();
    for i in picks {
        let fr = source.frames[i];
        let next = source.frames.get(i + 1).map_or(fr.t + fr.dur, |x| x.t);
        let t = fr.t + (next - fr.t).min(fr.dur) / 2.0;
        pairs.push((fr, t, m.on_screen(t)));
    }
    let s = refs.source(&pairs.iter().map(|p| p.0.n).collect::<Vec<_>>(), w, h)?;
    let o = ff::rgb_frames(
        out,
        &pairs.iter().map(|p| p.2.n).collect::<Vec<_>>(),
        w,
        h,
        false,
    )?;
    Ok(pairs
        .into_iter()
        .map(|(fr, t, of)| Picture {
            t,
            out: of,
            source: fr,
            psnr: ff::psnr(&s[&fr.n], &o[&of.n]),
        })
        .collect())
}

/// The reference itself checked on `kind`: ffmpeg's own transcodes of its
/// source (libx264 veryfast CRF 23, like vidmill's), each picture given a
/// time by an expression in `N` (the decode index) and the frame duration
/// `D`: the faithful one (`N*D`, the AVI's own meaning) must pass the MP4
/// picture check; one with a frame dropped, and one with a frame shown
/// twice, must fail it.
pub fn reference_self_check(kind: &Kind) {
    let temp = tempfile::Builder::new()
        .prefix(&format!("corpus-self-check-{}-", kind.name))
        .tempdir()
        .expect("tempdir");
    let dir = temp.path();
    for step in &kind.steps {
        if let Err(e) = ff::generate(dir, step) {
            panic!("{}: could not make the source: {e}", kind.name);
        }
    }
    let path = dir.join(kind.file);
    let source = Media::read(&path)
        .unwrap_or_else(|e| panic!("{}: ffprobe cannot read the source: {e}", kind.name));
    let d = source.frame_dur;
    let refs = References {
        path: &path,
        hlg: false,
    };
    // (what, filter graph, must pass)
    let variants = [
        ("faithful", format!("setpts=N*{d}/TB"), true),
        (
            "frame 5 dropped",
            format!("select='not(eq(n,5))',setpts=N*{d}/TB"),
            false,
        ),
        (
            "frame 4 shown twice",
            format!("setpts='(N+gte(N,5))*{d}/TB'"),
            false,
        ),
    ];
    let mut wrong = Vec::new();
    for (i, (what, graph, pass)) in variants.iter().enumerate() {
        let name = format!("ffmpeg-{i}.mp4");
        let out = dir.join(&name);
        let line = format!(
            "-i {} -map 0:v:0 -vf {graph} -fps_mode passthrough -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p {name}",
            kind.file
        );
        if let Err(e) = ff::generate(dir, &line) {
            panic!("{}: {what}: {e}", kind.name);
        }
        let m = Media::read(&out).unwrap_or_else(|e| panic!("{}: {what}: {e}", kind.name));
        let (w, h) = m.coded_size();
        let pictures = mp4_pictures(&refs, &source, &m, &out, w as u32, h as u32)
            .unwrap_or_else(|e| panic!("{}: {what}: {e}", kind.name));
        let min = pictures
            .iter()
            .map(|p| p.psnr)
            .fold(f64::INFINITY, f64::min);
        let all: Vec<String> = pictures
            .iter()
            .map(|p| format!("{:.1} dB at {:.3} s", p.psnr, p.t))
            .collect();
        eprintln!(
            "CORPUS self-check {}: ffmpeg {what}: {}",
            kind.name,
            all.join(", ")
        );
        if (min >= MIN_PSNR) != *pass {
            wrong.push(format!(
                "ffmpeg's transcode with {what} {} the MP4 picture check: {}",
                if *pass { "fails" } else { "passes" },
                all.join(", ")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}: the reference is wrong:\n  - {}",
        kind.name,
        wrong.join("\n  - ")
    );
}

/// Number of targets `0, every, 2·every, …` strictly before `duration`, at
/// least one.
fn target_count(every: f64, duration: f64) -> usize {
    let mut n = 0;
    while (n as f64) * every < duration - 1e-9 {
        n += 1;
    }
    n.max(1)
}

#[allow(clippy::too_many_arguments)]
fn check_frames(
    f: &mut Failures,
    refs: &References,
    expect: &Expect,
    source: &Media,
    zip: &Path,
    report: &media::FramesReport,
    kind: &Kind,
    dir: &Path,
) -> f64 {
    let entries = match zip_entries(zip) {
        Ok(e) => e,
        Err(e) => {
            f.fail(format!("frames: {e}"));
            return f64::NAN;
        }
    };
    let rows = match index_rows(&entries) {
        Ok(r) => r,
        Err(e) => {
            f.fail(format!("frames: {e}"));
            return f64::NAN;
        }
    };
    let lo = target_count(kind.every, source.duration - expect.tol);
    let hi = target_count(kind.every, source.duration + expect.tol);
    f.check((lo..=hi).contains(&rows.len()), || {
        format!(
            "frames: {} rows for {:.3} s every {} s, expected {}",
            rows.len(),
            source.duration,
            kind.every,
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo} to {hi}")
            }
        )
    });
    f.check(report.count as usize == rows.len(), || {
        format!(
            "frames: report says {} but index.csv has {}",
            report.count,
            rows.len()
        )
    });
    let images: Vec<&String> = entries
        .iter()
        .map(|e| &e.0)
        .filter(|n| *n != "index.csv")
        .collect();
    f.check(images.len() == rows.len(), || {
        format!("frames: {} images for {} rows", images.len(), rows.len())
    });

    // Expected frame per row, then one reference decode per picture size.
    let mut wanted = Vec::new();
    for (k, row) in rows.iter().enumerate() {
        f.check((row.requested - k as f64 * kind.every).abs() < 1e-3, || {
            format!(
                "frames: row {} requested {} s, expected {}",
                k + 1,
                row.requested,
                k as f64 * kind.every
            )
        });
        let fr = source.on_screen(row.requested);
        let tol = (fr.dur / 2.0).max(0.001);
        f.check((row.actual - fr.t).abs() <= tol, || {
            format!(
                "frames: row {} (requested {:.3} s) actual_seconds {:.4} but the frame on screen is source frame {} at {:.4} s",
                row.index, row.requested, row.actual, fr.n, fr.t
            )
        });
        let Some((_, bytes)) = entries.iter().find(|e| e.0 == row.filename) else {
            f.fail(format!(
                "frames: row {} names {} which is not in the zip",
                row.index, row.filename
            ));
            continue;
        };
        let path = dir.join(format!("check-{}.jpg", row.index));
        if let Err(e) = std::fs::write(&path, bytes) {
            f.fail(format!("frames: cannot write {}: {e}", path.display()));
            continue;
        }
        let decoded = ff::rgb_image(&path);
        let _ = std::fs::remove_file(&path);
        match decoded {
            Ok((rgb, w, h)) => {
                f.check((w, h) == (row.width, row.height), || {
                    format!(
                        "frames: {} is {w}x{h} but index.csv says {}x{}",
                        row.filename, row.width, row.height
                    )
                });
                if k == 0 {
                    if let Some(p) = expect.size_problem("frames", w, h) {
                        f.fail(p);
                    }
                }
                wanted.push((row.index, row.requested, fr, rgb, w, h));
            }
            Err(e) => f.fail(format!("frames: {e}")),
        }
    }
    let mut min = f64::INFINITY;
    let mut sizes: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
    for w in &wanted {
        sizes.entry((w.4, w.5)).or_default().push(w.2.n);
    }
    for ((w, h), picks) in sizes {
        match refs.source(&picks, w, h) {
            Ok(pics) => {
                for (index, requested, fr, rgb, _, _) in
                    wanted.iter().filter(|x| (x.4, x.5) == (w, h))
                {
                    let p = ff::psnr(&pics[&fr.n], rgb);
                    min = min.min(p);
                    f.check(p >= MIN_PSNR, || {
                        format!(
                            "frames: image {index} (requested {requested:.3} s) PSNR {p:.1} dB < {MIN_PSNR} against source frame {} at {:.3} s",
                            fr.n, fr.t
                        )
                    });
                }
            }
            Err(e) => f.fail(format!("frames references: {e}")),
        }
    }
    min
}

fn check_poster(
    f: &mut Failures,
    refs: &References,
    expect: &Expect,
    source: &Media,
    poster: &Path,
    report: &media::PosterReport,
    requested: f64,
) -> f64 {
    let fr = source.on_screen(requested);
    let tol = (fr.dur / 2.0).max(0.001);
    f.check((report.time - fr.t).abs() <= tol, || {
        format!(
            "poster: time {:.4} s but the frame on screen at {requested:.4} s is source frame {} at {:.4} s",
            report.time, fr.n, fr.t
        )
    });
    let (rgb, w, h) = match ff::rgb_image(poster) {
        Ok(x) => x,
        Err(e) => {
            f.fail(format!("poster: {e}"));
            return f64::NAN;
        }
    };
    f.check((report.width, report.height) == (w, h), || {
        format!(
            "poster: report says {}x{} but the image is {w}x{h}",
            report.width, report.height
        )
    });
    if let Some(p) = expect.size_problem("poster", w, h) {
        f.fail(p);
    }
    match refs.source(&[fr.n], w, h) {
        Ok(pics) => {
            let p = ff::psnr(&pics[&fr.n], &rgb);
            f.check(p >= MIN_PSNR, || {
                format!(
                    "poster: PSNR {p:.1} dB < {MIN_PSNR} against source frame {} at {:.3} s (requested {requested:.3} s)",
                    fr.n, fr.t
                )
            });
            p
        }
        Err(e) => {
            f.fail(format!("poster reference: {e}"));
            f64::NAN
        }
    }
}

fn zip_entries(path: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("read zip: {e}"))?;
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
            let name = entry
                .name()
                .map_err(|e| format!("zip entry {i} name: {e}"))?
                .to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes)
                .map_err(|e| format!("zip entry {name}: {e}"))?;
            Ok((name, bytes))
        })
        .collect()
}

struct IndexRow {
    index: u64,
    requested: f64,
    actual: f64,
    filename: String,
    width: u32,
    height: u32,
}

fn index_rows(entries: &[(String, Vec<u8>)]) -> Result<Vec<IndexRow>, String> {
    let (_, csv) = entries
        .iter()
        .find(|(n, _)| n == "index.csv")
        .ok_or("no index.csv in the zip")?;
    let text = String::from_utf8_lossy(csv);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    if header != "index,requested_seconds,actual_seconds,filename,width,height" {
        return Err(format!("index.csv header {header:?}"));
    }
    lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            let bad = || format!("index.csv row {l:?}");
            if c.len() != 6 {
                return Err(bad());
            }
            Ok(IndexRow {
                index: c[0].parse().map_err(|_| bad())?,
                requested: c[1].parse().map_err(|_| bad())?,
                actual: c[2].parse().map_err(|_| bad())?,
                filename: c[3].to_string(),
                width: c[4].parse().map_err(|_| bad())?,
                height: c[5].parse().map_err(|_| bad())?,
            })
        })
        .collect()
}
