//! The S3 store: objects in a bucket of AWS or any S3-compatible service
//! (Garage, MinIO, …). Large files go up in parts (a part failing aborts
//! the upload, so nothing half-written is left); reads are ranged GETs
//! streamed chunk by chunk. Multipart uploads that outlive a request (a
//! cluster's resumable uploads) are in `s3_parts`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use tokio::io::AsyncWriteExt;
use vidmill_actors::{
    BlobObject, BlobStore, BoxFuture, ByteChunks, PresignMethod, Presigned, StoreError, StoredPart,
};

use crate::config::S3;

/// Files larger than this go up in parts of this size. Each part is read
/// into memory and sent with its payload signed as a whole: the streaming
/// (chunk-signed) uploads the SDK makes from files are refused by some
/// S3-compatible services (Garage: "invalid payload signature").
const PART: u64 = 16 << 20;

/// `len` bytes of `file` from `offset`.
async fn read_part(file: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(file).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buf = vec![0; len as usize];
    f.read_exact(&mut buf).await?;
    Ok(buf)
}

#[derive(Debug, Clone)]
pub struct S3Store {
    pub(super) client: Client,
    pub(super) bucket: String,
}

/// The type an object is served with (a redirected download comes
/// straight from the bucket).
pub(super) fn content_type(key: &str) -> &'static str {
    if key.ends_with(".mp4") {
        "video/mp4"
    } else if key.ends_with(".zip") {
        "application/zip"
    } else if key.ends_with(".jpg") {
        "image/jpeg"
    } else {
        "application/octet-stream"
    }
}

/// Whether an S3 error means the object is not there.
pub(super) fn missing<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    if let SdkError::ServiceError(s) = e {
        if s.raw().status().as_u16() == 404 {
            return true;
        }
    }
    matches!(e.code(), Some("NoSuchKey" | "NotFound"))
}

pub(super) fn failed<E: std::error::Error + 'static>(what: &str, key: &str, e: E) -> StoreError {
    StoreError::Unavailable(format!("S3 {what} {key}: {}", DisplayErrorContext(e)))
}

impl S3Store {
    /// A store for `config`, with its static credentials or else the AWS
    /// default chain.
    pub async fn new(config: &S3, secret_access_key: Option<String>) -> Result<Self, String> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(config.region.clone()));
        if let Some(secret) = secret_access_key.filter(|_| !config.access_key_id.is_empty()) {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                &config.access_key_id,
                secret,
                None,
                None,
                "vidmill config",
            ));
        }
        let shared = loader.load().await;
        // A stalled connection must not hang a request or a pipeline; the
        // SDK's stalled-stream protection covers bodies that stop moving.
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .build();
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .timeout_config(timeouts)
            .force_path_style(config.path_style);
        if !config.endpoint.is_empty() {
            builder = builder.endpoint_url(&config.endpoint);
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
        })
    }

    async fn put_whole(&self, key: &str, file: &Path, len: u64) -> Result<(), StoreError> {
        let body = ByteStream::from(
            read_part(file, 0, len)
                .await
                .map_err(|e| failed("read", key, e))?,
        );
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .body(body)
            .send()
            .await
            .map_err(|e| failed("put", key, e))?;
        Ok(())
    }

    async fn put_parts(&self, key: &str, file: &Path, len: u64) -> Result<(), StoreError> {
        let upload_id = self.begin_multipart(key).await?;
        // The parts go up in a task of their own, so a caller that goes away
        // (a client hanging up) cannot leave a multipart upload half-done:
        // abandoned parts are invisible in listings and cost storage until
        // aborted.
        let (store, key, file) = (self.clone(), key.to_string(), file.to_path_buf());
        tokio::spawn(async move {
            let sent = store.send_parts(&key, &file, len, &upload_id).await;
            if sent.is_err() {
                let _ = store.abort_multipart(&key, &upload_id).await;
            }
            sent
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("S3 upload task: {e}")))?
    }

    async fn send_parts(
        &self,
        key: &str,
        file: &Path,
        len: u64,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < len {
            let size = PART.min(len - offset);
            let bytes = read_part(file, offset, size)
                .await
                .map_err(|e| failed("read", key, e))?;
            let etag = self.send_part(key, upload_id, number, bytes).await?;
            parts.push(StoredPart { number, etag, size });
            offset += size;
            number += 1;
        }
        self.complete_multipart(key, upload_id, &parts).await?;
        Ok(())
    }
}

