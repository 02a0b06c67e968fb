//! The progress hub: fans out progress and state events to subscribers of
//! one video or of all of an owner's videos, and keeps the latest progress
//! of every processing video for whoever asks (the video resource).
//!
//! State events are never dropped: each subscriber has a bounded queue for
//! them, and a subscriber whose queue stays full is closed with a reason
//! rather than allowed to hold memory. Progress is coalesced per video
//! (latest wins), so a slow reader sees fresh numbers, never a backlog.
//! Every message is shared (`Arc`), never copied per subscriber, and a
//! state event carries the video as it was stored, so no subscriber has to
//! read it back.
//!
//! Each video's state events reach a subscriber once and in order: the
//! hub drops what it already fanned out when the log is read again (a
//! wake-up racing the local announcement, also after the end), so a
//! subscriber only has to mind what its own catch-up already showed.
//!
//! Subscribers live in shards (`shard`), tasks that call each subscriber's
//! [`Outlet`] in turn: one event reaches ten thousand subscribers on every
//! core at once, without a wake-up per subscriber. An outlet is either a
//! [`Subscription`]'s channel (the core's own readers, tests) or one the
//! edge brings ([`HubMsg::Attach`]: the WebSocket writes to its socket).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::bus::BusEvent;
use crate::model::{ProgressEvent, StateEvent, Video, VideoId};
use crate::state::VideoState;

mod remote;
mod shard;
mod subscription;
pub use remote::Remote;
pub use shard::ShardGone;
use shard::{Shard, ShardMsg};
pub use subscription::Subscription;

/// State events a subscriber may have unread before it is closed as too
/// slow: far more than one video's whole life (about ten events), so only a
/// reader that has stopped reading hits it.
pub const STATE_QUEUE: usize = 256;

/// Finished videos whose last seq the hub keeps. The log of a video that
/// just became `ready` or `failed` may still be read again (another
/// node's wake-up; on a cluster, this node's own, echoed by the bus), and
/// those reads come within moments of the end: far fewer videos than this
/// finish meanwhile.
const FINISHED_KEPT: usize = 4096;

/// Where the hub delivers one subscriber's events. A shard calls it for
/// every event in the subscriber's scope, in the order the hub published
/// them, one call at a time; a call must not wait (it runs in the middle
/// of thousands of others). Returning `false` ends the subscription: the
/// outlet is dropped, which is how it learns the hub is done with it
/// (also when the hub stops).
pub trait Outlet: Send {
    /// A state event. An outlet that cannot keep it (too far behind, or
    /// its reader gone) says `false`, never drops it silently.
    fn state(&self, event: &Arc<Announced>) -> bool;
    /// The latest progress of a video; it may replace one not yet read.
    fn progress(&self, event: &Arc<ProgressEvent>) -> bool;
    /// Whether its reader is still there (closed ones are swept out).
    fn is_open(&self) -> bool;
}

/// What a subscription listens to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Video(VideoId),
    Owner(String),
    /// Everything (the server's own bookkeeping, never a user).
    All,
}

/// A state event as it was stored, with the video it left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Announced {
    pub event: StateEvent,
    pub video: Arc<Video>,
    /// Read from the log after another node's wake-up (not this node's
    /// own doing: its bookkeeping skips it).
    pub remote: bool,
}

/// One message to a subscriber.
#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage {
    State(Arc<Announced>),
    Progress(Arc<ProgressEvent>),
}

/// The latest progress of every processing video, written by the hub and
/// read by anyone (a read takes no message).
#[derive(Debug, Clone, Default)]
pub struct ProgressBoard(Arc<RwLock<HashMap<VideoId, Arc<ProgressEvent>>>>);

impl ProgressBoard {
    pub fn get(&self, id: &str) -> Option<Arc<ProgressEvent>> {
        self.0.read().ok().and_then(|b| b.get(id).cloned())
    }

    fn set(&self, event: Arc<ProgressEvent>) {
        if let Ok(mut b) = self.0.write() {
            b.insert(event.video_id.clone(), event);
        }
    }

    pub(crate) fn clear(&self, id: &str) {
        if let Ok(mut b) = self.0.write() {
            b.remove(id);
        }
    }
}

