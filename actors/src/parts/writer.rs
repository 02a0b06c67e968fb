//! One request appending to a resumable upload kept in the object store.
//! Its bytes are cut into parts of at least the store's minimum; each part
//! is stored, then recorded under the request's hold. What is left when the
//! request ends (too few bytes for a part, unless they are the last) is
//! added to the upload's tail as a piece of its own; when the tail and new
//! bytes make a part, the pieces are read back, once, ahead of the new
//! bytes. A request of one byte thus costs the store one byte, not a
//! rewrite of the tail (the tail is folded into one piece when it has too
//! many). The offset a client is told is always what the record says, so
//! it holds whichever node answers next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{tail_key, StoredUpload, TailPiece, UploadParts};
use crate::error::CoreError;
use crate::ports::{object_key, BlobStore, StoreError, StoredPart, MIN_PART_BYTES};

/// S3 allows 10,000 parts; a few are kept spare.
const MAX_PARTS: u64 = 9_000;

/// Pieces a tail may have before a request folds them into one: bounds
/// the record and the reads that make the next part, while folding (a
/// read of the whole tail) stays rare.
const MAX_PIECES: usize = 64;

/// How often a request asks for the hold while another request has it.
const HOLD_POLL: Duration = Duration::from_millis(100);

/// What the heartbeat learnt of the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldNews {
    Held,
    /// Another request wants the upload: this one should end.
    Wanted,
    /// The hold is no longer this request's.
    Lost,
}

/// The right to append to one stored upload, and the bytes on their way.
pub struct PartsWriter {
    parts: Arc<dyn UploadParts>,
    store: Arc<dyn BlobStore>,
    /// The upload as recorded.
    upload: StoredUpload,
    token: i64,
    part_size: u64,
    /// This request's bytes not stored yet (they follow the recorded tail).
    fresh: Vec<u8>,
    /// A store or record failed: what is recorded stands, nothing more is
    /// written.
    broken: bool,
    news: watch::Receiver<HoldNews>,
    /// When the hold was last known live (taken, or renewed).
    renewed: Arc<std::sync::Mutex<Instant>>,
    ttl: Duration,
    heartbeat: JoinHandle<()>,
    released: bool,
}

impl std::fmt::Debug for PartsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartsWriter")
            .field("upload", &self.upload.id)
            .field("token", &self.token)
            .field("offset", &self.offset())
            .finish_non_exhaustive()
    }
}

/// The part size for an upload of `length` bytes: the store's minimum, or
/// more when the upload would otherwise need too many parts.
fn part_size(length: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let needed = length.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    needed.max(MIN_PART_BYTES)
}

/// A store's failure in the core's terms: a store that cannot be reached
/// is unavailable (the client retries later); anything else is a fault.
fn storage(e: StoreError) -> CoreError {
    match e {
        StoreError::Unavailable(m) => CoreError::Unavailable(m),
        e @ StoreError::NotFound(_) => CoreError::Storage(e.to_string()),
    }
}

