//! A shard of the hub's subscribers: a task that hands each event the hub
//! publishes to those of its subscribers the event concerns, in the order
//! published. The hub keeps a few shards (about one per core) and gives
//! each new subscriber to the next, so one event's fan-out to thousands of
//! subscribers runs on every core at once, and each subscriber is reached
//! by a call, not by a channel, a wake-up and a task of its own: an
//! [`Outlet`] takes the event on the spot (the WebSocket edge writes it to
//! the socket then and there when nothing is waiting before it).
//!
//! A subscriber stays in one shard for its whole life, and a shard handles
//! its messages one after another, so every subscriber gets its events in
//! the hub's order.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Announced, Outlet, Scope};
use crate::model::{ProgressEvent, VideoId};

/// Messages a shard may have unread before the hub waits for it. A shard
/// never waits on a subscriber (outlets do not block), so it falls behind
/// only while it is short of CPU; then the hub waits, and its own mailbox
/// holds what comes meanwhile.
const SHARD_QUEUE: usize = 1024;

pub(super) enum ShardMsg {
    Attach(Scope, Box<dyn Outlet>),
    State(Arc<Announced>),
    Progress(Arc<ProgressEvent>),
    /// Subscribers still open.
    Count(oneshot::Sender<usize>),
    /// The videos subscribed to one by one.
    Videos(oneshot::Sender<Vec<VideoId>>),
    /// The owners whose streams (all their videos) are subscribed to.
    Owners(oneshot::Sender<Vec<String>>),
}

/// The hub's end of a shard. Dropping it ends the shard, which drops its
/// outlets: their subscribers' streams end.
#[derive(Debug)]
pub(super) struct Shard {
    tx: mpsc::Sender<ShardMsg>,
}

/// The shard's task is gone (it panicked in an outlet): the hub is broken.
#[derive(Debug, thiserror::Error)]
#[error("a fan-out shard of the progress hub is gone")]
pub struct ShardGone;

impl Shard {
    pub(super) fn spawn() -> Self {
        let (tx, rx) = mpsc::channel(SHARD_QUEUE);
        tokio::spawn(run(rx));
        Self { tx }
    }

    pub(super) async fn send(&self, message: ShardMsg) -> Result<(), ShardGone> {
        self.tx.send(message).await.map_err(|_| ShardGone)
    }

    /// Asks the shard something and waits for the answer.
    pub(super) async fn ask<T>(
        &self,
        message: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
    ) -> Result<T, ShardGone> {
        let (reply, answer) = oneshot::channel();
        self.send(message(reply)).await?;
        answer.await.map_err(|_| ShardGone)
    }
}

struct Subscriber {
    scope: Scope,
    outlet: Box<dyn Outlet>,
}

impl Subscriber {
    fn wants(&self, announced_remote: bool, video_id: &str, owner: &str) -> bool {
        match &self.scope {
            Scope::Video(id) => id == video_id,
            Scope::Owner(o) => o == owner,
            Scope::All => !announced_remote,
        }
    }
}

async fn run(mut rx: mpsc::Receiver<ShardMsg>) {
    let mut subscribers: Vec<Subscriber> = Vec::new();
    // Closed subscribers an event did not reach yet are dropped whenever
    // the list has doubled since it was last swept: they never outnumber
    // the open ones by much, whatever comes and goes.
    let mut swept_at = 0usize;
    while let Some(message) = rx.recv().await {
        match message {
            ShardMsg::Attach(scope, outlet) => {
                subscribers.push(Subscriber { scope, outlet });
                if subscribers.len() > 2 * swept_at.max(32) {
                    subscribers.retain(|s| s.outlet.is_open());
                    swept_at = subscribers.len();
                }
            }
            ShardMsg::State(announced) => {
                let e = &announced.event;
                let mut i = 0;
                while i < subscribers.len() {
                    let sub = &subscribers[i];
                    if !sub.wants(announced.remote, &e.video_id, &e.owner) {
                        i += 1;
                        continue;
                    }
                    if sub.outlet.state(&announced) {
                        i += 1;
                    } else {
                        // The order among subscribers does not matter.
                        subscribers.swap_remove(i);
                    }
                    // Thousands of deliveries are one long turn: let the
                    // executor run other tasks now and then.
                    tokio::task::consume_budget().await;
                }
            }
            ShardMsg::Progress(event) => {
                let mut i = 0;
                while i < subscribers.len() {
                    let sub = &subscribers[i];
                    if !sub.wants(false, &event.video_id, &event.owner) {
                        i += 1;
                        continue;
                    }
                    if sub.outlet.progress(&event) {
                        i += 1;
                    } else {
                        subscribers.swap_remove(i);
                    }
                    tokio::task::consume_budget().await;
                }
            }
            ShardMsg::Count(reply) => {
                subscribers.retain(|s| s.outlet.is_open());
                swept_at = subscribers.len();
                let _ = reply.send(subscribers.len());
            }
            ShardMsg::Videos(reply) => {
                let videos = subscribers
                    .iter()
                    .filter_map(|s| match &s.scope {
                        Scope::Video(id) => Some(id.clone()),
                        _ => None,
                    })
                    .collect();
                let _ = reply.send(videos);
            }
            ShardMsg::Owners(reply) => {
                let owners = subscribers
                    .iter()
                    .filter_map(|s| match &s.scope {
                        Scope::Owner(owner) => Some(owner.clone()),
                        _ => None,
                    })
                    .collect();
                let _ = reply.send(owners);
            }
        }
    }
}
