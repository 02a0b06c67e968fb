//! The commands the edges send a video: ingest (all three upload
//! protocols end here), retry, delete, suspend, and resume after a
//! restart. Each checks the video's owner and state itself, so two
//! commands racing for the same video are decided in the order the actor
//! takes them.

use std::time::Duration;

use ractor::{ActorProcessingErr, ActorRef};

use super::{Ingest, Phase, Stopping, VideoActor, VideoCommand, VideoMsg, VideoRun};
use crate::admission::AdmissionMsg;
use crate::catalog::{Change, NewVideo};
use crate::error::CoreError;
use crate::model::{Video, VideoError};
use crate::ports::object_key;
use crate::state::VideoState;

/// Longest wait for the worker of a crashed actor to go (pipelines stop
/// within 2 s of a cancel).
const ORPHAN_WAIT: Duration = Duration::from_secs(10);

impl VideoActor {
    pub(super) async fn command(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
        command: VideoCommand,
    ) -> Result<(), ActorProcessingErr> {
        match command {
            VideoCommand::Ingest { ingest, reply } => {
                let result = self.ingest(myself, run, ingest).await;
                let _ = reply.send(result);
            }
            VideoCommand::Retry { owner, reply } => {
                let result = self.retry(myself, run, &owner).await;
                let _ = reply.send(result);
            }
            VideoCommand::Delete { owner, reply } => {
                if let Err(e) = self.owned(run, &owner).await {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                if run.phase == Phase::Running {
                    run.cancel.cancel();
                    run.stopping = Some(Stopping::Delete(reply));
                } else {
                    let result = self.remove(run).await;
                    let _ = reply.send(result);
                }
            }
            VideoCommand::Suspend { reply } => match run.phase {
                Phase::Running => {
                    run.cancel.cancel();
                    run.stopping = Some(Stopping::Suspend(reply));
                }
                Phase::Waiting => {
                    self.release(run);
                    let _ = reply.send(());
                }
                Phase::Idle => {
                    let _ = reply.send(());
                }
            },
            VideoCommand::Resume => self.resume(myself, run).await?,
            VideoCommand::Reannounce => match run.phase {
                Phase::Waiting => self.request_slot(myself, run)?,
                Phase::Running => {
                    self.deps.services.admission()?.cast(AdmissionMsg::Adopt {
                        owner: run
                            .video
                            .as_ref()
                            .map(|v| v.owner.clone())
                            .unwrap_or_default(),
                        video: run.id.clone(),
                    })?;
                }
                Phase::Idle => {}
            },
        }
        Ok(())
    }

    /// The video, read from the catalog the first time it is needed.
    async fn load(&self, run: &mut VideoRun) -> Result<Option<Video>, CoreError> {
        if run.video.is_none() {
            run.video = self.deps.catalog.get(&run.id).await?;
        }
        Ok(run.video.clone())
    }

    /// The video if `owner` owns it; another owner's reads as missing.
    async fn owned(&self, run: &mut VideoRun, owner: &str) -> Result<Video, CoreError> {
        self.load(run)
            .await?
            .filter(|v| v.owner == owner)
            .ok_or_else(|| CoreError::NotFound(run.id.clone()))
    }

    async fn ingest(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
        ingest: Ingest,
    ) -> Result<Video, CoreError> {
        let id = run.id.clone();
        let video = match ingest {
            Ingest::File {
                owner,
                filename,
                options,
                path,
            } => {
                if self.load(run).await?.is_some() {
                    return Err(CoreError::Internal(format!("video {id} exists already")));
                }
                let source_bytes = self
                    .deps
                    .store
                    .put_file(&object_key(&id, "source"), &path)
                    .await
                    .map_err(|e| CoreError::Storage(e.to_string()))?;
                let inserted = self
                    .deps
                    .insert_video(NewVideo {
                        id: id.clone(),
                        owner,
                        filename,
                        options,
                        state: VideoState::Queued,
                        source_bytes,
                    })
                    .await;
                match inserted {
                    Ok(video) => video,
                    Err(e) => {
                        self.deps.discard_objects(&id).await;
                        return Err(e);
                    }
                }
            }
            Ingest::Resumable { owner } => {
                self.uploading(run, &owner).await?;
                let partial = self.deps.read_partial_blocking(&id).await?;
                if partial.offset != partial.length {
                    return Err(CoreError::Incomplete {
                        id,
                        received: partial.offset,
                        length: partial.length,
                    });
                }
                self.deps
                    .store
                    .put_file(&object_key(&id, "source"), &partial.path)
                    .await
                    .map_err(|e| CoreError::Storage(e.to_string()))?;
                let queued = self.queue(run).await;
                self.deps.remove_partial(&id).await;
                queued?
            }
            Ingest::Moved { owner } => {
                self.uploading(run, &owner).await?;
                let queued = self.queue(run).await;
                self.deps.remove_partial(&id).await;
                queued?
            }
            Ingest::Direct { owner, size } => {
                self.uploading(run, &owner).await?;
                self.deps.catalog.charge_upload(&id, &owner, size).await?;
                self.queue(run).await?
            }
        };
        run.video = Some(video.clone());
        self.request_slot(myself, run)?;
        Ok(video)
    }

    /// Checks that `owner`'s video is still receiving its upload.
    async fn uploading(&self, run: &mut VideoRun, owner: &str) -> Result<(), CoreError> {
        let video = self.owned(run, owner).await?;
        if video.state != VideoState::Uploading {
            return Err(CoreError::WrongState {
                id: video.id,
                state: video.state,
                wanted: VideoState::Uploading,
            });
        }
        Ok(())
    }

    /// Moves an uploaded video into the queue (its state event included).
    async fn queue(&self, run: &mut VideoRun) -> Result<Video, CoreError> {
        let queued = self
            .persist(
                run,
                Change {
                    state: Some(VideoState::Queued),
                    ..Change::default()
                },
            )
            .await;
        if queued.is_err() {
            // Deleted meanwhile: no object may outlive its record.
            self.deps.discard_objects(&run.id).await;
        }
        queued
    }

    async fn retry(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
        owner: &str,
    ) -> Result<Video, CoreError> {
        let video = self.owned(run, owner).await?;
        if video.state != VideoState::Failed || run.phase != Phase::Idle {
            return Err(CoreError::WrongState {
                id: video.id,
                state: video.state,
                wanted: VideoState::Failed,
            });
        }
        self.deps.catalog.reset_crashes(&run.id).await?;
        let video = self
            .persist(
                run,
                Change {
                    state: Some(VideoState::Queued),
                    stage: Some(None),
                    error: Some(None),
                    add_attempt: true,
                    ..Change::default()
                },
            )
            .await?;
        self.request_slot(myself, run)?;
        Ok(video)
    }

    /// Removes the video: its slot, objects, files and record.
    pub(super) async fn remove(&self, run: &mut VideoRun) -> Result<(), CoreError> {
        if run.phase != Phase::Idle {
            self.release(run);
        }
        let id = run.id.clone();
        self.deps
            .store
            .delete_prefix(&format!("videos/{id}/"))
            .await
            .map_err(|e| CoreError::Storage(e.to_string()))?;
        self.deps.clean_work_dir(&id).await;
        self.deps.remove_partial(&id).await;
        self.deps.catalog.delete(&id).await?;
        self.deps.board.clear(&id);
        run.video = None;
        Ok(())
    }

    /// Takes up a queued or processing video from the catalog.
    async fn resume(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
    ) -> Result<(), ActorProcessingErr> {
        if run.phase != Phase::Idle {
            return Ok(());
        }
        let Some(video) = self.load(run).await? else {
            return Ok(());
        };
        if !matches!(video.state, VideoState::Queued | VideoState::Processing) {
            return Ok(());
        }
        // What ran before (a crashed actor's worker, a supervisor's that
        // was restarted) must be gone before the work directory is reused.
        self.deps.workers.cancel(&run.id);
        if !self.deps.workers.gone(&run.id, ORPHAN_WAIT).await {
            tracing::warn!(video = %run.id, "an earlier worker did not stop; starting anyway");
        }
        let mut crashes = video.crashes;
        if let Some(reason) = run.after_crash.take() {
            crashes = self.deps.catalog.add_crash(&run.id).await?;
            tracing::warn!(video = %run.id, crashes, "video actor crashed: {reason}");
        }
        if crashes >= self.deps.config.max_crashes {
            let error = VideoError::new(
                "crashed-repeatedly",
                format!("processing crashed {crashes} times; retry to try again"),
            );
            return self.finish(run, Some(error)).await;
        }
        if video.state == VideoState::Processing {
            // Its partial work is gone; queue it again.
            self.deps.clean_work_dir(&run.id).await;
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
        self.request_slot(myself, run)?;
        Ok(())
    }
}
