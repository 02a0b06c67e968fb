//! Test doubles for the core's ports: a directory store (real files) and a
//! scripted engine whose every run does what the test tells it to, for the
//! failure paths the real engine cannot produce on demand.
#![allow(dead_code)]

pub mod backend;
#[cfg(feature = "postgres")]
pub mod pg;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vidmill_actors::*;

/// Objects as files under a directory.
#[derive(Debug)]
pub struct DirStore(pub PathBuf);

impl DirStore {
    pub fn path(&self, key: &str) -> PathBuf {
        self.0.join(key)
    }
}

impl BlobStore for DirStore {
    fn put_file<'a>(
        &'a self,
        key: &'a str,
        file: &'a Path,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let target = self.path(key);
            std::fs::create_dir_all(target.parent().expect("parent"))
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            std::fs::rename(file, &target).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Ok(std::fs::metadata(&target)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
                .len())
        })
    }

    fn local_copy<'a>(
        &'a self,
        key: &'a str,
        _scratch: &'a Path,
    ) -> BoxFuture<'a, Result<PathBuf, StoreError>> {
        Box::pin(async move {
            let path = self.path(key);
            if path.exists() {
                Ok(path)
            } else {
                Err(StoreError::NotFound(key.into()))
            }
        })
    }

    fn len<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            std::fs::metadata(self.path(key))
                .map(|m| m.len())
                .map_err(|_| StoreError::NotFound(key.into()))
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            // A whole object's key is a prefix too (of itself).
            let path = self.path(prefix.trim_end_matches('/'));
            if path.is_file() {
                let _ = std::fs::remove_file(&path);
            } else {
                let _ = std::fs::remove_dir_all(&path);
            }
            Ok(())
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            std::fs::rename(self.path(from), self.path(to))
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        })
    }

    fn open<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn BlobObject>, StoreError>> {
        Box::pin(async move {
            let bytes =
                std::fs::read(self.path(key)).map_err(|_| StoreError::NotFound(key.into()))?;
            Ok(Box::new(Loaded(bytes)) as Box<dyn BlobObject>)
        })
    }

    // Multipart uploads as S3 keeps them: parts apart from the objects,
    // invisible until joined; the minimum part size is enforced, so a
    // writer that gets it wrong fails here as it would on S3.

    fn start_parts<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(async move {
            let upload = new_id();
            std::fs::create_dir_all(self.parts_dir(&upload)).map_err(unavailable)?;
            Ok(upload)
        })
    }

    fn put_part<'a>(
        &'a self,
        _key: &'a str,
        upload: &'a str,
        number: u32,
        bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(async move {
            let dir = self.parts_dir(upload);
            if !dir.exists() {
                return Err(StoreError::NotFound(format!("multipart upload {upload}")));
            }
            let etag = format!("{:x}-{}", checksum(&bytes), bytes.len());
            std::fs::write(dir.join(number.to_string()), bytes).map_err(unavailable)?;
            Ok(etag)
        })
    }

    fn join_parts<'a>(
        &'a self,
        key: &'a str,
        upload: &'a str,
        parts: &'a [StoredPart],
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let dir = self.parts_dir(upload);
            if !dir.exists() {
                // Joined before: the object stands.
                return self.len(key).await;
            }
            let mut whole = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                let bytes = std::fs::read(dir.join(part.number.to_string()))
                    .map_err(|_| StoreError::Unavailable(format!("no part {}", part.number)))?;
                let etag = format!("{:x}-{}", checksum(&bytes), bytes.len());
                if etag != part.etag || bytes.len() as u64 != part.size {
                    return Err(StoreError::Unavailable(format!(
                        "part {} differs",
                        part.number
                    )));
                }
                if i + 1 < parts.len() && part.size < MIN_PART_BYTES {
                    return Err(StoreError::Unavailable(format!(
                        "part {} is too small",
                        part.number
                    )));
                }
                whole.extend_from_slice(&bytes);
            }
            let target = self.path(key);
            std::fs::create_dir_all(target.parent().expect("parent")).map_err(unavailable)?;
            let temp = dir.join("joined");
            std::fs::write(&temp, &whole).map_err(unavailable)?;
            std::fs::rename(&temp, &target).map_err(unavailable)?;
            std::fs::remove_dir_all(&dir).map_err(unavailable)?;
            Ok(whole.len() as u64)
        })
    }

    fn abort_parts<'a>(
        &'a self,
        _key: &'a str,
        upload: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let _ = std::fs::remove_dir_all(self.parts_dir(upload));
            Ok(())
        })
    }

    fn put_bytes<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let target = self.path(key);
            std::fs::create_dir_all(target.parent().expect("parent")).map_err(unavailable)?;
            std::fs::write(target, bytes).map_err(unavailable)
        })
    }

    fn get_bytes<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(async move {
            std::fs::read(self.path(key)).map_err(|_| StoreError::NotFound(key.into()))
        })
    }
}

