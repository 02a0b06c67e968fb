//! The video actor: one per unfinished video, running its state machine
//! queued → processing (probing → converting / extracting frames →
//! verifying → finalizing) → ready, or failed with a code.
//!
//! The pipelines run on a worker thread, never on the executor; the worker
//! talks back with messages, so the actor stays free to take a cancel.
//! Every transition is persisted before it is announced, each output is
//! published as soon as it is verified, and the run's work directory is
//! removed on every way out.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::admission::AdmissionMsg;
use crate::catalog::{Artefact, Change};
use crate::deps::Deps;
use crate::hub::HubMsg;
use crate::model::{ProgressEvent, SourceInfo, Video, VideoError};
use crate::ports::{object_key, CancelFlag, EngineError, EngineEvent, EngineJob, Produced};
use crate::state::{Stage, VideoState};

/// Progress goes to the hub at most this often (4 Hz).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

pub enum VideoMsg {
    SlotGranted,
    Probed(SourceInfo),
    Engine(EngineEvent),
    WorkerDone(Result<(), EngineError>),
    WorkerPanicked(String),
    /// Stops the video: its pipeline is cancelled and its files removed.
    /// `suspend` (shutdown) puts it back in the queue for the next start;
    /// otherwise (delete) it is left as it is for the caller to remove.
    Stop {
        suspend: bool,
        reply: RpcReplyPort<()>,
    },
}

impl std::fmt::Debug for VideoMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SlotGranted => f.write_str("SlotGranted"),
            Self::Probed(_) => f.write_str("Probed"),
            Self::Engine(e) => write!(f, "Engine({e:?})"),
            Self::WorkerDone(r) => write!(f, "WorkerDone({r:?})"),
            Self::WorkerPanicked(m) => write!(f, "WorkerPanicked({m})"),
            Self::Stop { suspend, .. } => write!(f, "Stop(suspend: {suspend})"),
        }
    }
}

pub(crate) struct VideoActor {
    pub deps: Arc<Deps>,
}

pub(crate) struct VideoArgs {
    pub video: Video,
    /// Shared with the supervisor, which cancels an orphaned worker if this
    /// actor crashes...
    pub cancel: CancelFlag,
    /// ...and waits for it to be gone before the video runs again.
    pub worker_alive: Arc<AtomicBool>,
}

pub(crate) struct VideoRun {
    video: Video,
    cancel: CancelFlag,
    worker_alive: Arc<AtomicBool>,
    has_slot: bool,
    worker_running: bool,
    last_progress: Option<Instant>,
    stopping: Option<(bool, RpcReplyPort<()>)>,
    /// Set when publishing an output failed: the run ends with it.
    failure: Option<VideoError>,
}

impl VideoActor {
    async fn persist(&self, run: &mut VideoRun, change: Change) -> Result<(), ActorProcessingErr> {
        run.video = self.deps.persist(&run.video.id, change).await?;
        Ok(())
    }

    fn release(&self, run: &mut VideoRun) {
        let _ = self.deps.admission.cast(AdmissionMsg::Release {
            owner: run.video.owner.clone(),
            video: run.video.id.clone(),
        });
        run.has_slot = false;
    }

    /// Ends the video's processing as `state` (ready or failed) and stops.
    async fn finish(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
        error: Option<VideoError>,
    ) -> Result<(), ActorProcessingErr> {
        let state = if error.is_some() {
            VideoState::Failed
        } else {
            VideoState::Ready
        };
        if let Some(e) = &error {
            tracing::info!(video = %run.video.id, code = %e.code, "video failed: {}", e.message);
        }
        let change = Change {
            state: Some(state),
            error: Some(error),
            ..Change::default()
        };
        self.end_run(myself, run, change).await
    }

    /// Ends this run as `change` says (its stage and in-flight mark
    /// cleared) and stops the actor. Files first: a video reported ready,
    /// failed or queued again has left nothing behind.
    async fn end_run(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
        change: Change,
    ) -> Result<(), ActorProcessingErr> {
        self.deps.clean_work_dir(&run.video.id).await;
        let change = Change {
            stage: Some(None),
            in_flight: Some(false),
            ..change
        };
        self.persist(run, change).await?;
        self.release(run);
        myself.stop(None);
        Ok(())
    }

