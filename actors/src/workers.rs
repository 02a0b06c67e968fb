//! The pipelines running on worker threads, by video. The registry lives
//! beside the actors, not in them: a video actor that crashed, or a
//! supervisor that was restarted, leaves its worker behind, and whoever
//! runs the video next must cancel that worker and wait for it to be gone
//! before using the video's work directory or slot again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::model::VideoId;
use crate::ports::CancelFlag;

struct Entry {
    cancel: CancelFlag,
    /// Turns `true` when the worker thread has ended.
    gone: watch::Receiver<bool>,
}

#[derive(Default)]
pub(crate) struct Workers(Mutex<HashMap<VideoId, Entry>>);

/// Held by a worker thread; dropping it (on every way out of the thread,
/// panics included) marks the worker gone.
pub(crate) struct WorkerGuard {
    registry: Arc<Workers>,
    id: VideoId,
    gone: watch::Sender<bool>,
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        let _ = self.gone.send(true);
        if let Ok(mut map) = self.registry.0.lock() {
            // Only this worker's entry: a newer one may have replaced it.
            if map.get(&self.id).is_some_and(|e| *e.gone.borrow()) {
                map.remove(&self.id);
            }
        }
    }
}

impl Workers {
    /// Registers a worker for `id`; returns its cancel flag and the guard
    /// the worker thread holds.
    pub fn start(self: &Arc<Self>, id: &str) -> (CancelFlag, WorkerGuard) {
        let cancel = CancelFlag::default();
        let (tx, rx) = watch::channel(false);
        if let Ok(mut map) = self.0.lock() {
            map.insert(
                id.to_string(),
                Entry {
                    cancel: cancel.clone(),
                    gone: rx,
                },
            );
        }
        let guard = WorkerGuard {
            registry: self.clone(),
            id: id.to_string(),
            gone: tx,
        };
        (cancel, guard)
    }

    /// Asks `id`'s worker, if any, to stop.
    pub fn cancel(&self, id: &str) {
        if let Ok(map) = self.0.lock() {
            if let Some(e) = map.get(id) {
                e.cancel.cancel();
            }
        }
    }

    /// Asks every worker to stop.
    pub fn cancel_all(&self) {
        if let Ok(map) = self.0.lock() {
            for e in map.values() {
                e.cancel.cancel();
            }
        }
    }

    /// Waits until `id` has no worker (at most `limit`); `false` if one is
    /// still running then.
    pub async fn gone(&self, id: &str, limit: Duration) -> bool {
        let rx = match self.0.lock() {
            Ok(map) => map.get(id).map(|e| e.gone.clone()),
            Err(_) => None,
        };
        let Some(mut rx) = rx else { return true };
        tokio::time::timeout(limit, rx.wait_for(|gone| *gone))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    #[cfg(test)]
    pub fn running(&self, id: &str) -> bool {
        self.0
            .lock()
            .ok()
            .is_some_and(|m| m.get(id).is_some_and(|e| !*e.gone.borrow()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_is_gone_once_its_guard_drops() {
        let workers = Arc::new(Workers::default());
        let (cancel, guard) = workers.start("v1");
        assert!(workers.running("v1"));
        workers.cancel("v1");
        assert!(cancel.is_cancelled());
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(guard);
        });
        assert!(workers.gone("v1", Duration::from_secs(2)).await);
        assert!(!workers.running("v1"));
        t.join().expect("thread");
        assert!(workers.gone("nobody", Duration::ZERO).await);
    }
}