impl DirStore {
    /// Where the parts of multipart upload `upload` wait.
    pub fn parts_dir(&self, upload: &str) -> PathBuf {
        self.0.join(".multipart").join(upload)
    }

    /// Multipart uploads neither joined nor aborted.
    pub fn open_multiparts(&self) -> usize {
        std::fs::read_dir(self.0.join(".multipart")).map_or(0, |d| d.count())
    }
}

fn unavailable(e: std::io::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A whole object in memory; the core never reads by range, so this only
/// has to be right, not fast.
#[derive(Debug)]
struct Loaded(Vec<u8>);

struct OneChunk(Option<Vec<u8>>);

impl BlobObject for Loaded {
    fn size_bytes(&self) -> u64 {
        self.0.len() as u64
    }

    fn modified(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH
    }

    fn range(&self, start: u64, count: u64) -> Box<dyn ByteChunks> {
        let (start, end) = (start as usize, (start + count) as usize);
        Box::new(OneChunk(self.0.get(start..end).map(<[u8]>::to_vec)))
    }
}

impl ByteChunks for OneChunk {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move { Ok(self.0.take()) })
    }
}

/// What one run of the scripted engine does, chosen by the source file's
/// first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Converts and extracts frames in `steps` steps of `step_ms`.
    Work {
        steps: u32,
        step_ms: u64,
    },
    /// Works until cancelled.
    Hang,
    /// Works until cancelled, then panics (a pipeline that breaks while
    /// being stopped).
    PanicWhenCancelled,
    /// Fails with a pipeline error the first `times` runs, then works.
    FailFirst {
        times: usize,
    },
    Stall,
    Panic,
    /// The worker process dies under the first `times` runs (as a
    /// SIGSEGV would), then works.
    CrashFirst {
        times: usize,
    },
    /// The worker goes over its memory limit.
    OverLimit,
    Unsupported,
}

impl Script {
    pub fn encode(&self) -> String {
        match self {
            Self::Work { steps, step_ms } => format!("work {steps} {step_ms}"),
            Self::Hang => "hang".into(),
            Self::PanicWhenCancelled => "panic-when-cancelled".into(),
            Self::FailFirst { times } => format!("fail {times}"),
            Self::Stall => "stall".into(),
            Self::Panic => "panic".into(),
            Self::CrashFirst { times } => format!("crash {times}"),
            Self::OverLimit => "over-limit".into(),
            Self::Unsupported => "unsupported".into(),
        }
    }

    fn decode(text: &str) -> Self {
        let parts: Vec<&str> = text.split_whitespace().collect();
        match parts.as_slice() {
            ["work", steps, ms] => Self::Work {
                steps: steps.parse().unwrap_or(1),
                step_ms: ms.parse().unwrap_or(1),
            },
            ["hang"] => Self::Hang,
            ["panic-when-cancelled"] => Self::PanicWhenCancelled,
            ["fail", n] => Self::FailFirst {
                times: n.parse().unwrap_or(1),
            },
            ["stall"] => Self::Stall,
            ["panic"] => Self::Panic,
            ["crash", n] => Self::CrashFirst {
                times: n.parse().unwrap_or(1),
            },
            ["over-limit"] => Self::OverLimit,
            _ => Self::Unsupported,
        }
    }
}

/// Records what the engine did, for assertions.
#[derive(Debug, Default)]
pub struct Record {
    pub started: Mutex<Vec<String>>,
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
    pub runs: Mutex<HashMap<String, usize>>,
}

