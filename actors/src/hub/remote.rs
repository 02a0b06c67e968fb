//! Events of videos that other nodes process. The bus only says where to
//! look (`{video, seq}`); the event log in the catalog says what happened,
//! so the hub reads the events after the last seq it has and fans them out
//! like its own. A resync (the bus may have dropped wake-ups) reads again
//! for every video the hub knows of, and, for each owner's stream, the
//! videos created while the bus was away.

use std::collections::HashSet;
use std::sync::Arc;

use ractor::ActorRef;

use super::{Announced, HubMsg};
use crate::bus::{BusEvent, EventBus};
use crate::catalog::Catalog;
use crate::model::VideoId;

/// What the hub needs to follow other nodes.
#[derive(Debug, Clone)]
pub struct Remote {
    pub catalog: Arc<dyn Catalog>,
    pub bus: Arc<dyn EventBus>,
    /// This node, whose own progress comes back on the bus and is skipped.
    pub node: String,
}

impl Remote {
    /// Forwards the bus to the hub until either is gone.
    pub(super) fn listen(&self, hub: ActorRef<HubMsg>) -> tokio::task::JoinHandle<()> {
        let mut events = self.bus.subscribe();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if hub.cast(HubMsg::Bus(event)).is_err() {
                    return;
                }
            }
        })
    }

    /// Reads `video`'s events after `after` and hands them to the hub, in
    /// order, marked remote. Off the hub's mailbox: the hub drops whatever
    /// it already has.
    pub(super) fn catch_up(&self, hub: ActorRef<HubMsg>, video: VideoId, after: u64) {
        let catalog = self.catalog.clone();
        tokio::spawn(async move {
            replay(catalog.as_ref(), &hub, video, after).await;
        });
    }

    /// Hands the hub every event of `owner`'s videos created since
    /// `since_ms` that are not in `known`: announced while the bus was
    /// away, so never heard of. (Ids are time-ordered and carry their
    /// creation time; a second's margin covers clocks of other nodes.)
    pub(super) fn catch_up_owner(
        &self,
        hub: ActorRef<HubMsg>,
        owner: String,
        since_ms: u64,
        known: Arc<HashSet<VideoId>>,
    ) {
        const MARGIN_MS: u64 = 1_000;
        const NEWEST: u32 = 200;
        let catalog = self.catalog.clone();
        tokio::spawn(async move {
            let page = match catalog.list(&owner, None, NEWEST, None).await {
                Ok(page) => page,
                Err(e) => {
                    return tracing::debug!(owner, error = %e, "could not list an owner's videos")
                }
            };
            let since = since_ms.saturating_sub(MARGIN_MS);
            for video in page.videos {
                if created_ms(&video.id) < since {
                    break;
                }
                if !known.contains(&video.id) {
                    replay(catalog.as_ref(), &hub, video.id, 0).await;
                }
            }
        });
    }

    /// Whether a bus event is this node's own progress.
    pub(super) fn is_own(&self, event: &BusEvent) -> bool {
        matches!(event, BusEvent::Progress { node, .. } if *node == self.node)
    }
}

/// Milliseconds since the epoch at which video `id` was created (its ULID).
fn created_ms(id: &str) -> u64 {
    ulid::Ulid::from_string(id).map_or(0, |u| u.timestamp_ms())
}

/// Hands the hub `video`'s events after `after`, with the video as it is
/// now; a video that is gone is forgotten instead.
async fn replay(catalog: &dyn Catalog, hub: &ActorRef<HubMsg>, video: VideoId, after: u64) {
    let read = async {
        let events = catalog.events_after(&video, after).await?;
        let current = catalog.get(&video).await?;
        Ok::<_, crate::CoreError>((events, current))
    };
    let (events, current) = match read.await {
        Ok((events, Some(current))) => (events, Arc::new(current)),
        Ok((_, None)) => {
            let _ = hub.cast(HubMsg::Forget(video));
            return;
        }
        Err(e) => {
            return tracing::debug!(video = %video, error = %e, "could not read another node's events")
        }
    };
    for event in events {
        let announced = Announced {
            event,
            video: current.clone(),
            remote: true,
        };
        if hub.cast(HubMsg::State(Arc::new(announced))).is_err() {
            return;
        }
    }
}
