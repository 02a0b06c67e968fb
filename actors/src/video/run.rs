//! A video's processing run: the slot, the worker thread that probes and
//! processes, each output verified there and published here as soon as it
//! is, and the end of the run (ready, failed, queued again after a worker
//! crash, or stopped). The run's work directory is removed on every way
//! out.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ractor::{ActorProcessingErr, ActorRef};

use super::{Phase, Stopping, VideoActor, VideoMsg, VideoRun};
use crate::admission::AdmissionMsg;
use crate::catalog::{Artefact, Change};
use crate::error::CoreError;
use crate::hub::HubMsg;
use crate::model::{ProgressEvent, Video, VideoError};
use crate::ports::{object_key, EngineError, EngineEvent, EngineJob, Produced};
use crate::state::{Stage, VideoState};

/// Progress goes to the hub at most this often (4 Hz): the one throttle
/// between the pipelines and the subscribers.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

impl VideoActor {
    pub(super) async fn persist(
        &self,
        run: &mut VideoRun,
        change: Change,
    ) -> Result<Video, CoreError> {
        let video = self.deps.persist(&run.id, change).await?;
        run.video = Some(video.clone());
        Ok(video)
    }

    fn owner(run: &VideoRun) -> String {
        run.video
            .as_ref()
            .map(|v| v.owner.clone())
            .unwrap_or_default()
    }

    /// Asks admission for a slot; the grant comes back as a message.
    pub(super) fn request_slot(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
    ) -> Result<(), CoreError> {
        let me = myself.clone();
        self.deps
            .services
            .admission()?
            .cast(AdmissionMsg::Request {
                owner: Self::owner(run),
                video: run.id.clone(),
                grant: Box::new(move || {
                    let _ = me.cast(VideoMsg::SlotGranted);
                }),
            })?;
        run.phase = Phase::Waiting;
        Ok(())
    }

    /// Gives the slot (held or asked for) back.
    pub(super) fn release(&self, run: &mut VideoRun) {
        if let Ok(admission) = self.deps.services.admission() {
            let _ = admission.cast(AdmissionMsg::Release {
                video: run.id.clone(),
            });
        }
        run.phase = Phase::Idle;
    }

    /// Ends the video's processing as ready (no error) or failed.
    pub(super) async fn finish(
        &self,
        run: &mut VideoRun,
        error: Option<VideoError>,
    ) -> Result<(), ActorProcessingErr> {
        let state = if error.is_some() {
            VideoState::Failed
        } else {
            VideoState::Ready
        };
        if let Some(e) = &error {
            tracing::info!(video = %run.id, code = %e.code, "video failed: {}", e.message);
        }
        let change = Change {
            state: Some(state),
            error: Some(error),
            ..Change::default()
        };
        self.end_run(run, change).await
    }

    /// Ends this run as `change` says (its stage and in-flight mark
    /// cleared). Files first: a video reported ready, failed or queued
    /// again has left nothing behind.
    async fn end_run(&self, run: &mut VideoRun, change: Change) -> Result<(), ActorProcessingErr> {
        self.deps.clean_work_dir(&run.id).await;
        let change = Change {
            stage: Some(None),
            in_flight: Some(false),
            ..change
        };
        self.persist(run, change).await?;
        self.release(run);
        Ok(())
    }

    async fn start_run(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
    ) -> Result<(), ActorProcessingErr> {
        run.phase = Phase::Running;
        run.failure = None;
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
        let id = run.id.clone();
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
            return self.finish(run, Some(error)).await;
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
                return self.finish(run, Some(error)).await;
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
        let (cancel, guard) = self.deps.workers.start(&run.id);
        run.cancel = cancel.clone();
        let options = run
            .video
            .as_ref()
            .map(|v| v.options.clone())
            .unwrap_or_default();
        let stall_timeout = self.deps.config.stall_timeout;
        std::thread::Builder::new()
            .name(format!("video-{}", run.id))
            .spawn(move || {
                let _guard = guard;
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
            })?;
        Ok(())
    }