#[derive(Debug, Default)]
pub struct ScriptedEngine {
    pub record: Arc<Record>,
}

fn script_of(source: &Path) -> Script {
    // The first line only: a test may pad the source after it.
    let text = std::fs::read(source).unwrap_or_default();
    let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
    Script::decode(&String::from_utf8_lossy(first))
}

fn write(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, name.as_bytes()).expect("write output");
    path
}

impl MediaEngine for ScriptedEngine {
    fn probe(&self, source: &Path) -> Result<SourceInfo, EngineError> {
        if script_of(source) == Script::Unsupported {
            return Err(EngineError::Unsupported("not a video".into()));
        }
        Ok(SourceInfo {
            size_bytes: 10,
            container: "test".into(),
            duration: Some(1.0),
            width: 2,
            height: 2,
            video_codec: "test".into(),
            audio_codec: None,
        })
    }

    fn process(
        &self,
        job: &EngineJob,
        cancel: &CancelFlag,
        events: &(dyn Fn(EngineEvent) + Send + Sync),
    ) -> Result<(), EngineError> {
        let name = job
            .work_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let run = {
            let mut runs = self.record.runs.lock().expect("runs");
            let n = runs.entry(name.clone()).or_default();
            *n += 1;
            *n
        };
        self.record.started.lock().expect("started").push(name);
        let now = self.record.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.record.max_running.fetch_max(now, Ordering::SeqCst);
        let result = self.script(job, cancel, events, run);
        self.record.running.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn verify(&self, _: &Produced, _: &SourceInfo) -> Result<(), EngineError> {
        Ok(())
    }
}

impl ScriptedEngine {
    fn script(
        &self,
        job: &EngineJob,
        cancel: &CancelFlag,
        events: &(dyn Fn(EngineEvent) + Send + Sync),
        run: usize,
    ) -> Result<(), EngineError> {
        let tick = |ms: u64| -> Result<(), EngineError> {
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                if cancel.is_cancelled() {
                    return Err(EngineError::Cancelled);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        };
        let (steps, step_ms) = match script_of(&job.source) {
            Script::Work { steps, step_ms } => (steps, step_ms),
            Script::FailFirst { times } if run <= times => {
                return Err(EngineError::Failed("scripted failure".into()))
            }
            Script::FailFirst { .. } => (2, 10),
            Script::Hang => loop {
                events(EngineEvent::Stage(Stage::Converting));
                tick(20)?;
            },
            Script::PanicWhenCancelled => loop {
                events(EngineEvent::Stage(Stage::Converting));
                if tick(20).is_err() {
                    panic!("scripted panic while stopping");
                }
            },
            Script::Stall => return Err(EngineError::Stalled("no progress for 1s".into())),
            Script::Panic => panic!("scripted panic"),
            Script::CrashFirst { times } if run <= times => {
                events(EngineEvent::Stage(Stage::Converting));
                return Err(EngineError::Crashed(
                    "the worker process was killed by SIGSEGV".into(),
                ));
            }
            Script::CrashFirst { .. } => (2, 10),
            Script::OverLimit => {
                return Err(EngineError::LimitExceeded {
                    limit: "limits.worker_memory_bytes".into(),
                    why: "memory over the limit".into(),
                })
            }
            Script::Unsupported => return Err(EngineError::Unsupported("not a video".into())),
        };
        events(EngineEvent::Stage(Stage::Converting));
        for i in 0..steps {
            tick(step_ms)?;
            events(EngineEvent::Progress(EngineProgress {
                percent: (i + 1) as f64 * 100.0 / steps as f64,
                speed: 1.0,
                eta_seconds: None,
            }));
        }
        events(EngineEvent::Output(Produced::Mp4 {
            path: write(&job.work_dir, "video.mp4"),
            report: Mp4Output {
                size_bytes: 9,
                duration: Some(1.0),
                width: 2,
                height: 2,
                method: "transcode".into(),
            },
        }));
        events(EngineEvent::Stage(Stage::ExtractingFrames));
        events(EngineEvent::Output(Produced::Frames {
            path: write(&job.work_dir, "frames.zip"),
            report: FramesOutput {
                size_bytes: 10,
                count: 1,
                every: job.options.frames_every,
            },
        }));
        events(EngineEvent::Output(Produced::Poster {
            path: write(&job.work_dir, "poster.jpg"),
            report: PosterOutput { size_bytes: 10 },
        }));
        Ok(())
    }
}

/// A running core over a temp directory.
pub struct TestCore {
    pub dir: tempfile::TempDir,
    pub handle: Handle,
    pub recovery: Recovery,
    pub engine: Arc<ScriptedEngine>,
    pub store: Arc<DirStore>,
    pub notes: Arc<Inbox>,
}

/// A notifier that keeps what it is given and refuses the first
/// `refuse` attempts (a receiver that is down for a while).
#[derive(Debug, Default)]
pub struct Inbox {
    pub delivered: Mutex<Vec<Notification>>,
    pub attempts: AtomicUsize,
    pub refuse: AtomicUsize,
    pub email: std::sync::atomic::AtomicBool,
}

impl Notifier for Inbox {
    /// The webhook channel; the email channel is left off unless a test
    /// turns it on.
    fn enabled(&self, channel: &str) -> bool {
        channel == "webhook" || self.email.load(Ordering::SeqCst)
    }