pub enum HubMsg {
    Subscribe(Scope, RpcReplyPort<Subscription>),
    /// Delivers `scope`'s live events to an outlet of the caller's; the
    /// reply comes once events published after it will reach the outlet.
    Attach(Scope, Box<dyn Outlet>, RpcReplyPort<()>),
    State(Arc<Announced>),
    Progress(Arc<ProgressEvent>),
    /// From other nodes, by way of the bus.
    Bus(BusEvent),
    /// The video is gone (deleted): nothing more is kept of it.
    Forget(VideoId),
    Count(RpcReplyPort<usize>),
}

impl std::fmt::Debug for HubMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Subscribe(s, _) => write!(f, "Subscribe({s:?})"),
            Self::Attach(s, _, _) => write!(f, "Attach({s:?})"),
            Self::State(a) => write!(f, "State({} #{})", a.event.video_id, a.event.seq),
            Self::Progress(p) => write!(f, "Progress({})", p.video_id),
            Self::Bus(e) => write!(f, "Bus({e:?})"),
            Self::Forget(v) => write!(f, "Forget({v})"),
            Self::Count(_) => f.write_str("Count"),
        }
    }
}

/// The hub; it writes the latest progress of each video on `board`, and
/// follows other nodes when the bus is shared (`remote`).
#[derive(Debug, Default)]
pub struct ProgressHub {
    pub board: ProgressBoard,
    pub remote: Option<Remote>,
}

pub struct HubState {
    board: ProgressBoard,
    /// The last state seq fanned out per unfinished video: what a wake-up
    /// from the bus is compared with.
    last_seq: HashMap<VideoId, u64>,
    /// The same for the videos that finished last.
    finished: Finished,
    /// When the bus last brought anything (or the hub started), in
    /// milliseconds since the epoch: a video created after it that the hub
    /// does not know was announced while the bus was away.
    heard_ms: u64,
    listener: Option<tokio::task::JoinHandle<()>>,
    shards: Vec<Shard>,
    /// The shard the next subscriber joins.
    next_shard: usize,
}

impl std::fmt::Debug for HubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubState")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl HubState {
    /// Empty, with `shards` shards (at least one).
    fn new(board: ProgressBoard, shards: usize) -> Self {
        Self {
            board,
            last_seq: HashMap::new(),
            finished: Finished::default(),
            heard_ms: now_ms(),
            listener: None,
            shards: (0..shards.max(1)).map(|_| Shard::spawn()).collect(),
            next_shard: 0,
        }
    }

    async fn attach(&mut self, scope: Scope, outlet: Box<dyn Outlet>) -> Result<(), ShardGone> {
        self.next_shard = (self.next_shard + 1) % self.shards.len();
        self.shards[self.next_shard]
            .send(ShardMsg::Attach(scope, outlet))
            .await
    }

    async fn subscribe(&mut self, scope: Scope) -> Result<Subscription, ShardGone> {
        let (subscription, outlet) = subscription::channel();
        self.attach(scope, Box::new(outlet)).await?;
        Ok(subscription)
    }

    /// The last state seq fanned out for `video`, if the hub knows it.
    fn last(&self, video: &str) -> Option<u64> {
        self.last_seq
            .get(video)
            .copied()
            .or_else(|| self.finished.get(video))
    }

    async fn publish_state(&mut self, announced: Arc<Announced>) -> Result<(), ShardGone> {
        let event = &announced.event;
        if self
            .last(&event.video_id)
            .is_some_and(|last| event.seq <= last)
        {
            // Read twice (a wake-up raced the local announcement): sent once.
            return Ok(());
        }
        if event.state.is_terminal() {
            self.last_seq.remove(&event.video_id);
            self.finished.insert(event.video_id.clone(), event.seq);
        } else {
            self.last_seq.insert(event.video_id.clone(), event.seq);
        }
        if event.state != VideoState::Processing {
            self.board.clear(&event.video_id);
        }
        for shard in &self.shards {
            shard.send(ShardMsg::State(announced.clone())).await?;
        }
        Ok(())
    }

    async fn publish_progress(&mut self, event: Arc<ProgressEvent>) -> Result<(), ShardGone> {
        self.board.set(event.clone());
        for shard in &self.shards {
            shard.send(ShardMsg::Progress(event.clone())).await?;
        }
        Ok(())
    }

    /// Open subscribers, in every shard.
    async fn count(&self) -> Result<usize, ShardGone> {
        let mut n = 0;
        for shard in &self.shards {
            n += shard.ask(ShardMsg::Count).await?;
        }
        Ok(n)
    }

    /// Videos subscribed to one by one, in every shard.
    async fn watched_owners(&self) -> Result<Vec<String>, ShardGone> {
        let mut owners = Vec::new();
        for shard in &self.shards {
            owners.extend(shard.ask(ShardMsg::Owners).await?);
        }
        Ok(owners)
    }

    async fn watched_videos(&self) -> Result<Vec<VideoId>, ShardGone> {
        let mut videos = Vec::new();
        for shard in &self.shards {
            videos.extend(shard.ask(ShardMsg::Videos).await?);
        }
        Ok(videos)
    }
}