    /// The engine's worker process died under the run. It costs the video
    /// an attempt (counted in the catalog with the actor's own crashes):
    /// within `worker_crash_retries` the video goes back to the queue;
    /// past it the video fails `pipeline-crashed`, since a file that kills
    /// the decoder every time would otherwise loop forever.
    async fn worker_crashed(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
        error: EngineError,
    ) -> Result<(), ActorProcessingErr> {
        let crashes = self.deps.catalog.add_crash(&run.id).await?;
        tracing::warn!(video = %run.id, crashes, "the worker process crashed: {error}");
        if crashes > self.deps.config.worker_crash_retries {
            let error = VideoError::new(error.code(), error.to_string());
            return self.finish(run, Some(error)).await;
        }
        let change = Change {
            state: Some(VideoState::Queued),
            ..Change::default()
        };
        self.end_run(run, change).await?;
        self.request_slot(myself, run)?;
        Ok(())
    }

    async fn publish(
        &self,
        run: &mut VideoRun,
        produced: Produced,
    ) -> Result<Result<(), VideoError>, ActorProcessingErr> {
        let key = object_key(&run.id, produced.object_name());
        if let Err(e) = self.deps.store.put_file(&key, produced.path()).await {
            return Ok(Err(VideoError::new(
                "storage-unavailable",
                format!("cannot store {key}: {e}"),
            )));
        }
        let mut outputs = run
            .video
            .as_ref()
            .map(|v| v.outputs.clone())
            .unwrap_or_default();
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

    /// The worker has ended after a delete or suspend asked it to stop.
    async fn stopped(
        &self,
        run: &mut VideoRun,
        stopping: Stopping,
    ) -> Result<(), ActorProcessingErr> {
        match stopping {
            Stopping::Delete(reply) => {
                let result = self.remove(run).await;
                let _ = reply.send(result);
            }
            Stopping::Suspend(reply) => {
                self.suspended(run).await?;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    /// Leaves the video queued for the next start, its files removed.
    pub(super) async fn suspended(&self, run: &mut VideoRun) -> Result<(), ActorProcessingErr> {
        self.deps.clean_work_dir(&run.id).await;
        if run.video.as_ref().is_some_and(|v| !v.state.is_terminal()) {
            self.persist(
                run,
                Change {
                    state: Some(VideoState::Queued),
                    stage: Some(None),
                    in_flight: Some(false),
                    ..Change::default()
                },
            )
            .await?;
        }
        self.release(run);
        Ok(())
    }

    /// Messages of a run: the slot, the worker's reports, its end.
    pub(super) async fn progress_of_run(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
        message: VideoMsg,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            VideoMsg::Command(_) => {}
            VideoMsg::SlotGranted if run.phase != Phase::Waiting => self.release(run),
            VideoMsg::SlotGranted => self.start_run(myself, run).await?,
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
                if let (true, Some(video)) = (due, run.video.as_ref()) {
                    run.last_progress = Some(Instant::now());
                    if let Ok(hub) = self.deps.services.hub() {
                        let _ = hub.cast(HubMsg::Progress(std::sync::Arc::new(ProgressEvent {
                            video_id: video.id.clone(),
                            owner: video.owner.clone(),
                            seq: video.last_seq,
                            state: video.state,
                            stage: video.stage,
                            percent: p.percent,
                            speed: p.speed,
                            eta_seconds: p.eta_seconds,
                        })));
                    }
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
                if let Some(stopping) = run.stopping.take() {
                    return self.stopped(run, stopping).await;
                }
                if let Some(error) = run.failure.take() {
                    return self.finish(run, Some(error)).await;
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
                        self.finish(run, None).await?;
                    }
                    Err(e) if e.is_crash() => self.worker_crashed(myself, run, e).await?,
                    Err(e) => {
                        let error = VideoError::new(e.code(), e.to_string());
                        self.finish(run, Some(error)).await?;
                    }
                }
            }
            VideoMsg::WorkerPanicked(text) => {
                if let Some(stopping) = run.stopping.take() {
                    // Being deleted or parked anyway: finish the stop.
                    tracing::warn!(video = %run.id, "processing panicked while stopping: {text}");
                    return self.stopped(run, stopping).await;
                }
                // The supervisor counts it against the video and starts a
                // fresh actor.
                return Err(format!("processing panicked: {text}").into());
            }
        }
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
