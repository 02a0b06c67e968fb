//! Resumable uploads in the core: a video in state `uploading` and its
//! partial file under `partial_dir`, kept across restarts until the last
//! byte arrives, the upload is deleted or it expires. The edge (tus)
//! appends the bytes; the core creates, finishes, expires and removes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::catalog::NewVideo;
use crate::deps::Deps;
use crate::error::CoreError;
use crate::handle::Handle;
use crate::model::{new_id, Options, Video, VideoId};
use crate::ports::object_key;
use crate::state::VideoState;
use crate::video::Ingest;

/// An unfinished upload: where its bytes go and how many have arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialUpload {
    pub id: VideoId,
    /// The file the bytes are appended to.
    pub path: PathBuf,
    /// Declared total length.
    pub length: u64,
    /// Bytes stored so far (the file's length).
    pub offset: u64,
    /// When it is removed if still unfinished, milliseconds since the epoch.
    pub expires_at_ms: u64,
}

/// What is kept beside the partial file: what only the creating request
/// said.
#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    length: u64,
}

fn sidecar_path(data: &Path) -> PathBuf {
    data.with_extension("json")
}

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

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CoreError {
    CoreError::Storage(format!("{what} {}: {e}", path.display()))
}

/// Creates the empty partial file and its sidecar, durably.
fn create_partial(data: &Path, length: u64) -> Result<(), CoreError> {
    let dir = data.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
    let sidecar = sidecar_path(data);
    let text =
        serde_json::to_vec(&Sidecar { length }).map_err(|e| CoreError::Internal(e.to_string()))?;
    std::fs::write(&sidecar, text)
        .and_then(|()| std::fs::File::open(&sidecar)?.sync_all())
        .map_err(|e| io_err("write", &sidecar, e))?;
    std::fs::File::create(data)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err("create", data, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Deps {
    /// The partial file of upload `id`.
    pub(crate) fn partial_path(&self, id: &str) -> PathBuf {
        self.config.partial_dir.join(id)
    }

    /// Removes upload `id`'s partial file and sidecar, if any.
    pub(crate) async fn remove_partial(&self, id: &str) {
        let data = self.partial_path(id);
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(sidecar_path(&data));
            let _ = std::fs::remove_file(&data);
        })
        .await;
    }

    /// [`Self::read_partial`] off the executor.
    pub(crate) async fn read_partial_blocking(
        self: &std::sync::Arc<Self>,
        id: &str,
    ) -> Result<PartialUpload, CoreError> {
        let (deps, id) = (self.clone(), id.to_string());
        tokio::task::spawn_blocking(move || deps.read_partial(&id))
            .await
            .map_err(|e| CoreError::Internal(e.to_string()))?
    }

    fn read_partial(&self, id: &str) -> Result<PartialUpload, CoreError> {
        let path = self.partial_path(id);
        let sidecar: Sidecar = std::fs::read(sidecar_path(&path))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| CoreError::NotFound(id.into()))?;
        let meta = std::fs::metadata(&path).map_err(|_| CoreError::NotFound(id.into()))?;
        // An upload expires a period after its last byte arrived, so a slow
        // one that keeps sending is never cut off.
        let last_write = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(created_ms(id), |d| d.as_millis() as u64);
        let expiry = self.config.upload_expiry.as_millis() as u64;
        Ok(PartialUpload {
            id: id.into(),
            path,
            length: sidecar.length,
            offset: meta.len(),
            expires_at_ms: last_write.max(created_ms(id)) + expiry,
        })
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
        let data = self.deps.partial_path(&id);
        {
            let data = data.clone();
            tokio::task::spawn_blocking(move || create_partial(&data, length))
                .await
                .map_err(|e| CoreError::Internal(e.to_string()))??;
        }
        let inserted = self
            .deps
            .insert_video(NewVideo {
                id: id.clone(),
                owner: owner.into(),
                filename: filename.into(),
                options,
                state: VideoState::Uploading,
                source_bytes: length,
            })
            .await;
        if inserted.is_err() {
            self.deps.remove_partial(&id).await;
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
        self.deps.read_partial_blocking(id).await
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
            let deps = self.deps.clone();
            let id = video.id.clone();
            let expires_at = tokio::task::spawn_blocking(move || deps.read_partial(&id))
                .await
                .map_err(|e| CoreError::Internal(e.to_string()))?
                // No partial file (a crash mid-creation): from creation.
                .map_or(created_ms(&video.id) + expiry, |p| p.expires_at_ms);
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

/// Removes partial files that belong to no unfinished upload (a crash
/// between creating the file and the record, or a record deleted while the
/// server was down). Returns how many files and bytes went.
pub(crate) fn sweep_partials(partial_dir: &Path, uploading: &[VideoId]) -> (usize, u64) {
    let (mut count, mut bytes) = (0, 0);
    let Ok(entries) = std::fs::read_dir(partial_dir) else {
        return (0, 0);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if uploading.contains(&stem) {
            continue;
        }
        let size = entry.metadata().map_or(0, |m| m.len());
        if std::fs::remove_file(&path).is_ok() {
            count += 1;
            bytes += size;
        }
    }
    (count, bytes)
}

/// How long unfinished uploads are kept, for [`crate::CoreConfig`].
pub const DEFAULT_UPLOAD_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// Uploads whose bytes were moved into the store but whose record was not
/// queued yet when the last run stopped: queues them (the source in the
/// store is whole: the move is atomic). Returns how many.
pub(crate) async fn requeue_moved(
    handle: &Handle,
    uploading: &[Video],
) -> Result<usize, CoreError> {
    let mut queued = 0;
    for video in uploading {
        let data = handle.deps.partial_path(&video.id);
        let sidecar = sidecar_path(&data);
        if data.exists() || !sidecar.exists() {
            continue;
        }
        let Ok(stored) = handle
            .deps
            .store
            .len(&object_key(&video.id, "source"))
            .await
        else {
            continue;
        };
        let declared: Option<Sidecar> = std::fs::read(&sidecar)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if declared.is_some_and(|s| s.length == stored) {
            let owner = video.owner.clone();
            handle.ingest(&video.id, Ingest::Moved { owner }).await?;
            queued += 1;
        }
    }
    Ok(queued)
}