impl BlobStore for S3Store {
    fn put_file<'a>(
        &'a self,
        key: &'a str,
        file: &'a Path,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let len = tokio::fs::metadata(file)
                .await
                .map_err(|e| failed("read", key, e))?
                .len();
            if len > PART {
                self.put_parts(key, file, len).await?;
            } else {
                self.put_whole(key, file, len).await?;
            }
            // The store holds it now; the local file was only a hand-over.
            let _ = tokio::fs::remove_file(file).await;
            Ok(len)
        })
    }

    fn local_copy<'a>(
        &'a self,
        key: &'a str,
        scratch: &'a Path,
    ) -> BoxFuture<'a, Result<PathBuf, StoreError>> {
        Box::pin(async move {
            let got = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await;
            let object = match got {
                Ok(o) => o,
                Err(e) if missing(&e) => return Err(StoreError::NotFound(key.into())),
                Err(e) => return Err(failed("get", key, e)),
            };
            tokio::fs::create_dir_all(scratch)
                .await
                .map_err(|e| failed("create", key, e))?;
            let path = scratch.join(key.rsplit('/').next().unwrap_or("object"));
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| failed("create copy of", key, e))?;
            let mut body = object.body;
            while let Some(chunk) = body.try_next().await.map_err(|e| failed("read", key, e))? {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| failed("write copy of", key, e))?;
            }
            file.flush()
                .await
                .map_err(|e| failed("write copy of", key, e))?;
            Ok(path)
        })
    }

    fn len<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move { Ok(self.head(key).await?.size) })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| failed("list", prefix, e))?;
                let ids: Vec<ObjectIdentifier> = page
                    .contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                let delete = Delete::builder()
                    .set_objects(Some(ids))
                    .quiet(true)
                    .build()
                    .map_err(|e| failed("delete", prefix, e))?;
                let answer = self
                    .client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| failed("delete", prefix, e))?;
                // A 200 can still list keys it did not delete.
                if let Some(e) = answer.errors().first() {
                    return Err(StoreError::Unavailable(format!(
                        "S3 delete {}: {} {}",
                        e.key().unwrap_or(prefix),
                        e.code().unwrap_or(""),
                        e.message().unwrap_or("")
                    )));
                }
            }
            Ok(())
        })
    }

    fn open<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn BlobObject>, StoreError>> {
        Box::pin(async move { Ok(Box::new(self.head(key).await?) as Box<dyn BlobObject>) })
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let copied = self
                .client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(format!("{}/{from}", self.bucket))
                .content_type(content_type(to))
                .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
                .send()
                .await;
            match copied {
                Ok(_) => {}
                Err(e) if missing(&e) => return Err(StoreError::NotFound(from.into())),
                Err(e) => return Err(failed("copy", from, e)),
            }
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(from)
                .send()
                .await
                .map_err(|e| failed("delete", from, e))?;
            Ok(())
        })
    }

    fn presign<'a>(
        &'a self,
        method: PresignMethod,
        key: &'a str,
        valid: std::time::Duration,
    ) -> BoxFuture<'a, Result<Option<Presigned>, StoreError>> {
        Box::pin(async move {
            let config =
                PresigningConfig::expires_in(valid).map_err(|e| failed("presign", key, e))?;
            let request = match method {
                PresignMethod::Get => self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key)
                    // Served as what it is, whatever the bucket stored.
                    .response_content_type(content_type(key))
                    .presigned(config)
                    .await
                    .map_err(|e| failed("presign", key, e))?,
                PresignMethod::Put => self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .presigned(config)
                    .await
                    .map_err(|e| failed("presign", key, e))?,
            };
            Ok(Some(Presigned {
                url: request.uri().to_string(),
                headers: request
                    .headers()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }))
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.client
                .head_bucket()
                .bucket(&self.bucket)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| failed("reach bucket", &self.bucket, e))
        })
    }

    // Multipart uploads across requests: see `s3_parts`.

    fn start_parts<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(self.begin_multipart(key))
    }

    fn put_part<'a>(
        &'a self,
        key: &'a str,
        upload: &'a str,
        number: u32,
        bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(self.send_part(key, upload, number, bytes))
    }

    /// A second join of an upload joined already answers its length (the
    /// object is there with the parts' length), so a node may join again
    /// after one that died right after joining.
    fn join_parts<'a>(
        &'a self,
        key: &'a str,
        upload: &'a str,
        parts: &'a [StoredPart],
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.complete_multipart(key, upload, parts))
    }

    fn abort_parts<'a>(
        &'a self,
        key: &'a str,
        upload: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.abort_multipart(key, upload))
    }

    fn put_bytes<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.put_object_bytes(key, bytes))
    }

    fn get_bytes<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(self.get_object_bytes(key))
    }
}

impl S3Store {
    /// Keys under `prefix`, in order (tests, operations).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failed("list", prefix, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(str::to_string),
            );
        }
        Ok(keys)
    }

    pub(super) async fn head(&self, key: &str) -> Result<S3Object, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(h) => Ok(S3Object {
                store: self.clone(),
                key: key.to_string(),
                size: h.content_length().unwrap_or(0).max(0) as u64,
                modified: h
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(std::time::UNIX_EPOCH),
            }),
            Err(e) if missing(&e) => Err(StoreError::NotFound(key.into())),
            Err(e) => Err(failed("head", key, e)),
        }
    }
}

/// An object's size and date, read with one HEAD.
#[derive(Debug)]
pub(super) struct S3Object {
    store: S3Store,
    key: String,
    pub(super) size: u64,
    modified: SystemTime,
}

impl BlobObject for S3Object {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn modified(&self) -> SystemTime {
        self.modified
    }

    fn range(&self, start: u64, count: u64) -> Box<dyn ByteChunks> {
        Box::new(S3Range {
            store: self.store.clone(),
            key: self.key.clone(),
            range: (count > 0).then(|| (start, start + count - 1)),
            body: None,
        })
    }
}

/// One ranged GET, started at the first chunk asked for.
struct S3Range {
    store: S3Store,
    key: String,
    /// Inclusive; `None` once started, or for an empty range.
    range: Option<(u64, u64)>,
    body: Option<ByteStream>,
}

impl ByteChunks for S3Range {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            if let Some((first, last)) = self.range.take() {
                let got = self
                    .store
                    .client
                    .get_object()
                    .bucket(&self.store.bucket)
                    .key(&self.key)
                    .range(format!("bytes={first}-{last}"))
                    .send()
                    .await;
                self.body = Some(match got {
                    Ok(o) => o.body,
                    Err(e) if missing(&e) => return Err(StoreError::NotFound(self.key.clone())),
                    Err(e) => return Err(failed("get", &self.key, e)),
                });
            }
            let Some(body) = self.body.as_mut() else {
                return Ok(None);
            };
            match body.try_next().await {
                Ok(Some(bytes)) => Ok(Some(bytes.to_vec())),
                Ok(None) => {
                    self.body = None;
                    Ok(None)
                }
                Err(e) => {
                    self.body = None;
                    Err(failed("read", &self.key, e))
                }
            }
        })
    }
}
