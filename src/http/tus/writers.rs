//! Who is writing to which upload, and how far each has got. One request
//! writes to an upload at a time; a new one takes over from a request still
//! holding it (typically a connection that died without closing, which
//! would otherwise hold the upload until the body idle timeout), and the
//! old one stops at its next chunk, keeping what it wrote.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, OwnedMutexGuard};
use vidmill_actors::VideoId;

use crate::http::error::ApiError;

/// How long a new request waits for the one it takes over from to stop.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Lane {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Bumped by every request that wants the upload; the holder watches it.
    wanted: watch::Sender<u64>,
}

/// What the tus routes share.
#[derive(Debug, Clone, Default)]
pub struct Uploads {
    lanes: Arc<Mutex<HashMap<VideoId, Lane>>>,
    percent: Arc<Mutex<HashMap<VideoId, f64>>>,
}

/// The right to write to one upload, until dropped.
#[derive(Debug)]
pub struct Writing {
    _guard: OwnedMutexGuard<()>,
    wanted: watch::Receiver<u64>,
}

impl Writing {
    /// Resolves when another request wants the upload.
    pub async fn superseded(&mut self) {
        if self.wanted.changed().await.is_err() {
            // The lane is gone (the upload finished or was removed).
            std::future::pending::<()>().await;
        }
    }
}

impl Uploads {
    /// Percent of the declared bytes received, when this process has seen
    /// the upload.
    pub fn percent(&self, id: &str) -> Option<f64> {
        self.percent.lock().ok()?.get(id).copied()
    }

    pub fn record(&self, id: &str, offset: u64, length: u64) {
        if let Ok(mut map) = self.percent.lock() {
            map.insert(id.into(), offset as f64 * 100.0 / length.max(1) as f64);
        }
    }

    /// Drops what is kept about an upload that finished or went away.
    pub fn forget(&self, id: &str) {
        if let Ok(mut map) = self.percent.lock() {
            map.remove(id);
        }
        if let Ok(mut lanes) = self.lanes.lock() {
            lanes.remove(id);
        }
    }

    /// Takes the right to write to `id`, asking any request that holds it
    /// to stop and waiting for it to do so.
    pub async fn claim(&self, id: &str) -> Result<Writing, ApiError> {
        let lane = {
            let mut lanes = self
                .lanes
                .lock()
                .map_err(|_| ApiError::Internal("upload lanes poisoned".into()))?;
            lanes
                .entry(id.to_string())
                .or_insert_with(|| Lane {
                    lock: Arc::default(),
                    wanted: watch::Sender::new(0),
                })
                .clone()
        };
        lane.wanted.send_modify(|n| *n += 1);
        let guard = tokio::time::timeout(TAKEOVER_WAIT, lane.lock.lock_owned())
            .await
            .map_err(|_| {
                ApiError::OffsetMismatch(
                    "another request is still writing to this upload; ask for the offset (HEAD) and try again".into(),
                )
            })?;
        Ok(Writing {
            _guard: guard,
            wanted: lane.wanted.subscribe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_writer_takes_over_and_the_old_one_is_told() {
        let uploads = Uploads::default();
        let mut first = uploads.claim("u").await.expect("first");
        let told = tokio::spawn(async move {
            first.superseded().await;
            drop(first);
        });
        let second = uploads.claim("u").await.expect("takes over");
        told.await.expect("the first was told");
        drop(second);
        assert!(uploads.claim("u").await.is_ok(), "free again");
    }
}