    fn deliver<'a>(&'a self, note: &'a Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
            if attempt <= self.refuse.load(Ordering::SeqCst) {
                return Err(format!("refused attempt {attempt}"));
            }
            self.delivered.lock().expect("inbox").push(note.clone());
            Ok(())
        })
    }
}

pub fn config(dir: &Path, cpu_budget: usize) -> CoreConfig {
    CoreConfig {
        cpu_budget,
        ..CoreConfig::new(dir.join("work"))
    }
}

pub fn plenty() -> HeadroomProbe {
    Arc::new(|| Headroom {
        free_memory: u64::MAX,
        free_disk: u64::MAX,
    })
}

pub async fn start_in(dir: tempfile::TempDir, cpu_budget: usize) -> TestCore {
    let config = config(dir.path(), cpu_budget);
    start_with(dir, config).await
}

pub async fn start_with(dir: tempfile::TempDir, config: CoreConfig) -> TestCore {
    let catalog = backend::shared_for(dir.path()).await;
    let engine = Arc::new(ScriptedEngine::default());
    let store = Arc::new(DirStore(dir.path().join("objects")));
    let notes = Arc::new(Inbox::default());
    let (handle, recovery) = Core::start(
        config,
        catalog,
        engine.clone(),
        store.clone(),
        notes.clone(),
        plenty(),
    )
    .await
    .expect("start core");
    TestCore {
        dir,
        handle,
        recovery,
        engine,
        store,
        notes,
    }
}

pub async fn start(cpu_budget: usize) -> TestCore {
    start_in(tempfile::tempdir().expect("tempdir"), cpu_budget).await
}

impl TestCore {
    /// Uploads a source whose script is `script`.
    pub async fn create(&self, owner: &str, script: Script) -> Video {
        let src = self.dir.path().join(format!("upload-{}", new_id()));
        std::fs::write(&src, script.encode()).expect("write source");
        self.handle
            .create(owner, "clip.mov", Options::default(), &src)
            .await
            .expect("create")
    }

    /// Polls until the video satisfies `done` (never a fixed sleep).
    pub async fn wait_for(
        &self,
        owner: &str,
        id: &str,
        what: &str,
        done: impl Fn(&Video) -> bool,
    ) -> Video {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.handle.get(owner, id).await.expect("get");
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {v:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_state(&self, owner: &str, id: &str, state: VideoState) -> Video {
        self.wait_for(owner, id, state.as_str(), |v| v.state == state)
            .await
    }

    /// The core's stats once no pipeline slot is held (or after 5 s): an
    /// actor announces its video's end a moment before it hands its slot
    /// back to admission.
    pub async fn settled_admission(&self) -> Stats {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stats = self.handle.stats().await.expect("stats");
            if stats.admission.running == 0 || Instant::now() > deadline {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Files left in the work directory.
    pub fn work_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path().join("work"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}
