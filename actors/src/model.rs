//! The records the core keeps and hands to the edges: a video with its
//! options, source facts, outputs and error, and its persisted events.

use serde::{Deserialize, Serialize};

use crate::state::{Stage, VideoState};

/// Opaque, URL-safe, time-ordered video id (a ULID).
pub type VideoId = String;

/// Makes a new video id. Ids made in the same millisecond still sort in
/// the order they were made (a monotonic generator), so listing by id is
/// listing by creation.
pub fn new_id() -> VideoId {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let made = GENERATOR
        .lock()
        .ok()
        .and_then(|mut g| g.get_or_insert_with(ulid::Generator::new).generate().ok());
    // Only a poisoned lock or a 2^80 ids-per-millisecond overflow lands here.
    match made {
        Some(id) => id.to_string(),
        None => ulid::Ulid::from_datetime(std::time::SystemTime::now()).to_string(),
    }
}

/// Which outputs to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Mp4,
    Frames,
    Poster,
}

/// The image format of extracted frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FramesFormat {
    #[default]
    Jpeg,
    Png,
}

/// Which frame stands for a requested time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FramesAccuracy {
    /// The frame on screen at that time.
    #[default]
    Exact,
    /// The nearest keyframe at or before it (faster).
    Keyframe,
}

impl std::str::FromStr for FramesFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jpeg" | "jpg" => Ok(Self::Jpeg),
            "png" => Ok(Self::Png),
            _ => Err("expected jpeg or png".into()),
        }
    }
}

impl std::str::FromStr for FramesAccuracy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exact" => Ok(Self::Exact),
            "keyframe" => Ok(Self::Keyframe),
            _ => Err("expected exact or keyframe".into()),
        }
    }
}

/// Processing options chosen at upload (API.md query parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub outputs: Vec<OutputKind>,
    pub frames_every: f64,
    pub frames_format: FramesFormat,
    pub frames_accuracy: FramesAccuracy,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            outputs: vec![OutputKind::Mp4, OutputKind::Frames],
            frames_every: 10.0,
            frames_format: FramesFormat::Jpeg,
            frames_accuracy: FramesAccuracy::Exact,
        }
    }
}

impl Options {
    pub fn wants(&self, kind: OutputKind) -> bool {
        self.outputs.contains(&kind)
    }
}

/// What probing learned about the source, as the video resource shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub size_bytes: u64,
    pub container: String,
    pub duration: Option<f64>,
    /// Display size (rotation applied).
    pub width: u32,
    pub height: u32,
    pub video_codec: String,
    pub audio_codec: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mp4Output {
    pub size_bytes: u64,
    pub duration: Option<f64>,
    pub width: u32,
    pub height: u32,
    /// "remux" or "transcode".
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FramesOutput {
    pub size_bytes: u64,
    pub count: u64,
    pub every: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PosterOutput {
    pub size_bytes: u64,
}

/// Outputs published so far; each appears once verified. A run writes its
/// objects under keys of its own (`videos/{id}/runs/{run}/…`), so a run
/// that lost its lease can never overwrite what another published.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outputs {
    /// The run whose objects these are; none for outputs published before
    /// runs had keys of their own (at `videos/{id}/…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
    /// The last run started: if it is not `run`, it published nothing and
    /// whatever it wrote is removed when the next run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mp4: Option<Mp4Output>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<FramesOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poster: Option<PosterOutput>,
}

impl Outputs {
    /// The key of output object `name` (`video.mp4`, …) of video `id`.
    pub fn key(&self, id: &str, name: &str) -> String {
        match self.run {
            Some(run) => run_key(id, run, name),
            None => crate::ports::object_key(id, name),
        }
    }
}

/// The key of object `name` written by run `run` of video `id`.
pub fn run_key(id: &str, run: i64, name: &str) -> String {
    format!("videos/{id}/runs/{run}/{name}")
}

/// The prefix under which run `run` of video `id` writes.
pub fn run_prefix(id: &str, run: i64) -> String {
    format!("videos/{id}/runs/{run}/")
}

/// Why a video failed: a stable code (API.md) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoError {
    pub code: String,
    pub message: String,
}

impl VideoError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// One video as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Video {
    pub id: VideoId,
    pub owner: String,
    pub filename: String,
    pub state: VideoState,
    pub stage: Option<Stage>,
    pub attempts: u32,
    pub options: Options,
    pub source: Option<SourceInfo>,
    pub outputs: Outputs,
    pub error: Option<VideoError>,
    /// Processing runs that ended with the process or the actor crashing.
    pub crashes: u32,
    pub last_seq: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// A persisted state event (API.md "state" WebSocket message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEvent {
    pub video_id: VideoId,
    pub owner: String,
    pub seq: u64,
    pub state: VideoState,
    pub stage: Option<Stage>,
    pub error: Option<VideoError>,
    pub outputs: Outputs,
}

/// A live progress report (never persisted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressEvent {
    pub video_id: VideoId,
    pub owner: String,
    pub seq: u64,
    pub state: VideoState,
    pub stage: Option<Stage>,
    pub percent: f64,
    pub speed: f64,
    pub eta_seconds: Option<f64>,
}
