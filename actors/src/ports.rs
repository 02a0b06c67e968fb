//! The ports the core needs from the outside, implemented by the root crate:
//! a [`MediaEngine`] (GStreamer there) and a [`BlobStore`] (a directory or
//! S3). The core depends only on these traits, so its tests can run a
//! scripted engine and need no GStreamer.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::{FramesOutput, Mp4Output, Options, PosterOutput, SourceInfo};
use crate::state::Stage;

/// Why the engine failed, in the codes a video's `error` carries. It is
/// also what a worker process reports on its pipe, hence serde.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum EngineError {
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Stalled(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    VerificationFailed(String),
    #[error("{0}")]
    Failed(String),
    /// The worker process died (a signal, or an exit without a result);
    /// the message says how.
    #[error("{0}")]
    Crashed(String),
    /// The source or the worker went over a configured limit: `limit` is
    /// its configuration key (e.g. `limits.max_pixels`), which the message
    /// shown always names.
    #[error("{}", naming(why, limit))]
    LimitExceeded { limit: String, why: String },
}

/// `why`, followed by the limit's key unless it already names it, so a
/// failed video's message always says which limit stopped it.
fn naming(why: &str, limit: &str) -> String {
    if why.contains(limit) {
        why.to_string()
    } else {
        format!("{why} ({limit})")
    }
}

impl EngineError {
    /// The API.md error code for a video that failed this way.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unsupported(_) => "unsupported-media",
            Self::Corrupt(_) => "corrupt-media",
            Self::Stalled(_) => "pipeline-stalled",
            Self::Cancelled => "cancelled",
            Self::VerificationFailed(_) => "verification-failed",
            Self::Failed(_) => "pipeline-failed",
            Self::Crashed(_) => "pipeline-crashed",
            Self::LimitExceeded { .. } => "limit-exceeded",
        }
    }

    /// The worker died under the run: not the input's verdict, so the run
    /// is worth another attempt (a limit, by contrast, is deterministic).
    pub fn is_crash(&self) -> bool {
        matches!(self, Self::Crashed(_))
    }
}

/// Asks a running engine call to stop; checked often by the engine.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself, for engines whose own cancel token can share it.
    pub fn as_flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// A progress report from the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineProgress {
    pub percent: f64,
    pub speed: f64,
    pub eta_seconds: Option<f64>,
}

/// One finished output file, not yet verified or published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Produced {
    Mp4 { path: PathBuf, report: Mp4Output },
    Frames { path: PathBuf, report: FramesOutput },
    Poster { path: PathBuf, report: PosterOutput },
}

impl Produced {
    pub fn path(&self) -> &Path {
        match self {
            Self::Mp4 { path, .. } | Self::Frames { path, .. } | Self::Poster { path, .. } => path,
        }
    }

    /// The object name under the video's key prefix.
    pub fn object_name(&self) -> &'static str {
        match self {
            Self::Mp4 { .. } => "video.mp4",
            Self::Frames { .. } => "frames.zip",
            Self::Poster { .. } => "poster.jpg",
        }
    }
}

/// What the engine tells the video while it works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineEvent {
    Stage(Stage),
    Progress(EngineProgress),
    /// An output is complete: the video verifies and publishes it at once.
    Output(Produced),
}

/// One processing run.
#[derive(Debug, Clone)]
pub struct EngineJob {
    pub source: PathBuf,
    pub info: SourceInfo,
    pub options: Options,
    /// Directory for outputs; it exists and belongs to this run.
    pub work_dir: PathBuf,
    pub stall_timeout: Duration,
}

/// The media side: probe, process, verify. Calls block (they run GStreamer
/// pipelines); the core makes them on blocking threads, never the executor.
pub trait MediaEngine: Send + Sync + 'static {
    /// What the source is; `Unsupported`/`Corrupt` for files it cannot take.
    fn probe(&self, source: &Path) -> Result<SourceInfo, EngineError>;

    /// Makes the outputs `job.options` asks for, reporting stages, progress
    /// and each output as it completes through `events`.
    fn process(
        &self,
        job: &EngineJob,
        cancel: &CancelFlag,
        events: &(dyn Fn(EngineEvent) + Send + Sync),
    ) -> Result<(), EngineError>;

    /// Checks an output against the source before it is published.
    fn verify(&self, output: &Produced, source: &SourceInfo) -> Result<(), EngineError>;
}

