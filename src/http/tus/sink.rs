//! Where a tus request's bytes go: the upload's local file (one node), or
//! the object store through the core's parts writer (a cluster, where the
//! next request may reach another node). Either way, what the request
//! wrote is durable before its offset is told.

use tokio::io::AsyncWriteExt;
use vidmill_actors::{CoreError, PartialUpload, PartsWriter};

use super::super::disk::{check_disk, write_error, DiskGuard};
use super::super::error::ApiError;
use crate::app::App;

pub(super) enum Sink<'a> {
    File {
        file: tokio::fs::File,
        disk: DiskGuard<'a>,
    },
    Store(PartsWriter),
}

/// A writer's failure in tus terms: a lost hold means another request
/// took the upload over.
fn parts_error(e: CoreError) -> ApiError {
    match e {
        CoreError::LeaseLost(_) => {
            ApiError::OffsetMismatch("another request took over this upload".into())
        }
        CoreError::Busy(why) => ApiError::OffsetMismatch(why),
        // Deleted or expired while this request wrote to it.
        CoreError::NotFound(_) => ApiError::UploadNotFound,
        other => other.into(),
    }
}

impl<'a> Sink<'a> {
    /// Opens upload `upload` of `owner` for appending; in the store, this
    /// takes the upload's hold (waiting a little for another request to
    /// let go).
    pub async fn open(app: &'a App, owner: &str, upload: &PartialUpload) -> Result<Self, ApiError> {
        match &upload.file {
            Some(path) => {
                check_disk(app).await?;
                let file = tokio::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
                Ok(Self::File {
                    file,
                    disk: DiskGuard::new(app),
                })
            }
            None => app
                .handle
                .write_upload(owner, &upload.id)
                .await
                .map(Self::Store)
                .map_err(|e| match e {
                    CoreError::NotFound(_) => ApiError::UploadNotFound,
                    other => parts_error(other),
                }),
        }
    }

    /// Bytes the upload holds, as the sink found it: where this request
    /// must start. `None` for a file (the caller read its length).
    pub fn recorded(&self) -> Option<u64> {
        match self {
            Self::File { .. } => None,
            Self::Store(writer) => Some(writer.recorded()),
        }
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        match self {
            Self::File { file, disk } => {
                disk.writing(chunk.len()).await?;
                file.write_all(chunk).await.map_err(write_error)
            }
            Self::Store(writer) => writer.write(chunk).await.map_err(parts_error),
        }
    }

    /// Resolves when a request on another node wants the upload (one on
    /// this node is told through the upload's lane).
    pub async fn superseded(&mut self) {
        match self {
            Self::File { .. } => std::future::pending().await,
            Self::Store(writer) => writer.superseded().await,
        }
    }

    /// Makes what was written durable. Returns the offset a client resumes
    /// from when the sink knows better than the bytes counted (the store
    /// records only what it stored).
    pub async fn settle(&mut self) -> Result<Option<u64>, ApiError> {
        match self {
            Self::File { file, .. } => {
                file.flush()
                    .await
                    .and(file.sync_data().await)
                    .map_err(|e| ApiError::Internal(format!("sync upload: {e}")))?;
                Ok(None)
            }
            Self::Store(writer) => writer.settle().await.map(Some).map_err(parts_error),
        }
    }

    /// Lets the upload go, for the next request.
    pub async fn close(self) {
        if let Self::Store(writer) = self {
            writer.release().await;
        }
    }
}
