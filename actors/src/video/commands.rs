//! The commands the edges send a video: ingest (all three upload
//! protocols end here), retry, delete, suspend, and resume after a
//! restart. Each checks the video's owner and state itself, so two
//! commands racing for the same video are decided in the order the actor
//! takes them.

use ractor::{ActorProcessingErr, ActorRef};

use super::{Ingest, Phase, Stopping, VideoActor, VideoCommand, VideoMsg, VideoRun};
use crate::admission::AdmissionMsg;
use crate::catalog::{Change, NewVideo};
use crate::error::CoreError;
use crate::model::{Video, VideoError};
use crate::parts::tail_prefix;
use crate::ports::object_key;
use crate::state::VideoState;

impl VideoActor {
    pub(super) async fn command(
        &self,
        myself: &ActorRef<VideoMsg>,
        run: &mut VideoRun,
        command: VideoCommand,
    ) -> Result<(), ActorProcessingErr> {
        match command {
            VideoCommand::Ingest { ingest, reply } => {
                let result = self.ingest(run, ingest).await;
                let _ = reply.send(result);
            }
            VideoCommand::Retry { owner, reply } => {
                let result = self.retry(run, &owner).await;
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
                Phase::Idle => {
                    let _ = reply.send(());
                }
            },
            VideoCommand::Run { lease } => self.start_run(myself, run, lease).await?,
            VideoCommand::Resume => self.resume(run).await?,
            VideoCommand::Reannounce => {
                if run.phase == Phase::Running {
                    self.deps.services.admission()?.cast(AdmissionMsg::Adopt {
                        video: run.id.clone(),
                    })?;
                }
            }
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

    async fn ingest(&self, run: &mut VideoRun, ingest: Ingest) -> Result<Video, CoreError> {
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
                let partial = self.deps.partial(&id).await?;
                if partial.offset != partial.length {
                    return Err(CoreError::Incomplete {
                        id,
                        received: partial.offset,
                        length: partial.length,
                    });
                }
                match (&partial.file, self.deps.stored_uploads().cloned()) {
                    (Some(file), _) => {
                        self.deps
                            .store
                            .put_file(&object_key(&id, "source"), file)
                            .await
                            .map_err(|e| CoreError::Storage(e.to_string()))?;
                        let queued = self.queue(run).await;
                        self.deps.remove_partial(&id).await;
                        queued?
                    }
                    (None, Some(parts)) => {
                        let upload = parts
                            .stored_upload(&id)
                            .await?
                            .ok_or_else(|| CoreError::NotFound(id.clone()))?;
                        self.deps.join_stored(&upload).await?;
                        let queued = self.queue(run).await?;
                        // Its bytes are the source now: the record is done,
                        // and so is any tail piece a dead node left.
                        if let Err(e) = parts.close_parts(&id).await {
                            tracing::warn!(video = %id, error = %e, "could not close a stored upload");
                        }
                        let _ = self.deps.store.delete_prefix(&tail_prefix(&id)).await;
                        queued
                    }
                    (None, None) => {
                        return Err(CoreError::Internal(format!("upload {id} has no bytes")))
                    }
                }
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
        // Queued: its job waits for admission (on this node or another).
        run.video = Some(video.clone());
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

    async fn retry(&self, run: &mut VideoRun, owner: &str) -> Result<Video, CoreError> {
        let video = self.owned(run, owner).await?;
        if video.state != VideoState::Failed {
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
        Ok(video)
    }

    /// Removes the video: its slot, objects, files and record (its job
    /// goes with the record).
    pub(super) async fn remove(&self, run: &mut VideoRun) -> Result<(), CoreError> {
        self.release(run);
        let id = run.id.clone();
        // An upload's bytes first: a multipart upload aborted before the
        // objects go cannot be joined into a source that outlives them.
        self.deps.remove_partial(&id).await;
        self.deps
            .store
            .delete_prefix(&format!("videos/{id}/"))
            .await
            .map_err(|e| CoreError::Storage(e.to_string()))?;
        self.deps.clean_work_dir(&id).await;
        self.deps.catalog.delete(&id).await?;
        self.deps.board.clear(&id);
        // A video deleted before it finished is still followed by the hub.
        if let Ok(hub) = self.deps.services.hub() {
            let _ = hub.cast(crate::hub::HubMsg::Forget(id.clone()));
        }
        run.video = None;
        Ok(())
    }

    /// Takes up a video from the catalog: one whose previous actor crashed
    /// (its run counts the crash, and goes back to the queue or fails
    /// `crashed-repeatedly`), or one left processing by a process that
    /// stopped (back to the queue, no crash counted).
    async fn resume(&self, run: &mut VideoRun) -> Result<(), ActorProcessingErr> {
        if run.phase != Phase::Idle {
            return Ok(());
        }
        run.video = self.deps.catalog.get(&run.id).await?;
        let Some(video) = run.video.clone() else {
            return Ok(());
        };
        if !matches!(video.state, VideoState::Queued | VideoState::Processing) {
            return Ok(());
        }
        self.stop_earlier_worker(&run.id).await;
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
            // Its partial work is gone; queue it again (its job too).
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
        Ok(())
    }
}