/// A boxed future, as the store port returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Failure of the object store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Durable object storage for sources and outputs, keyed
/// `videos/{id}/source`, `videos/{id}/video.mp4`, ….
pub trait BlobStore: Send + Sync + 'static {
    /// Moves (or copies) a finished local file into the store under `key`,
    /// atomically: the object is absent or complete. Returns its length.
    fn put_file<'a>(
        &'a self,
        key: &'a str,
        file: &'a Path,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// A local path to read `key` from, fetching it into `scratch` when the
    /// store is remote. The path stays valid until `scratch` is removed.
    fn local_copy<'a>(
        &'a self,
        key: &'a str,
        scratch: &'a Path,
    ) -> BoxFuture<'a, Result<PathBuf, StoreError>>;

    fn len<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Removes every object whose key starts with `prefix`.
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Opens `key` for ranged reads (serving outputs); `NotFound` when it
    /// does not exist.
    fn open<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn BlobObject>, StoreError>>;

    /// Whether the store can be used now (`/readyz`): reachable, writable.
    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Moves object `from` to `to` (replacing it) inside the store.
    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// A URL that lets its holder `method` the object `key` directly, for
    /// `valid`; `None` when the store cannot presign (files).
    fn presign<'a>(
        &'a self,
        _method: PresignMethod,
        _key: &'a str,
        _valid: Duration,
    ) -> BoxFuture<'a, Result<Option<Presigned>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    // Multipart uploads, for resumable uploads whose bytes reach different
    // nodes (a cluster): each request's bytes become parts of one upload
    // in the store, joined into the object when the last byte is in. A
    // store that cannot (files: a cluster refuses them) says `Unavailable`.

    /// Starts a multipart upload that will become object `key`; returns its
    /// id.
    fn start_parts<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(async { Err(no_parts()) })
    }

    /// Stores part `number` (from 1) of multipart upload `upload` of `key`;
    /// returns its entity tag. Every part but the last must hold at least
    /// [`MIN_PART_BYTES`].
    fn put_part<'a>(
        &'a self,
        _key: &'a str,
        _upload: &'a str,
        _number: u32,
        _bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(async { Err(no_parts()) })
    }

    /// Joins `parts` (in order) into object `key`, atomically: the object
    /// is absent or whole. Returns its length.
    fn join_parts<'a>(
        &'a self,
        _key: &'a str,
        _upload: &'a str,
        _parts: &'a [StoredPart],
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async { Err(no_parts()) })
    }

    /// Abandons multipart upload `upload` and its parts; one that is
    /// already gone (joined or aborted) is no error.
    fn abort_parts<'a>(
        &'a self,
        _key: &'a str,
        _upload: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Err(no_parts()) })
    }

    /// Writes a small object (at most a part) whole, replacing it.
    fn put_bytes<'a>(
        &'a self,
        _key: &'a str,
        _bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Err(no_parts()) })
    }

    /// Reads a small object whole.
    fn get_bytes<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(async { Err(no_parts()) })
    }
}

/// The smallest part a multipart upload may have but for its last (S3's
/// rule, which every S3 store shares).
pub const MIN_PART_BYTES: u64 = 5 << 20;

fn no_parts() -> StoreError {
    StoreError::Unavailable("this store keeps no multipart uploads; a cluster needs S3".into())
}

/// One stored part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPart {
    pub number: u32,
    /// What the store answered for it; joining needs it.
    pub etag: String,
    pub size: u64,
}

/// What a presigned URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresignMethod {
    Get,
    Put,
}

/// A presigned request: its URL and the headers the client must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// A notification to deliver: a video's processing ended.
#[derive(Debug, Clone)]
pub struct Notification {
    /// `video.ready` or `video.failed`.
    pub kind: String,
    /// `webhook` or `email`.
    pub channel: String,
    /// The owner's address, for the email channel.
    pub email: Option<String>,
    /// The state event it announces; its `seq` makes it unique per video.
    pub event: crate::model::StateEvent,
    /// The video as it is now.
    pub video: crate::model::Video,
}

/// Where notifications go (a webhook, mail); the root crate implements it.
pub trait Notifier: Send + Sync + 'static {
    /// Whether `channel` is configured; notifications for a channel that is
    /// not are dropped.
    fn enabled(&self, channel: &str) -> bool;

    /// One delivery attempt; an error is retried later with backoff.
    fn deliver<'a>(&'a self, note: &'a Notification) -> BoxFuture<'a, Result<(), String>>;
}

/// No channel: notifications are dropped (the offline worker, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNotifier;

impl Notifier for NoNotifier {
    fn enabled(&self, _: &str) -> bool {
        false
    }

    fn deliver<'a>(&'a self, _: &'a Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// A stored object opened for reading: what HTTP validators are made of,
/// and its bytes by range.
pub trait BlobObject: Send + Sync + std::fmt::Debug {
    fn size_bytes(&self) -> u64;

    /// When the object was last replaced.
    fn modified(&self) -> SystemTime;

    /// `count` bytes from `start` (within the object), in chunks.
    fn range(&self, start: u64, count: u64) -> Box<dyn ByteChunks>;
}

/// Bytes that arrive in chunks (a file read piece by piece, an S3 body).
pub trait ByteChunks: Send {
    /// The next chunk, or `None` after the last one.
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>>;
}

/// The key of a video's object.
pub fn object_key(video_id: &str, name: &str) -> String {
    format!("videos/{video_id}/{name}")
}