impl PartsWriter {
    /// Takes the hold on upload `id` for `ttl`, waiting up to `wait` for
    /// another request to let go of it, and reads its tail back.
    pub(crate) async fn hold(
        parts: Arc<dyn UploadParts>,
        store: Arc<dyn BlobStore>,
        id: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Self, CoreError> {
        let deadline = Instant::now() + wait;
        let token = loop {
            if let Some(token) = parts.take_hold(id, ttl).await? {
                break token;
            }
            if Instant::now() >= deadline {
                return Err(CoreError::Busy(
                    "another request is still writing to this upload; ask for the offset (HEAD) and try again".into(),
                ));
            }
            tokio::time::sleep(HOLD_POLL).await;
        };
        let (tell, news) = watch::channel(HoldNews::Held);
        let renewed = Arc::new(std::sync::Mutex::new(Instant::now()));
        let heartbeat = tokio::spawn(beat(
            parts.clone(),
            id.to_string(),
            token,
            ttl,
            (tell, renewed.clone()),
        ));
        let mut writer = Self {
            parts,
            store,
            upload: StoredUpload {
                id: id.into(),
                length: 0,
                multipart: String::new(),
                parts: Vec::new(),
                tail: Vec::new(),
                next_number: 1,
                touched_ms: 0,
            },
            token,
            part_size: MIN_PART_BYTES,
            fresh: Vec::new(),
            broken: false,
            news,
            renewed,
            ttl,
            heartbeat,
            released: false,
        };
        // Read under the hold: nothing changes it now but this request.
        let loaded = writer.load().await;
        if let Err(e) = loaded {
            writer.release().await;
            return Err(e);
        }
        Ok(writer)
    }

    async fn load(&mut self) -> Result<(), CoreError> {
        let id = self.upload.id.clone();
        self.upload = self
            .parts
            .stored_upload(&id)
            .await?
            .ok_or(CoreError::NotFound(id))?;
        self.part_size = part_size(self.upload.length);
        Ok(())
    }

    /// The tail's pieces, read back and checked against the record.
    async fn read_tail(&self) -> Result<Vec<u8>, CoreError> {
        let mut tail = Vec::with_capacity(self.upload.in_tail() as usize);
        for (key, recorded) in self.upload.tail_keys().iter().zip(&self.upload.tail) {
            let size = recorded.size;
            let piece = self.store.get_bytes(key).await.map_err(storage)?;
            if piece.len() as u64 != size {
                return Err(CoreError::Storage(format!(
                    "the tail piece {key} of upload {} holds {} bytes, not the {size} recorded",
                    self.upload.id,
                    piece.len()
                )));
            }
            tail.extend_from_slice(&piece);
        }
        Ok(tail)
    }

    /// Bytes received, counting those not stored yet.
    pub fn offset(&self) -> u64 {
        self.upload.offset() + self.fresh.len() as u64
    }

    /// Bytes stored and recorded: where a client resumes.
    pub fn recorded(&self) -> u64 {
        self.upload.offset()
    }

    /// The declared length.
    pub fn length(&self) -> u64 {
        self.upload.length
    }

    /// Takes `bytes` (which the caller has checked fit the declared
    /// length), storing a part whenever enough have come.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), CoreError> {
        if self.broken {
            return Err(CoreError::Storage("an earlier write failed".into()));
        }
        self.fresh.extend_from_slice(bytes);
        if self.upload.in_tail() + self.fresh.len() as u64 >= self.part_size {
            self.store_part().await?;
        }
        Ok(())
    }

    /// Stores and records the tail and the fresh bytes as the next part;
    /// after a failure nothing more is written (what was recorded stands).
    async fn store_part(&mut self) -> Result<(), CoreError> {
        let result = self.try_store_part().await;
        self.broken |= result.is_err();
        result
    }

    /// Refuses to store while the hold may have lapsed: the heartbeat has
    /// not renewed it for half its life (the database is out of reach).
    /// Another request may hold the upload by now, and a part stored under
    /// a number it also uses would replace its part.
    fn still_held(&self) -> Result<(), CoreError> {
        let renewed = self.renewed.lock().map_or(Instant::now(), |r| *r);
        if self.lost() || renewed.elapsed() > self.ttl / 2 {
            return Err(CoreError::LeaseLost(self.upload.id.clone()));
        }
        Ok(())
    }

    async fn try_store_part(&mut self) -> Result<(), CoreError> {
        self.still_held()?;
        let id = self.upload.id.clone();
        let mut bytes = self.read_tail().await?;
        bytes.append(&mut self.fresh);
        let source = object_key(&id, "source");
        // Reserved under the hold before anything is stored: a request that
        // loses its hold mid-part stores under a number nobody else gets.
        let number = self.parts.reserve_part(&id, self.token).await?;
        let size = bytes.len() as u64;
        let etag = self
            .store
            .put_part(&source, &self.upload.multipart, number, bytes)
            .await
            .map_err(|e| match e {
                // The multipart upload is gone: the upload was deleted (on
                // another node) or expired meanwhile.
                StoreError::NotFound(_) => CoreError::NotFound(id.clone()),
                other => storage(other),
            })?;
        let mut parts = self.upload.parts.clone();
        parts.push(StoredPart { number, etag, size });
        self.parts
            .record_parts(&id, self.token, &parts, &[])
            .await?;
        let old_tail = self.upload.tail_keys();
        self.upload.parts = parts;
        self.upload.tail.clear();
        self.forget(old_tail).await;
        Ok(())
    }

    /// Adds the fresh bytes to the tail as a piece, or, when the tail has
    /// pieces enough, folds it and them into one.
    async fn store_piece(&mut self) -> Result<(), CoreError> {
        let result = self.try_store_piece().await;
        self.broken |= result.is_err();
        result
    }

