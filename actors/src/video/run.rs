//! A video's processing run under its lease: the worker thread that
//! probes and processes, each output verified there and published here as
//! soon as it is, the heartbeats that keep the lease, and the end of the
//! run (ready, failed, queued again after a worker crash, stopped, or lost
//! with the lease). Every change the run makes is fenced by the lease. The
//! run's work directory is removed on every way out.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ractor::{ActorProcessingErr, ActorRef};

use super::{Phase, Stopping, VideoActor, VideoMsg, VideoRun};
use crate::admission::AdmissionMsg;
use crate::bus::BusEvent;
use crate::catalog::{Artefact, Change};
use crate::error::CoreError;
use crate::hub::HubMsg;
use crate::leases::Lease;
use crate::model::{run_key, run_prefix, Outputs, ProgressEvent, Video, VideoError};
use crate::ports::{object_key, EngineError, EngineEvent, EngineJob, Produced};
use crate::state::{Stage, VideoState};

/// Progress goes to the hub at most this often (4 Hz): the one throttle
/// between the pipelines and the subscribers.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Longest wait for the worker of a crashed actor to go (pipelines stop
/// within 2 s of a cancel).
const ORPHAN_WAIT: Duration = Duration::from_secs(10);

impl VideoActor {
    /// Stores a change (fenced by the run's lease while one runs).
    pub(super) async fn persist(
        &self,
        run: &mut VideoRun,
        change: Change,
    ) -> Result<Video, CoreError> {
        let change = Change {
            fence: run.lease.as_ref().map(|l| l.token),
            ..change
        };
        let video = self.deps.persist(&run.id, change).await?;
        run.video = Some(video.clone());
        Ok(video)
    }

    /// Gives this node's slot back and forgets the lease: the run is over.
    pub(super) fn release(&self, run: &mut VideoRun) {
        if run.phase == Phase::Running {
            if let Ok(admission) = self.deps.services.admission() {
                let _ = admission.cast(AdmissionMsg::Release {
                    video: run.id.clone(),
                });
            }
        }
        run.lease = None;
        run.phase = Phase::Idle;
    }

    /// The lease is gone (it expired, or another node holds the video):
    /// stop the worker and publish nothing more.
    pub(super) fn lose(&self, run: &mut VideoRun) {
        if !run.lost {
            tracing::warn!(video = %run.id, "lost the lease; stopping the run");
        }
        run.lost = true;
        run.cancel.cancel();
    }

    /// The run ends after its lease was lost: its files go, the video is
    /// left to whoever holds it now.
    pub(super) async fn end_lost(&self, run: &mut VideoRun) {
        self.deps.clean_work_dir(&run.id).await;
        run.lost = false;
        self.release(run);
    }

    /// A worker of an earlier actor of this video (one that crashed, or
    /// went down with a restarted supervisor) may still be going: it must
    /// be gone before the work directory is reused.
    pub(super) async fn stop_earlier_worker(&self, id: &str) {
        self.deps.workers.cancel(id);
        if !self.deps.workers.gone(id, ORPHAN_WAIT).await {
            tracing::warn!(video = %id, "an earlier worker did not stop; going on");
        }
    }

    fn schedule_heartbeat(&self, myself: &ActorRef<VideoMsg>) {
        myself.send_after(self.deps.config.lease_ttl / 3, || VideoMsg::Heartbeat);
    }

