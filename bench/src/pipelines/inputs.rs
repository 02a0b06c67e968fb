//! The two source files every row reads: their specs, their generation
//! with `synth::generate`, the cache that spares reruns the generation
//! (file names derived from the spec, files checked against it by probing),
//! and the description of each input the report quotes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vidmill_pipelines::synth::{self, AudioCodec, Container, Pattern, SynthSpec, VideoCodec};
use vidmill_pipelines::{probe, MediaFacts};

use crate::report::megabytes;
use crate::tools::keyframe_packets;
use crate::BenchResult;

/// Input A: 1080p H.264 + AAC in MP4 (`moov` at the end), keyframe every 3 s.
pub(crate) fn spec_a() -> SynthSpec {
    SynthSpec {
        width: 1920,
        height: 1080,
        fps: 30,
        seconds: 60.0,
        audio: Some(AudioCodec::Aac),
        keyframe_every: 90,
        pattern: Pattern::Bars,
        x264_preset: "veryfast",
        ..SynthSpec::new(VideoCodec::H264, Container::Mp4)
    }
}

/// Input B: 720p VP9 + Opus in WebM, keyframe every 3 s.
pub(crate) fn spec_b() -> SynthSpec {
    SynthSpec {
        width: 1280,
        height: 720,
        fps: 30,
        seconds: 60.0,
        audio: Some(AudioCodec::Opus),
        keyframe_every: 90,
        pattern: Pattern::Bars,
        ..SynthSpec::new(VideoCodec::Vp9, Container::Webm)
    }
}

/// A generated, probed source file.
#[derive(Debug)]
pub(crate) struct Input {
    pub(crate) label: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) facts: MediaFacts,
    pub(crate) probe_seconds: f64,
    pub(crate) generated: bool,
    /// Seconds between keyframes that the spec asks for.
    pub(crate) requested_spacing: f64,
}

impl Input {
    /// Reuses the cached file when it still probes as `spec` says, else
    /// generates it; then probes it (the probe time is reported, not counted).
    pub(crate) fn prepare(label: &'static str, spec: &SynthSpec, dir: &Path) -> BenchResult<Self> {
        let path = dir.join(cache_name(label, spec));
        let cached = path.is_file() && probe(&path).is_ok_and(|f| matches_spec(&f, spec));
        if !cached {
            generate(label, spec, &path)?;
        }
        let started = Instant::now();
        let facts = probe(&path)?;
        let probe_seconds = started.elapsed().as_secs_f64();
        if !matches_spec(&facts, spec) {
            return Err(format!("{} does not probe as its spec: {facts:?}", path.display()).into());
        }
        Ok(Self {
            label,
            path,
            facts,
            probe_seconds,
            generated: !cached,
            requested_spacing: f64::from(spec.keyframe_every) / f64::from(spec.fps),
        })
    }

    pub(crate) fn describe(&self) -> String {
        let v = &self.facts.video;
        let audio = self.facts.audio.as_ref().map_or("no audio", |a| &a.codec);
        let format = [
            v.profile.as_ref().map(|p| format!("profile {p}")),
            v.pixel_format.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        format!(
            "{}: {} ({format}) {}x{} + {audio}, {} container, {:.3} s, {:.1} MB",
            self.label,
            v.codec,
            v.width,
            v.height,
            self.facts.container,
            self.facts.duration.unwrap_or(0.0),
            megabytes(self.facts.size_bytes),
        )
    }

    /// The keyframe spacing vidmill probed against the one asked for, with
    /// ffprobe's count of packets flagged as keyframes as a second opinion.
    pub(crate) fn keyframes(&self) -> String {
        let probed = self.facts.video.keyframe_spacing;
        let line = format!(
            "{}: keyframe every {:.1} s requested, vidmill probed {}; ffprobe: {}",
            self.label,
            self.requested_spacing,
            probed.map_or("no spacing".into(), |s| format!("{s:.2} s")),
            keyframe_packets(&self.path)
        );
        let off = probed.is_none_or(|p| (p / self.requested_spacing - 1.0).abs() > 0.25);
        if off {
            format!("{line}. **Warning: the spacing is not what was asked for.**")
        } else {
            line
        }
    }
}

/// A file name that changes whenever the spec does.
fn cache_name(label: &str, spec: &SynthSpec) -> String {
    let audio = spec
        .audio
        .map_or("noaudio".into(), |a| format!("{a:?}").to_lowercase());
    let container = format!("{:?}", spec.container).to_lowercase();
    let extension = match spec.container {
        Container::Webm => "webm",
        Container::Mkv => "mkv",
        Container::Mov => "mov",
        _ => "mp4",
    };
    // The x264 preset only matters to the H.264 flavours.
    let video = match spec.video {
        VideoCodec::H264 | VideoCodec::H264High10 | VideoCodec::H264Yuv444 => {
            format!("{:?}-{}", spec.video, spec.x264_preset)
        }
        other => format!("{other:?}"),
    }
    .to_lowercase();
    format!(
        "{}-{}x{}-{}fps-{}s-{video}-{audio}-{container}-kf{}-{}.{extension}",
        label.to_lowercase(),
        spec.width,
        spec.height,
        spec.fps,
        spec.seconds,
        spec.keyframe_every,
        format!("{:?}", spec.pattern).to_lowercase(),
    )
}

fn matches_spec(facts: &MediaFacts, spec: &SynthSpec) -> bool {
    let codec = match spec.video {
        VideoCodec::H264 => Some("h264"),
        VideoCodec::Vp9 => Some("vp9"),
        // The other codecs are not used here; their names are not checked.
        _ => None,
    };
    codec.is_none_or(|c| facts.video.codec == c)
        && facts.video.width == spec.width
        && facts.video.height == spec.height
        && facts.audio.is_some() == spec.audio.is_some()
        && facts
            .duration
            .is_some_and(|d| (d - spec.seconds).abs() < 0.5)
}

/// Generates under a temporary name, so an interrupted run leaves no
/// half-written input in the cache.
fn generate(label: &str, spec: &SynthSpec, path: &Path) -> BenchResult<()> {
    eprintln!("generating input {label}: {}", path.display());
    let started = Instant::now();
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    synth::generate(spec, &partial)?;
    fs::rename(&partial, path)?;
    eprintln!("  generated in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_follow_the_spec() {
        let a = cache_name("A", &spec_a());
        assert_eq!(
            a,
            "a-1920x1080-30fps-60s-h264-veryfast-aac-mp4-kf90-bars.mp4"
        );
        let b = cache_name("B", &spec_b());
        assert_eq!(b, "b-1280x720-30fps-60s-vp9-opus-webm-kf90-bars.webm");
        let shorter = SynthSpec {
            seconds: 30.0,
            ..spec_b()
        };
        assert_ne!(cache_name("B", &shorter), b);
    }
}
