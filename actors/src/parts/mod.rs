//! The upload-parts port: where a cluster keeps what it knows of each
//! resumable upload whose bytes wait in the object store (a multipart
//! upload there), so that consecutive requests of one upload may reach
//! different nodes. A request writes only while it holds the upload (a
//! hold with a time to live, renewed by heartbeats, times by the
//! database's clock), and records each part it stored fenced by the
//! hold's token: two nodes never append to one upload at once, and a node
//! that lost its hold records nothing. A request that finds the upload
//! held asks the holder to let go (the holder learns it at its next
//! renewal), as tus expects when a client resumes on a new connection
//! while its old one still hangs.
//!
//! Only PostgreSQL implements it: one node keeps its partial uploads in
//! local files (see `uploads`).

pub(crate) mod writer;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::model::VideoId;
use crate::ports::StoredPart;

/// A resumable upload whose bytes wait in the object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpload {
    pub id: VideoId,
    /// Declared total length.
    pub length: u64,
    /// The store's multipart upload (of the video's `source` object).
    pub multipart: String,
    /// Parts stored so far, in order.
    pub parts: Vec<StoredPart>,
    /// Bytes after the last part, too few for a part yet: the tail's
    /// pieces, in order, each an object of its own
    /// ([`StoredUpload::tail_keys`]). A request adds its leftover as a new
    /// piece rather than rewriting the tail, so small requests cost only
    /// their own bytes; the pieces are read back once, into the next part.
    pub tail: Vec<TailPiece>,
    /// The number the next part takes ([`UploadParts::reserve_part`]).
    pub next_number: u32,
    /// When bytes were last recorded (or the upload opened), milliseconds
    /// since the epoch by the database's clock.
    pub touched_ms: u64,
}

impl StoredUpload {
    /// Bytes in the parts.
    pub fn in_parts(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// Bytes in the tail's pieces.
    pub fn in_tail(&self) -> u64 {
        self.tail.iter().map(|p| p.size).sum()
    }

    /// Bytes received: the parts and the tail.
    pub fn offset(&self) -> u64 {
        self.in_parts() + self.in_tail()
    }

    /// The objects holding the tail's pieces, in order.
    pub fn tail_keys(&self) -> Vec<String> {
        let mut end = self.in_parts();
        self.tail
            .iter()
            .map(|piece| {
                end += piece.size;
                tail_key(&self.id, end, piece.hold)
            })
            .collect()
    }
}

/// One piece of a stored upload's tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailPiece {
    pub size: u64,
    /// The token of the hold that stored it: part of its key, so that a
    /// request that lost its hold can never write (or remove) the piece
    /// another request stored for the same bytes.
    pub hold: i64,
}

/// The tail piece of upload `id` that ends at byte `end`, stored under
/// hold `hold`: under the video's prefix, so deleting the video removes
/// it. Named by its end and its hold, so a piece never overwrites one the
/// record names, nor one another hold stored for the same bytes; the
/// suffix keeps one piece's key from being the prefix of another's.
pub fn tail_key(id: &str, end: u64, hold: i64) -> String {
    crate::ports::object_key(id, &format!("upload-tail-{end}-{hold}.bin"))
}

#[async_trait]
pub trait UploadParts: Send + Sync + std::fmt::Debug + 'static {
    /// Records a new stored upload of `length` bytes for video `id` (which
    /// exists, `uploading`), kept in multipart upload `multipart`.
    async fn open_parts(&self, id: &str, length: u64, multipart: &str) -> Result<(), CoreError>;

    /// The upload as last recorded; `None` when there is none (never
    /// opened, closed, or its video deleted: the record goes with it).
    async fn stored_upload(&self, id: &str) -> Result<Option<StoredUpload>, CoreError>;

    /// Takes the right to write upload `id` for `ttl`, returning the hold's
    /// token (larger than any earlier one). While another hold is live,
    /// answers `None` and asks that holder to let go ([`Self::renew_hold`]
    /// tells it). `NotFound` when there is no such upload.
    async fn take_hold(&self, id: &str, ttl: Duration) -> Result<Option<i64>, CoreError>;

    /// Extends hold `token` by `ttl`; `Ok(true)` when another request
    /// wants the upload, `LeaseLost` when the hold is no longer this one.
    async fn renew_hold(&self, id: &str, token: i64, ttl: Duration) -> Result<bool, CoreError>;

    /// Takes the number the next part is stored under, for hold `token`:
    /// numbers are handed out once, so a request that lost its hold while
    /// its part was on the way can never replace a part another request
    /// stored (its own becomes an unlisted part, dropped at the join).
    /// `LeaseLost` unless hold `token` is live.
    async fn reserve_part(&self, id: &str, token: i64) -> Result<u32, CoreError>;

    /// Records the upload's parts and tail pieces as they now are, and
    /// touches it; `LeaseLost` (recording nothing) unless hold `token` is
    /// live.
    async fn record_parts(
        &self,
        id: &str,
        token: i64,
        parts: &[StoredPart],
        tail: &[TailPiece],
    ) -> Result<(), CoreError>;

    /// Gives hold `token` up; a hold that is gone already is no error.
    async fn drop_hold(&self, id: &str, token: i64) -> Result<(), CoreError>;

    /// Forgets upload `id` (its bytes became the source, or it went).
    async fn close_parts(&self, id: &str) -> Result<(), CoreError>;
}

/// The prefix of every tail piece of upload `id`, recorded or not (a node
/// that died between storing a piece and recording it leaves one).
pub fn tail_prefix(id: &str) -> String {
    crate::ports::object_key(id, "upload-tail-")
}