    /// Renews the run's lease with its progress; a lost lease ends the run.
    async fn heartbeat(&self, myself: &ActorRef<VideoMsg>, run: &mut VideoRun) {
        let Some(lease) = run
            .lease
            .clone()
            .filter(|_| run.phase == Phase::Running && !run.lost)
        else {
            return;
        };
        let ttl = self.deps.config.lease_ttl;
        match self
            .deps
            .leases
            .renew(&lease, ttl, run.progress.map(Into::into))
            .await
        {
            Ok(()) => {}
            Err(CoreError::LeaseLost(_)) => return self.lose(run),
            Err(e) => tracing::warn!(video = %run.id, error = %e, "could not renew the lease"),
        }
        self.schedule_heartbeat(myself);
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

    /// Starts a run under `lease`, from the video as stored now.
    pub(super) async fn start_run(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
        lease: Lease,
    ) -> Result<(), ActorProcessingErr> {
        if run.phase == Phase::Running {
            // Already running here: not a second time.
            let _ = self.deps.leases.release(&lease).await;
            return Ok(());
        }
        run.phase = Phase::Running;
        run.failure = None;
        run.lost = false;
        run.progress = None;
        if lease.taken_over {
            tracing::info!(video = %run.id, "taking over a video whose node stopped renewing its lease");
        }
        run.lease = Some(lease);
        self.stop_earlier_worker(&run.id).await;
        run.video = self.deps.catalog.get(&run.id).await?;
        if !run
            .video
            .as_ref()
            .is_some_and(|v| matches!(v.state, VideoState::Queued | VideoState::Processing))
        {
            // Deleted or finished meanwhile.
            if let Some(lease) = run.lease.take() {
                let _ = self.deps.leases.release(&lease).await;
            }
            run.phase = Phase::Running;
            self.release(run);
            return Ok(());
        }
        self.schedule_heartbeat(myself);
        let token = run.lease.as_ref().map_or(0, |l| l.token);
        let mut outputs = run
            .video
            .as_ref()
            .map(|v| v.outputs.clone())
            .unwrap_or_default();
        let abandoned = outputs.last_started.filter(|t| Some(*t) != outputs.run);
        outputs.last_started = Some(token);
        self.persist(
            run,
            Change {
                state: Some(VideoState::Processing),
                stage: Some(Some(Stage::Probing)),
                in_flight: Some(true),
                outputs: Some(outputs),
                ..Change::default()
            },
        )
        .await?;
        let id = run.id.clone();
        if let Some(old) = abandoned {
            // A run that published nothing (its node died, or it failed)
            // may have left objects.
            self.discard_run(&id, old).await;
        }
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
        run.working = true;
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
        self.end_run(run, change).await
    }

    async fn publish(
        &self,
        run: &mut VideoRun,
        produced: Produced,
    ) -> Result<Result<(), VideoError>, ActorProcessingErr> {
        let token = run.lease.as_ref().map_or(0, |l| l.token);
        let key = run_key(&run.id, token, produced.object_name());
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
        // This run's first output replaces what an earlier run published.
        let replaced = outputs.run.filter(|r| *r != token);
        if outputs.run != Some(token) {
            outputs = Outputs {
                run: Some(token),
                last_started: Some(token),
                ..Outputs::default()
            };
        }
        match produced {
            Produced::Mp4 { report, .. } => outputs.mp4 = Some(report),
            Produced::Frames { report, .. } => outputs.frames = Some(report),
            Produced::Poster { report, .. } => outputs.poster = Some(report),
        }
        let published = self
            .persist(
                run,
                Change {
                    outputs: Some(outputs),
                    ..Change::default()
                },
            )
            .await;
        match published {
            Ok(_) => {
                if let Some(old) = replaced {
                    self.discard_run(&run.id, old).await;
                }
                Ok(Ok(()))
            }
            Err(e @ CoreError::LeaseLost(_)) => {
                // Not published, and nobody will: its objects go now.
                self.discard_run(&run.id, token).await;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the objects run `token` of `id` wrote.
    async fn discard_run(&self, id: &str, token: i64) {
        if let Err(e) = self.deps.store.delete_prefix(&run_prefix(id, token)).await {
            tracing::warn!(video = id, run = token, error = %e, "could not remove an old run's objects");
        }
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

    /// Leaves the video queued for the next start (its job back in the
    /// queue), its files removed.
    pub(super) async fn suspended(&self, run: &mut VideoRun) -> Result<(), ActorProcessingErr> {
        self.deps.clean_work_dir(&run.id).await;
        if run.video.as_ref().is_some_and(|v| !v.state.is_terminal()) && !run.lost {
            let queued = self
                .persist(
                    run,
                    Change {
                        state: Some(VideoState::Queued),
                        stage: Some(None),
                        in_flight: Some(false),
                        ..Change::default()
                    },
                )
                .await;
            match queued {
                Ok(_) | Err(CoreError::LeaseLost(_)) => {}
                Err(e) => return Err(e.into()),
            }
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
            VideoMsg::Heartbeat => self.heartbeat(myself, run).await,
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
                run.progress = Some(p);
                let due = run
                    .last_progress
                    .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
                if let (true, Some(video)) = (due, run.video.as_ref()) {
                    run.last_progress = Some(Instant::now());
                    let event = ProgressEvent {
                        video_id: video.id.clone(),
                        owner: video.owner.clone(),
                        seq: video.last_seq,
                        state: video.state,
                        stage: video.stage,
                        percent: p.percent,
                        speed: p.speed,
                        eta_seconds: p.eta_seconds,
                    };
                    self.deps.tell_other_nodes(BusEvent::Progress {
                        node: self.deps.config.node.clone(),
                        event: event.clone(),
                    });
                    if let Ok(hub) = self.deps.services.hub() {
                        let _ = hub.cast(HubMsg::Progress(std::sync::Arc::new(event)));
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
                run.working = false;
                if let Some(stopping) = run.stopping.take() {
                    return self.stopped(run, stopping).await;
                }
                if run.lost {
                    self.end_lost(run).await;
                    return Ok(());
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
                    Err(e) if e.is_crash() => self.worker_crashed(run, e).await?,
                    Err(e) => {
                        let error = VideoError::new(e.code(), e.to_string());
                        self.finish(run, Some(error)).await?;
                    }
                }
            }
            VideoMsg::WorkerPanicked(text) => {
                run.working = false;
                if run.lost {
                    self.end_lost(run).await;
                    return Ok(());
                }
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
