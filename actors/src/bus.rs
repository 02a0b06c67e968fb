//! The event-bus port: wake-ups between the nodes sharing a catalog. The
//! event log in the catalog is the truth; the bus only says where to look
//! (`{video, seq}`), so a node that missed wake-ups (its listener
//! reconnected) is told to resync and reads the log after the last seq it
//! has. Progress, which is never stored, rides the bus as it is. The
//! embedded default is [`LocalBus`], in process; a cluster uses the
//! database's own notifications.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::CoreError;
use crate::model::{ProgressEvent, VideoId};

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BusEvent {
    /// Video `video` has state events up to `seq` in the log.
    State { video: VideoId, seq: u64 },
    /// A run's latest progress, from `node`.
    Progress { node: String, event: ProgressEvent },
    /// Wake-ups may have been missed: read the log again.
    Resync,
}

#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `event` to every subscriber on every node (this one included).
    async fn publish(&self, event: BusEvent) -> Result<(), CoreError>;

    /// Events from now on. A subscriber that falls behind, or whose
    /// connection was re-made, receives `Resync`.
    fn subscribe(&self) -> BusSubscription;

    /// Whether only this process is on the bus (then nothing need be
    /// published: every event is already known here).
    fn is_local(&self) -> bool {
        false
    }
}

/// The receiving end of a bus subscription.
#[derive(Debug)]
pub struct BusSubscription(broadcast::Receiver<BusEvent>);

impl BusSubscription {
    pub fn new(rx: broadcast::Receiver<BusEvent>) -> Self {
        Self(rx)
    }

    /// The next event; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<BusEvent> {
        match self.0.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(BusEvent::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Wake-ups a bus holds for a slow subscriber before it must resync: a
/// few seconds of a busy node's events.
pub const BUS_BACKLOG: usize = 4096;

/// The in-process bus of a single node.
#[derive(Debug, Clone)]
pub struct LocalBus(Arc<broadcast::Sender<BusEvent>>);

impl Default for LocalBus {
    fn default() -> Self {
        Self(Arc::new(broadcast::channel(BUS_BACKLOG).0))
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, event: BusEvent) -> Result<(), CoreError> {
        // No subscriber is no error: nobody is listening yet.
        let _ = self.0.send(event);
        Ok(())
    }

    fn subscribe(&self) -> BusSubscription {
        BusSubscription::new(self.0.subscribe())
    }

    fn is_local(&self) -> bool {
        true
    }
}