    async fn try_store_piece(&mut self) -> Result<(), CoreError> {
        self.still_held()?;
        let id = self.upload.id.clone();
        let end = self.offset();
        let fold = self.upload.tail.len() + 1 > MAX_PIECES;
        let hold = self.token;
        let (bytes, tail, replaced) = if fold {
            let mut bytes = self.read_tail().await?;
            bytes.extend_from_slice(&self.fresh);
            let size = bytes.len() as u64;
            (
                bytes,
                vec![TailPiece { size, hold }],
                self.upload.tail_keys(),
            )
        } else {
            let mut tail = self.upload.tail.clone();
            tail.push(TailPiece {
                size: self.fresh.len() as u64,
                hold,
            });
            (self.fresh.clone(), tail, Vec::new())
        };
        // This hold's own key: whatever happens to this request, the piece
        // it writes (or removes) is no one else's.
        let key = tail_key(&id, end, hold);
        self.store.put_bytes(&key, bytes).await.map_err(storage)?;
        if let Err(e) = self
            .parts
            .record_parts(&id, self.token, &self.upload.parts, &tail)
            .await
        {
            self.forget(vec![key]).await;
            return Err(e);
        }
        self.upload.tail = tail;
        self.fresh.clear();
        self.forget(replaced).await;
        Ok(())
    }

    /// Removes pieces the record no longer names (best effort: finishing
    /// or deleting the upload takes any left over).
    async fn forget(&self, keys: Vec<String>) {
        for key in keys {
            if let Err(e) = self.store.delete_prefix(&key).await {
                tracing::debug!(key, error = %e, "could not remove an old upload tail piece");
            }
        }
    }

    /// Makes every byte received durable: the last ones as the final part,
    /// others as a tail piece. Returns the recorded offset, which is what
    /// a client resumes from (after a failure, what was recorded before).
    pub async fn settle(&mut self) -> Result<u64, CoreError> {
        if self.broken || self.fresh.is_empty() {
            return Ok(self.recorded());
        }
        if self.offset() == self.upload.length {
            self.store_part().await?;
        } else {
            self.store_piece().await?;
        }
        Ok(self.recorded())
    }

    /// Resolves when this request should stop: another wants the upload,
    /// or the hold was lost.
    pub async fn superseded(&mut self) {
        while *self.news.borrow_and_update() == HoldNews::Held {
            if self.news.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Whether the hold is known lost (nothing more will be recorded).
    pub fn lost(&self) -> bool {
        *self.news.borrow() == HoldNews::Lost
    }

    /// Gives the hold up, so the next request takes it at once.
    pub async fn release(mut self) {
        self.heartbeat.abort();
        self.released = true;
        if let Err(e) = self.parts.drop_hold(&self.upload.id, self.token).await {
            tracing::debug!(upload = %self.upload.id, error = %e, "could not give up an upload hold");
        }
    }
}

impl Drop for PartsWriter {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.released {
            return;
        }
        // Dropped without `release` (its request was cancelled): give the
        // hold up anyway, or the next request waits for it to lapse.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (parts, id, token) = (self.parts.clone(), self.upload.id.clone(), self.token);
            runtime.spawn(async move {
                let _ = parts.drop_hold(&id, token).await;
            });
        }
    }
}

/// Renews the hold until it is lost, telling the writer what it learns. A
/// database that does not answer is retried: the hold lapses by itself if
/// it stays away, and the next record fails.
async fn beat(
    parts: Arc<dyn UploadParts>,
    id: String,
    token: i64,
    ttl: Duration,
    (tell, renewed): (watch::Sender<HoldNews>, Arc<std::sync::Mutex<Instant>>),
) {
    // Often enough that a missed beat or two leaves the writer's guard
    // (half the life) intact.
    let every = (ttl / 4).min(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let asked = Instant::now();
        match parts.renew_hold(&id, token, ttl).await {
            Ok(wanted) => {
                if let Ok(mut r) = renewed.lock() {
                    *r = asked;
                }
                if wanted {
                    let _ = tell.send(HoldNews::Wanted);
                }
            }
            Err(CoreError::LeaseLost(_)) => {
                let _ = tell.send(HoldNews::Lost);
                return;
            }
            Err(e) => tracing::debug!(upload = %id, error = %e, "could not renew an upload hold"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_the_minimum_until_the_count_would_run_out() {
        assert_eq!(part_size(1), MIN_PART_BYTES);
        assert_eq!(part_size(MIN_PART_BYTES * MAX_PARTS), MIN_PART_BYTES);
        let big = 100 << 30;
        let size = part_size(big);
        assert!(size > MIN_PART_BYTES);
        assert!(big.div_ceil(size) <= MAX_PARTS, "{size}");
        assert_eq!(size % (1 << 20), 0);
    }
}
