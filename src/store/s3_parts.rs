//! The S3 store's multipart uploads kept open across requests (and nodes):
//! a resumable upload's bytes become parts of one multipart upload, joined
//! into the object when the last byte is in, plus the small whole objects
//! (an upload's tail) that wait beside it. `BlobStore`'s part methods on
//! [`S3Store`] call these.
//!
//! Two rules are enforced here rather than left to the service, so every
//! S3-compatible one behaves as AWS does: a part smaller than
//! [`MIN_PART_BYTES`] that is not last makes the join fail (Garage would
//! join it), and joining an upload that is gone succeeds when its object is
//! there with the parts' length (a node that died right after completing
//! leaves the next one to join again; S3 no longer knows the upload).

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use vidmill_actors::{StoreError, StoredPart, MIN_PART_BYTES};

use super::s3::{content_type, failed, missing, S3Store};

/// Whether an S3 error means the multipart upload no longer exists (joined
/// or aborted). A missing bucket also answers 404, but is no such thing.
fn upload_gone<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    match e.code() {
        Some("NoSuchUpload") => true,
        Some("NoSuchBucket") => false,
        _ => matches!(e, SdkError::ServiceError(s) if s.raw().status().as_u16() == 404),
    }
}

impl S3Store {
    pub(super) async fn begin_multipart(&self, key: &str) -> Result<String, StoreError> {
        let started = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .send()
            .await
            .map_err(|e| failed("start upload", key, e))?;
        match started.upload_id() {
            Some(id) if !id.is_empty() => Ok(id.to_string()),
            _ => Err(StoreError::Unavailable(format!(
                "S3 start upload {key}: the answer carries no upload id"
            ))),
        }
    }

    /// `NotFound` when the upload is gone: its parts cannot be joined any
    /// more, so only a new upload helps, not a retry.
    pub(super) async fn send_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        bytes: Vec<u8>,
    ) -> Result<String, StoreError> {
        let number = i32::try_from(number).map_err(|_| {
            StoreError::Unavailable(format!("S3 upload part of {key}: part {number} too large"))
        })?;
        // A whole body, so its payload is signed as one (see `PART`).
        let sent = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await;
        let part = match sent {
            Ok(p) => p,
            Err(e) if upload_gone(&e) => return Err(StoreError::NotFound(key.into())),
            Err(e) => return Err(failed("upload part of", key, e)),
        };
        // Kept as answered (quoted): completion takes it back so.
        match part.e_tag() {
            Some(tag) if !tag.is_empty() => Ok(tag.to_string()),
            _ => Err(StoreError::Unavailable(format!(
                "S3 upload part {number} of {key}: the answer carries no ETag"
            ))),
        }
    }

    pub(super) async fn complete_multipart(
        &self,
        key: &str,
        upload: &str,
        parts: &[StoredPart],
    ) -> Result<u64, StoreError> {
        check_parts(key, parts)?;
        let len = parts.iter().map(|p| p.size).sum();
        let completed: Result<Vec<CompletedPart>, StoreError> = parts
            .iter()
            .map(|p| {
                let number = i32::try_from(p.number).map_err(|_| {
                    StoreError::Unavailable(format!("S3 join {key}: part {} too large", p.number))
                })?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .e_tag(&p.etag)
                    .build())
            })
            .collect();
        let joined = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed?))
                    .build(),
            )
            .send()
            .await;
        match joined {
            Ok(_) => Ok(len),
            Err(e) if upload_gone(&e) => self.joined_before(key, upload, len).await,
            Err(e) => Err(failed("complete upload", key, e)),
        }
    }

    /// The upload is gone: it was joined already when its object is there
    /// with the parts' length. An object of another length is not this
    /// upload's; no object means the upload was aborted.
    async fn joined_before(&self, key: &str, upload: &str, len: u64) -> Result<u64, StoreError> {
        let found = match self.head(key).await {
            Ok(o) => o.size,
            Err(StoreError::NotFound(_)) => return Err(StoreError::NotFound(key.into())),
            Err(e) => return Err(e),
        };
        if found == len {
            tracing::info!(key, upload, len, "the multipart upload was joined before");
            Ok(len)
        } else {
            Err(StoreError::Unavailable(format!(
                "S3 complete upload {key}: upload {upload} is gone and the object holds \
                 {found} bytes, not the {len} of its parts"
            )))
        }
    }

    pub(super) async fn abort_multipart(&self, key: &str, upload: &str) -> Result<(), StoreError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if upload_gone(&e) => Ok(()),
            Err(e) => Err(failed("abort upload", key, e)),
        }
    }

    pub(super) async fn put_object_bytes(
        &self,
        key: &str,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| failed("put", key, e))?;
        Ok(())
    }

    pub(super) async fn get_object_bytes(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if missing(&e) => return Err(StoreError::NotFound(key.into())),
            Err(e) => return Err(failed("get", key, e)),
        };
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| failed("read", key, e))?;
        Ok(body.into_bytes().to_vec())
    }
}

/// Parts worth asking the service to join: some, and none but the last
/// under the minimum.
fn check_parts(key: &str, parts: &[StoredPart]) -> Result<(), StoreError> {
    let Some((_, before_last)) = parts.split_last() else {
        return Err(StoreError::Unavailable(format!(
            "S3 complete upload {key}: no parts to join"
        )));
    };
    match before_last.iter().find(|p| p.size < MIN_PART_BYTES) {
        Some(small) => Err(StoreError::Unavailable(format!(
            "S3 complete upload {key}: part {} holds {} bytes, under the {MIN_PART_BYTES} \
             every part but the last needs",
            small.number, small.size
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: u32, size: u64) -> StoredPart {
        StoredPart {
            number,
            etag: format!("\"{number}\""),
            size,
        }
    }

    #[test]
    fn only_the_last_part_may_be_small() {
        assert!(check_parts("k", &[part(1, MIN_PART_BYTES), part(2, 1)]).is_ok());
        assert!(check_parts("k", &[part(1, 1)]).is_ok());
        let small = check_parts("k", &[part(1, MIN_PART_BYTES - 1), part(2, 1)]);
        assert!(
            matches!(&small, Err(StoreError::Unavailable(m)) if m.contains("part 1 holds")),
            "{small:?}"
        );
        assert!(check_parts("k", &[]).is_err());
    }
}
