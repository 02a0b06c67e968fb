//! Resumable uploads kept in local files (one node): the partial file
//! under `partial_dir` and a sidecar with what only the creating request
//! said, kept across restarts until the last byte arrives, the upload is
//! deleted or it expires. The edge (tus) appends to the file.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::{created_ms, PartialUpload};
use crate::deps::Deps;
use crate::error::CoreError;
use crate::handle::Handle;
use crate::model::{Video, VideoId};
use crate::ports::object_key;
use crate::video::Ingest;

/// What is kept beside the partial file: what only the creating request
/// said.
#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    length: u64,
}

fn sidecar_path(data: &Path) -> PathBuf {
    data.with_extension("json")
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

    /// Creates upload `id`'s empty partial file and sidecar, durably.
    pub(super) async fn create_partial_file(&self, id: &str, length: u64) -> Result<(), CoreError> {
        let data = self.partial_path(id);
        tokio::task::spawn_blocking(move || create_partial(&data, length))
            .await
            .map_err(|e| CoreError::Internal(e.to_string()))?
    }

    /// Removes upload `id`'s partial file and sidecar, if any.
    pub(super) async fn remove_partial_file(&self, id: &str) {
        let data = self.partial_path(id);
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(sidecar_path(&data));
            let _ = std::fs::remove_file(&data);
        })
        .await;
    }

    /// [`Self::read_partial`] off the executor.
    pub(super) async fn read_partial_blocking(
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
            file: Some(path),
            length: sidecar.length,
            offset: meta.len(),
            expires_at_ms: last_write.max(created_ms(id)) + expiry,
        })
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
