//! Resumable uploads in the core: a video in state `uploading` whose bytes
//! arrive over several requests, kept until the last byte arrives, the
//! upload is deleted or it expires. One node keeps them in local files
//! ([`local`]); a cluster keeps them in the object store as multipart
//! uploads ([`stored`]), so that consecutive requests may reach different
//! nodes. The edge (tus) appends the bytes; the core creates, finishes,
//! expires and removes.

mod local;
mod stored;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) use self::local::{requeue_moved, sweep_partials};
use crate::catalog::NewVideo;
use crate::error::CoreError;
use crate::handle::Handle;
use crate::model::{new_id, Options, Video, VideoId};
pub use crate::parts::writer::PartsWriter;
use crate::ports::object_key;
use crate::state::VideoState;
use crate::video::Ingest;

/// An unfinished upload: how many bytes have arrived, and where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialUpload {
    pub id: VideoId,
    /// The local file the bytes are appended to; `None` when they wait in
    /// the object store (append through [`Handle::write_upload`]).
    pub file: Option<PathBuf>,
    /// Declared total length.
    pub length: u64,
    /// Bytes stored so far.
    pub offset: u64,
    /// When it is removed if still unfinished, milliseconds since the epoch.
    pub expires_at_ms: u64,
}

/// A complete upload's bytes as a local file, for probing before it is
/// queued; [`Handle::put_away`] removes what was fetched for it.
#[derive(Debug)]
pub struct Assembled {
    pub path: PathBuf,
    /// A directory fetched into for this, removed afterwards.
    scratch: Option<PathBuf>,
}