/// The last seq of the [`FINISHED_KEPT`] videos that finished last.
#[derive(Debug, Default)]
struct Finished {
    seq: HashMap<VideoId, u64>,
    order: VecDeque<VideoId>,
}

impl Finished {
    fn get(&self, video: &str) -> Option<u64> {
        self.seq.get(video).copied()
    }

    fn insert(&mut self, video: VideoId, seq: u64) {
        if self.seq.insert(video.clone(), seq).is_none() {
            self.order.push_back(video);
            if self.order.len() > FINISHED_KEPT {
                if let Some(oldest) = self.order.pop_front() {
                    self.seq.remove(&oldest);
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ProgressHub {
    /// A wake-up, progress or resync from another node.
    async fn heard_on_bus(
        &self,
        myself: &ActorRef<HubMsg>,
        state: &mut HubState,
        event: BusEvent,
    ) -> Result<(), ShardGone> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        if remote.is_own(&event) {
            return Ok(());
        }
        let heard_before = state.heard_ms;
        if !matches!(event, BusEvent::Resync) {
            state.heard_ms = now_ms();
        }
        match event {
            BusEvent::State { video, seq } => {
                let last = state.last(&video).unwrap_or(0);
                if seq > last {
                    remote.catch_up(myself.clone(), video, last);
                }
            }
            BusEvent::Progress { event, .. } => state.publish_progress(Arc::new(event)).await?,
            BusEvent::Resync => {
                let mut videos: Vec<(VideoId, u64)> = state
                    .last_seq
                    .iter()
                    .map(|(v, s)| (v.clone(), *s))
                    .collect();
                for id in state.watched_videos().await? {
                    if !state.last_seq.contains_key(&id) && !videos.iter().any(|(v, _)| *v == id) {
                        let after = state.finished.get(&id).unwrap_or(0);
                        videos.push((id, after));
                    }
                }
                for (video, after) in videos {
                    remote.catch_up(myself.clone(), video, after);
                }
                // An owner's stream also wants the videos created while
                // the bus was away, which the hub has never heard of.
                let owners: std::collections::BTreeSet<String> =
                    state.watched_owners().await?.into_iter().collect();
                let known: Arc<std::collections::HashSet<VideoId>> =
                    Arc::new(state.last_seq.keys().cloned().collect());
                for owner in owners {
                    remote.catch_up_owner(myself.clone(), owner, heard_before, known.clone());
                }
            }
        }
        Ok(())
    }
}

impl Actor for ProgressHub {
    type Msg = HubMsg;
    type State = HubState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<HubMsg>,
        _: (),
    ) -> Result<HubState, ActorProcessingErr> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut state = HubState::new(self.board.clone(), cores);
        state.listener = self.remote.as_ref().map(|r| r.listen(myself));
        Ok(state)
    }

    async fn post_stop(
        &self,
        _: ActorRef<HubMsg>,
        state: &mut HubState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(listener) = state.listener.take() {
            listener.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<HubMsg>,
        message: HubMsg,
        state: &mut HubState,
    ) -> Result<(), ActorProcessingErr> {
        // A shard gone is the hub broken: it is restarted, and its
        // subscribers' streams end.
        match message {
            HubMsg::Subscribe(scope, reply) => {
                let _ = reply.send(state.subscribe(scope).await?);
            }
            HubMsg::Attach(scope, outlet, reply) => {
                state.attach(scope, outlet).await?;
                let _ = reply.send(());
            }
            HubMsg::State(event) => state.publish_state(event).await?,
            HubMsg::Bus(event) => self.heard_on_bus(&myself, state, event).await?,
            HubMsg::Progress(event) => state.publish_progress(event).await?,
            HubMsg::Forget(video) => {
                state.last_seq.remove(&video);
                state.board.clear(&video);
            }
            HubMsg::Count(reply) => {
                let _ = reply.send(state.count().await?);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
