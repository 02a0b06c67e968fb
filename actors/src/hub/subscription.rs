//! The core's own subscriptions to the hub (and the tests'): a bounded
//! channel for state events, which closes with a reason when its reader
//! falls too far behind, and a slot holding the latest progress per video.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

use super::{Announced, HubMessage, Outlet, STATE_QUEUE};
use crate::model::{ProgressEvent, VideoId};

/// A subscription and the outlet the hub delivers to it through.
pub(super) fn channel() -> (Subscription, ChannelOutlet) {
    let (tx, rx) = mpsc::channel(STATE_QUEUE);
    let slot = Arc::new(ProgressSlot::default());
    let outlet = ChannelOutlet {
        state: tx,
        slot: slot.clone(),
    };
    (Subscription { state: rx, slot }, outlet)
}

/// Latest progress per video, waiting to be read.
#[derive(Debug, Default)]
struct ProgressSlot {
    latest: Mutex<BTreeMap<VideoId, Arc<ProgressEvent>>>,
    notify: Notify,
    closed: Mutex<Option<String>>,
}

/// The receiving end of a subscription.
#[derive(Debug)]
pub struct Subscription {
    state: mpsc::Receiver<Arc<Announced>>,
    slot: Arc<ProgressSlot>,
}

impl Subscription {
    /// The next event: pending state events first, then the latest progress.
    /// `None` when the hub closed the subscription ([`Self::close_reason`]).
    pub async fn next(&mut self) -> Option<HubMessage> {
        loop {
            if let Ok(event) = self.state.try_recv() {
                return Some(HubMessage::State(event));
            }
            if let Some(p) = self.take_progress() {
                return Some(HubMessage::Progress(p));
            }
            tokio::select! {
                biased;
                event = self.state.recv() => return event.map(HubMessage::State),
                _ = self.slot.notify.notified() => {}
            }
        }
    }

    fn take_progress(&self) -> Option<Arc<ProgressEvent>> {
        let mut latest = self.slot.latest.lock().ok()?;
        let key = latest.keys().next()?.clone();
        latest.remove(&key)
    }

    /// Why the hub closed this subscription, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.slot.closed.lock().ok().and_then(|r| r.clone())
    }
}

/// The sending end of a [`Subscription`].
pub(super) struct ChannelOutlet {
    state: mpsc::Sender<Arc<Announced>>,
    slot: Arc<ProgressSlot>,
}

impl Outlet for ChannelOutlet {
    fn state(&self, announced: &Arc<Announced>) -> bool {
        // Progress from before this change is stale now.
        if let Ok(mut latest) = self.slot.latest.lock() {
            latest.remove(&announced.event.video_id);
        }
        match self.state.try_send(announced.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Ok(mut reason) = self.slot.closed.lock() {
                    *reason = Some(format!("subscriber fell {STATE_QUEUE} state events behind"));
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn progress(&self, event: &Arc<ProgressEvent>) -> bool {
        if self.state.is_closed() {
            return false;
        }
        if let Ok(mut latest) = self.slot.latest.lock() {
            latest.insert(event.video_id.clone(), event.clone());
        }
        self.slot.notify.notify_one();
        true
    }

    fn is_open(&self) -> bool {
        !self.state.is_closed()
    }
}

impl Drop for ChannelOutlet {
    fn drop(&mut self) {
        // Dropping the sender ends the subscriber's stream; a reader
        // waiting for progress hears it too.
        self.slot.notify.notify_one();
    }
}