/// How long unfinished uploads are kept, for [`crate::CoreConfig`].
pub const DEFAULT_UPLOAD_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// Milliseconds since the epoch at which the video `id` was created (ids
/// are ULIDs, which carry it).
fn created_ms(id: &str) -> u64 {
    ulid::Ulid::from_string(id).map_or(0, |u| u.timestamp_ms())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn remove_dir(dir: PathBuf) {
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
}

impl crate::deps::Deps {
    /// Upload `id` as it stands, wherever its bytes are kept.
    pub(crate) async fn partial(
        self: &std::sync::Arc<Self>,
        id: &str,
    ) -> Result<PartialUpload, CoreError> {
        match self.stored_uploads() {
            Some(parts) => self.read_stored(parts, id).await,
            None => self.read_partial_blocking(id).await,
        }
    }

    /// Removes what upload `id` kept of its bytes: its partial file, or
    /// its multipart upload.
    pub(crate) async fn remove_partial(&self, id: &str) {
        match self.stored_uploads() {
            Some(parts) => self.abort_stored(parts, id).await,
            None => self.remove_partial_file(id).await,
        }
    }
}

impl Handle {
    /// Creates a video in state `uploading` that will receive `length` bytes.
    pub async fn begin_upload(
        &self,
        owner: &str,
        filename: &str,
        options: Options,
        length: u64,
    ) -> Result<Video, CoreError> {
        let id = new_id();
        let new = NewVideo {
            id: id.clone(),
            owner: owner.into(),
            filename: filename.into(),
            options,
            state: VideoState::Uploading,
            source_bytes: length,
        };
        if let Some(parts) = self.deps.stored_uploads() {
            // The record first: a multipart upload without one would be
            // found by nobody (the bucket's lifecycle rule still ends it).
            let video = self.deps.insert_video(new).await?;
            if let Err(e) = self.deps.open_stored(parts, &id, length).await {
                let _ = self.delete(owner, &id).await;
                return Err(e);
            }
            return Ok(video);
        }
        self.deps.create_partial_file(&id, length).await?;
        let inserted = self.deps.insert_video(new).await;
        if inserted.is_err() {
            self.deps.remove_partial_file(&id).await;
        }
        inserted
    }

    /// Creates a video in state `uploading` whose source the client puts
    /// into the store itself (a presigned URL), then reports with
    /// [`Handle::queue_uploaded`].
    pub async fn begin_direct_upload(
        &self,
        owner: &str,
        filename: &str,
        options: Options,
    ) -> Result<Video, CoreError> {
        self.deps
            .insert_video(NewVideo {
                id: new_id(),
                owner: owner.into(),
                filename: filename.into(),
                options,
                state: VideoState::Uploading,
                source_bytes: 0,
            })
            .await
    }

    /// Queues an `uploading` video whose source of `size` bytes is in the
    /// store (a direct upload the caller has checked), charging the size to
    /// its owner.
    pub async fn queue_uploaded(
        &self,
        owner: &str,
        id: &str,
        size: u64,
    ) -> Result<Video, CoreError> {
        let owner = owner.into();
        self.ingest(id, Ingest::Direct { owner, size }).await
    }

    /// Upload `id` of `owner` while it is still receiving bytes; missing,
    /// foreign and finished uploads read as not found.
    pub async fn partial_upload(&self, owner: &str, id: &str) -> Result<PartialUpload, CoreError> {
        let video = self.get(owner, id).await?;
        if video.state != VideoState::Uploading {
            return Err(CoreError::NotFound(id.into()));
        }
        self.deps.partial(id).await
    }

    /// The right to append to `owner`'s upload `id` kept in the store,
    /// waiting a few seconds for a request that holds it (on any node) to
    /// let go; `Busy` if it does not.
    pub async fn write_upload(&self, owner: &str, id: &str) -> Result<PartsWriter, CoreError> {
        let parts = self
            .deps
            .stored_uploads()
            .ok_or_else(|| CoreError::Internal("uploads are kept in local files".into()))?;
        self.partial_upload(owner, id).await?;
        self.deps.hold_stored(parts, id).await
    }

    /// A complete upload's bytes as a local file to probe: its partial
    /// file, or its parts joined into the source and fetched.
    pub async fn assemble_upload(&self, owner: &str, id: &str) -> Result<Assembled, CoreError> {
        let partial = self.partial_upload(owner, id).await?;
        if partial.offset != partial.length {
            return Err(CoreError::Incomplete {
                id: id.into(),
                received: partial.offset,
                length: partial.length,
            });
        }
        if let Some(path) = partial.file {
            return Ok(Assembled {
                path,
                scratch: None,
            });
        }
        let parts = self
            .deps
            .stored_uploads()
            .ok_or_else(|| CoreError::Internal("no stored uploads".into()))?;
        let upload = parts
            .stored_upload(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(id.into()))?;
        self.deps.join_stored(&upload).await?;
        // Under the work directory, which every start sweeps whole.
        let scratch = self.deps.config.work_dir.join(format!("probe-{id}"));
        {
            let scratch = scratch.clone();
            tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&scratch);
                std::fs::create_dir_all(&scratch)
                    .map_err(|e| CoreError::Storage(format!("{}: {e}", scratch.display())))
            })
            .await
            .map_err(|e| CoreError::Internal(e.to_string()))??;
        }
        match self
            .deps
            .store
            .local_copy(&object_key(id, "source"), &scratch)
            .await
        {
            Ok(path) => Ok(Assembled {
                path,
                scratch: Some(scratch),
            }),
            Err(e) => {
                remove_dir(scratch).await;
                Err(CoreError::Storage(e.to_string()))
            }
        }
    }

    /// Removes what [`Self::assemble_upload`] fetched.
    pub async fn put_away(&self, assembled: Assembled) {
        if let Some(scratch) = assembled.scratch {
            remove_dir(scratch).await;
        }
    }

    /// Makes a complete upload the video's source and queues the video.
    /// The caller has checked that the bytes are media.
    pub async fn finish_upload(&self, owner: &str, id: &str) -> Result<Video, CoreError> {
        let owner = owner.into();
        self.ingest(id, Ingest::Resumable { owner }).await
    }

    /// Unfinished uploads holding every byte (their last request broke off
    /// while probing, or the server stopped), with their owners: the edge
    /// finishes them.
    pub async fn complete_uploads(&self) -> Result<Vec<(String, PartialUpload)>, CoreError> {
        let mut complete = Vec::new();
        for video in self.deps.catalog.unfinished().await? {
            if video.state != VideoState::Uploading {
                continue;
            }
            if let Ok(p) = self.partial_upload(&video.owner, &video.id).await {
                if p.offset == p.length {
                    complete.push((video.owner, p));
                }
            }
        }
        Ok(complete)
    }

    /// Deletes every unfinished upload that received nothing for the
    /// expiry period; returns their ids.
    pub async fn expire_uploads(&self) -> Result<Vec<VideoId>, CoreError> {
        let now = now_ms();
        let expiry = self.deps.config.upload_expiry.as_millis() as u64;
        let mut expired = Vec::new();
        for video in self.deps.catalog.unfinished().await? {
            if video.state != VideoState::Uploading {
                continue;
            }
            let expires_at = match self.deps.partial(&video.id).await {
                Ok(p) => p.expires_at_ms,
                // Nothing kept (a crash mid-creation, or a direct upload):
                // from creation.
                Err(CoreError::NotFound(_)) => created_ms(&video.id) + expiry,
                Err(e) => return Err(e),
            };
            if expires_at <= now {
                match self.delete(&video.owner, &video.id).await {
                    Ok(()) | Err(CoreError::NotFound(_)) => expired.push(video.id),
                    Err(e) => {
                        tracing::warn!(video = %video.id, error = %e, "could not expire upload")
                    }
                }
            }
        }
        Ok(expired)
    }
}