    async fn start_run(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
    ) -> Result<(), ActorProcessingErr> {
        run.has_slot = true;
        self.persist(
            run,
            Change {
                state: Some(VideoState::Processing),
                stage: Some(Some(Stage::Probing)),
                in_flight: Some(true),
                ..Change::default()
            },
        )
        .await?;
        let id = run.video.id.clone();
        let work_dir = self.deps.work_dir(&id);
        self.deps
            .catalog
            .record_artefact(Artefact {
                location: work_dir.to_string_lossy().into_owned(),
                kind: "work-dir".into(),
                video_id: Some(id.clone()),
            })
            .await?;
        let prepared = {
            let dir = work_dir.clone();
            tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir)
            })
            .await?
        };
        if let Err(e) = prepared {
            let error = VideoError::new(
                "storage-unavailable",
                format!("cannot create work directory: {e}"),
            );
            return self.finish(myself, run, Some(error)).await;
        }
        let source = match self
            .deps
            .store
            .local_copy(&object_key(&id, "source"), &work_dir)
            .await
        {
            Ok(path) => path,
            Err(e) => {
                let error = VideoError::new(
                    "storage-unavailable",
                    format!("cannot read the source: {e}"),
                );
                return self.finish(myself, run, Some(error)).await;
            }
        };
        self.spawn_worker(myself.clone(), run, source, work_dir)?;
        Ok(())
    }

    /// Runs probe and processing on a thread of its own. Each output is
    /// verified there (it may decode) before the actor is told to publish it.
    fn spawn_worker(
        &self,
        myself: ActorRef<VideoMsg>,
        run: &mut VideoRun,
        source: PathBuf,
        work_dir: PathBuf,
    ) -> Result<(), ActorProcessingErr> {
        let engine = self.deps.engine.clone();
        let cancel = run.cancel.clone();
        let options = run.video.options.clone();
        let stall_timeout = self.deps.config.stall_timeout;
        run.worker_running = true;
        let alive = run.worker_alive.clone();
        alive.store(true, Ordering::SeqCst);
        let thread_alive = alive.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("video-{}", run.video.id))
            .spawn(move || {
                let work = std::panic::AssertUnwindSafe(|| -> Result<(), EngineError> {
                    let info = engine.probe(&source)?;
                    let _ = myself.cast(VideoMsg::Probed(info.clone()));
                    let job = EngineJob {
                        source,
                        info: info.clone(),
                        options,
                        work_dir,
                        stall_timeout,
                    };
                    let rejected: Mutex<Option<EngineError>> = Mutex::new(None);
                    let on_event = |event: EngineEvent| match event {
                        EngineEvent::Output(produced) => {
                            let _ =
                                myself.cast(VideoMsg::Engine(EngineEvent::Stage(Stage::Verifying)));
                            match engine.verify(&produced, &info) {
                                Ok(()) => {
                                    let _ = myself
                                        .cast(VideoMsg::Engine(EngineEvent::Output(produced)));
                                }
                                Err(e) => {
                                    if let Ok(mut slot) = rejected.lock() {
                                        slot.get_or_insert(e);
                                    }
                                    cancel.cancel();
                                }
                            }
                        }
                        other => {
                            let _ = myself.cast(VideoMsg::Engine(other));
                        }
                    };
                    let result = engine.process(&job, &cancel, &on_event);
                    match rejected.lock().ok().and_then(|mut r| r.take()) {
                        Some(e) => Err(e),
                        None => result,
                    }
                });
                let message = match std::panic::catch_unwind(work) {
                    Ok(result) => VideoMsg::WorkerDone(result),
                    Err(panic) => VideoMsg::WorkerPanicked(panic_text(&panic)),
                };
                let _ = myself.cast(message);
                thread_alive.store(false, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            alive.store(false, Ordering::SeqCst);
            return Err(e.into());
        }
        Ok(())
    }

    /// The engine's worker process died under the run. It costs the video
    /// an attempt (counted in the catalog with the actor's own crashes):
    /// within `worker_crash_retries` the video goes back to the queue and
    /// this actor ends (the supervisor starts a fresh one for a queued
    /// video); past it the video fails `pipeline-crashed`, since a file that
    /// kills the decoder every time would otherwise loop forever.
    async fn worker_crashed(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
        error: EngineError,
    ) -> Result<(), ActorProcessingErr> {
        let crashes = self.deps.catalog.add_crash(&run.video.id).await?;
        tracing::warn!(video = %run.video.id, crashes, "the worker process crashed: {error}");
        if crashes > self.deps.config.worker_crash_retries {
            let error = VideoError::new(error.code(), error.to_string());
            return self.finish(myself, run, Some(error)).await;
        }
        let change = Change {
            state: Some(VideoState::Queued),
            ..Change::default()
        };
        self.end_run(myself, run, change).await
    }

    async fn publish(
        &self,
        run: &mut VideoRun,
        produced: Produced,
    ) -> Result<Result<(), VideoError>, ActorProcessingErr> {
        let key = object_key(&run.video.id, produced.object_name());
        if let Err(e) = self.deps.store.put_file(&key, produced.path()).await {
            return Ok(Err(VideoError::new(
                "storage-unavailable",
                format!("cannot store {key}: {e}"),
            )));
        }
        let mut outputs = run.video.outputs.clone();
        match produced {
            Produced::Mp4 { report, .. } => outputs.mp4 = Some(report),
            Produced::Frames { report, .. } => outputs.frames = Some(report),
            Produced::Poster { report, .. } => outputs.poster = Some(report),
        }
        self.persist(
            run,
            Change {
                outputs: Some(outputs),
                ..Change::default()
            },
        )
        .await?;
        Ok(Ok(()))
    }

    async fn stopped(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
    ) -> Result<(), ActorProcessingErr> {
        let Some((suspend, reply)) = run.stopping.take() else {
            return Ok(());
        };
        self.deps.clean_work_dir(&run.video.id).await;
        let change = if suspend {
            Change {
                state: Some(VideoState::Queued),
                stage: Some(None),
                in_flight: Some(false),
                ..Change::default()
            }
        } else {
            // Being deleted: the record goes next; should that fail, the
            // next start re-queues the video rather than count a crash.
            Change {
                in_flight: Some(false),
                ..Change::default()
            }
        };
        self.persist(run, change).await?;
        self.release(run);
        let _ = reply.send(());
        myself.stop(None);
        Ok(())
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

impl Actor for VideoActor {
    type Msg = VideoMsg;
    type State = VideoRun;
    type Arguments = VideoArgs;

    async fn pre_start(
        &self,
        _: ActorRef<VideoMsg>,
        args: VideoArgs,
    ) -> Result<VideoRun, ActorProcessingErr> {
        Ok(VideoRun {
            video: args.video,
            cancel: args.cancel,
            worker_alive: args.worker_alive,
            has_slot: false,
            worker_running: false,
            last_progress: None,
            stopping: None,
            failure: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<VideoMsg>,
        run: &mut VideoRun,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(run.video.state, VideoState::Queued | VideoState::Processing) {
            myself.stop(None);
            return Ok(());
        }
        if run.video.crashes >= self.deps.config.max_crashes {
            let error = VideoError::new(
                "crashed-repeatedly",
                format!(
                    "processing crashed {} times; retry to try again",
                    run.video.crashes
                ),
            );
            return self.finish(&myself, run, Some(error)).await;
        }
        if run.video.state == VideoState::Processing {
            // Restarted mid-run: its partial work is gone; queue it again.
            self.deps.clean_work_dir(&run.video.id).await;
            self.persist(
                run,
                Change {
                    state: Some(VideoState::Queued),
                    stage: Some(None),
                    ..Change::default()
                },
            )
            .await?;
        }
        let me = myself.clone();
        self.deps.admission.cast(AdmissionMsg::Request {
            owner: run.video.owner.clone(),
            video: run.video.id.clone(),
            grant: Box::new(move || {
                let _ = me.cast(VideoMsg::SlotGranted);
            }),
        })?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<VideoMsg>,
        message: VideoMsg,
        run: &mut VideoRun,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            VideoMsg::SlotGranted if run.stopping.is_some() => self.release(run),
            VideoMsg::SlotGranted => self.start_run(&myself, run).await?,
            VideoMsg::Probed(info) => {
                self.persist(
                    run,
                    Change {
                        source: Some(info),
                        ..Change::default()
                    },
                )
                .await?;
            }
            VideoMsg::Engine(_) if run.stopping.is_some() || run.cancel.is_cancelled() => {}
            VideoMsg::Engine(EngineEvent::Stage(stage)) => {
                self.persist(
                    run,
                    Change {
                        stage: Some(Some(stage)),
                        ..Change::default()
                    },
                )
                .await?;
            }
            VideoMsg::Engine(EngineEvent::Progress(p)) => {
                let due = run
                    .last_progress
                    .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
                if due {
                    run.last_progress = Some(Instant::now());
                    let _ = self.deps.hub.cast(HubMsg::Progress(ProgressEvent {
                        video_id: run.video.id.clone(),
                        owner: run.video.owner.clone(),
                        seq: run.video.last_seq,
                        state: run.video.state,
                        stage: run.video.stage,
                        percent: p.percent,
                        speed: p.speed,
                        eta_seconds: p.eta_seconds,
                    }));
                }
            }
            VideoMsg::Engine(EngineEvent::Output(produced)) => {
                if let Err(error) = self.publish(run, produced).await? {
                    // The run fails with this once its worker has stopped.
                    run.cancel.cancel();
                    run.failure = Some(error);
                }
            }
            VideoMsg::WorkerDone(result) => {
                run.worker_running = false;
                if run.stopping.is_some() {
                    return self.stopped(&myself, run).await;
                }
                if let Some(error) = run.failure.take() {
                    return self.finish(&myself, run, Some(error)).await;
                }
                match result {
                    Ok(()) => {
                        self.persist(
                            run,
                            Change {
                                stage: Some(Some(Stage::Finalizing)),
                                ..Change::default()
                            },
                        )
                        .await?;
                        self.finish(&myself, run, None).await?;
                    }
                    Err(e) if e.is_crash() => self.worker_crashed(&myself, run, e).await?,
                    Err(e) => {
                        let error = VideoError::new(e.code(), e.to_string());
                        self.finish(&myself, run, Some(error)).await?;
                    }
                }
            }
            VideoMsg::WorkerPanicked(text) => {
                run.worker_running = false;
                if run.stopping.is_some() {
                    // Being deleted or parked anyway: finish the stop.
                    tracing::warn!(video = %run.video.id, "processing panicked while stopping: {text}");
                    return self.stopped(&myself, run).await;
                }
                return Err(format!("processing panicked: {text}").into());
            }
            VideoMsg::Stop { suspend, reply } => {
                run.cancel.cancel();
                run.stopping = Some((suspend, reply));
                if !run.worker_running {
                    self.stopped(&myself, run).await?;
                }
            }
        }
        Ok(())
    }
}
