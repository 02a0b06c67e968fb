//! Resumable uploads kept in the object store (a cluster): a multipart
//! upload of the video's `source` object, recorded through the
//! [`UploadParts`] port so that any node can take the next request. The
//! bytes are appended by a [`PartsWriter`]; the last one joins the parts
//! into the source.

use std::sync::Arc;

use super::PartialUpload;
use crate::deps::Deps;
use crate::error::CoreError;
use crate::parts::writer::PartsWriter;
use crate::parts::{StoredUpload, UploadParts};
use crate::ports::object_key;

/// How long a request waits for another to let go of an upload: as long
/// as one on the same node (tus clients retry soon after a broken
/// connection, while the old request may still hang).
pub(crate) const HOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn storage(e: impl std::fmt::Display) -> CoreError {
    CoreError::Storage(e.to_string())
}

impl Deps {
    /// The parts port, when uploads are kept in the store.
    pub(crate) fn stored_uploads(&self) -> Option<&Arc<dyn UploadParts>> {
        self.parts.as_ref()
    }

    /// Starts the multipart upload of video `id` (already `uploading`) and
    /// records it.
    pub(crate) async fn open_stored(
        &self,
        parts: &Arc<dyn UploadParts>,
        id: &str,
        length: u64,
    ) -> Result<(), CoreError> {
        let source = object_key(id, "source");
        let multipart = self.store.start_parts(&source).await.map_err(storage)?;
        if let Err(e) = parts.open_parts(id, length, &multipart).await {
            let _ = self.store.abort_parts(&source, &multipart).await;
            return Err(e);
        }
        Ok(())
    }

    /// Upload `id` as recorded, in the edge's terms.
    pub(crate) async fn read_stored(
        &self,
        parts: &Arc<dyn UploadParts>,
        id: &str,
    ) -> Result<PartialUpload, CoreError> {
        let upload = parts
            .stored_upload(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(id.into()))?;
        Ok(PartialUpload {
            id: id.into(),
            file: None,
            length: upload.length,
            offset: upload.offset(),
            // A period after its last bytes were recorded, as for files.
            expires_at_ms: upload.touched_ms + self.config.upload_expiry.as_millis() as u64,
        })
    }

    /// Makes the parts of a complete upload its source object; a source
    /// that is already whole (joined by a request that then broke off) is
    /// taken as it is.
    pub(crate) async fn join_stored(&self, upload: &StoredUpload) -> Result<(), CoreError> {
        // Every byte in a part: a tail is only ever kept short of the end.
        if upload.in_parts() != upload.length {
            return Err(CoreError::Incomplete {
                id: upload.id.clone(),
                received: upload.offset(),
                length: upload.length,
            });
        }
        let source = object_key(&upload.id, "source");
        if self.store.len(&source).await.ok() == Some(upload.length) {
            return Ok(());
        }
        let joined = self
            .store
            .join_parts(&source, &upload.multipart, &upload.parts)
            .await
            .map_err(storage)?;
        if joined != upload.length {
            return Err(CoreError::Storage(format!(
                "upload {} joined into {joined} bytes, not the {} declared",
                upload.id, upload.length
            )));
        }
        Ok(())
    }

    /// Abandons upload `id`'s multipart upload, if it has one (the video
    /// is going: its record goes with it, its tail with its objects).
    pub(crate) async fn abort_stored(&self, parts: &Arc<dyn UploadParts>, id: &str) {
        match parts.stored_upload(id).await {
            Ok(Some(upload)) => {
                let source = object_key(id, "source");
                if let Err(e) = self.store.abort_parts(&source, &upload.multipart).await {
                    tracing::warn!(upload = %id, error = %e, "could not abort a multipart upload; the bucket's lifecycle rule removes it");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(upload = %id, error = %e, "could not read a stored upload"),
        }
    }

    /// Takes the right to append to upload `id`.
    pub(crate) async fn hold_stored(
        &self,
        parts: &Arc<dyn UploadParts>,
        id: &str,
    ) -> Result<PartsWriter, CoreError> {
        PartsWriter::hold(
            parts.clone(),
            self.store.clone(),
            id,
            self.config.lease_ttl,
            HOLD_WAIT,
        )
        .await
    }
}
