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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, Notify};

use crate::bus::BusEvent;
use crate::model::{ProgressEvent, StateEvent, Video, VideoId};
use crate::state::VideoState;

mod remote;
mod shard;
pub use remote::Remote;
pub use shard::ShardGone;
use shard::{Shard, ShardMsg};

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
struct ChannelOutlet {
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
        let (tx, rx) = mpsc::channel(STATE_QUEUE);
        let slot = Arc::new(ProgressSlot::default());
        let outlet = ChannelOutlet {
            state: tx,
            slot: slot.clone(),
        };
        self.attach(scope, Box::new(outlet)).await?;
        Ok(Subscription { state: rx, slot })
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
mod tests {
    use super::*;
    use crate::model::Outputs;
    use crate::state::VideoState;

    fn state(video: &str, owner: &str, seq: u64) -> Arc<Announced> {
        let event = StateEvent {
            video_id: video.into(),
            owner: owner.into(),
            seq,
            state: VideoState::Processing,
            stage: None,
            error: None,
            outputs: Outputs::default(),
        };
        let video = Video {
            id: video.into(),
            owner: owner.into(),
            filename: "f".into(),
            state: VideoState::Processing,
            stage: None,
            attempts: 1,
            options: crate::model::Options::default(),
            source: None,
            outputs: Outputs::default(),
            error: None,
            crashes: 0,
            last_seq: seq,
            created_at: String::new(),
            updated_at: String::new(),
        };
        Arc::new(Announced {
            event,
            video: Arc::new(video),
            remote: false,
        })
    }

    fn progress(video: &str, percent: f64) -> Arc<ProgressEvent> {
        Arc::new(ProgressEvent {
            video_id: video.into(),
            owner: "alice".into(),
            seq: 1,
            state: VideoState::Processing,
            stage: None,
            percent,
            speed: 1.0,
            eta_seconds: None,
        })
    }

    fn hub() -> HubState {
        HubState::new(ProgressBoard::default(), 2)
    }

    #[tokio::test]
    async fn progress_coalesces_but_state_events_all_arrive() {
        let mut hub = hub();
        let mut sub = hub
            .subscribe(Scope::Owner("alice".into()))
            .await
            .expect("sub");
        for p in [10.0, 20.0, 30.0] {
            hub.publish_progress(progress("v1", p))
                .await
                .expect("progress");
        }
        hub.publish_state(state("v2", "alice", 1))
            .await
            .expect("state");
        hub.publish_state(state("v2", "alice", 2))
            .await
            .expect("state");
        hub.publish_state(state("v3", "bob", 1))
            .await
            .expect("state");
        // Every shard has handled what came before the count.
        assert_eq!(hub.count().await.expect("count"), 1);
        assert_eq!(
            sub.next().await,
            Some(HubMessage::State(state("v2", "alice", 1)))
        );
        assert_eq!(
            sub.next().await,
            Some(HubMessage::State(state("v2", "alice", 2)))
        );
        assert_eq!(
            sub.next().await,
            Some(HubMessage::Progress(progress("v1", 30.0)))
        );
    }

    /// Videos another node created while the bus was away reach an
    /// owner's stream at the resync; older videos are not replayed.
    #[tokio::test]
    async fn a_resync_brings_an_owner_the_videos_created_while_the_bus_was_away() {
        use crate::catalog::{Catalog, NewVideo, SqliteCatalog};
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog: Arc<dyn Catalog> =
            Arc::new(SqliteCatalog::open(&dir.path().join("db.sqlite")).expect("catalog"));
        let insert = |id: String| {
            let catalog = catalog.clone();
            async move {
                catalog
                    .insert(NewVideo {
                        id,
                        owner: "alice".into(),
                        filename: "f".into(),
                        options: crate::model::Options::default(),
                        state: VideoState::Queued,
                        source_bytes: 1,
                    })
                    .await
                    .expect("insert");
            }
        };
        // Created a minute before the hub started: its events are old.
        let old = ulid::Ulid::from_parts(now_ms() - 60_000, 1).to_string();
        insert(old.clone()).await;
        let hub = ProgressHub {
            board: ProgressBoard::default(),
            remote: Some(Remote {
                catalog: catalog.clone(),
                bus: Arc::new(crate::bus::LocalBus::default()),
                node: "b".into(),
            }),
        };
        let (hub, _) = Actor::spawn(None, hub, ()).await.expect("hub");
        let mut sub =
            ractor::call!(hub, HubMsg::Subscribe, Scope::Owner("alice".into())).expect("subscribe");
        // Another node creates a video; its wake-up never comes.
        let new = crate::model::new_id();
        insert(new.clone()).await;
        hub.cast(HubMsg::Bus(BusEvent::Resync)).expect("resync");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
            .await
            .expect("an event")
            .expect("open");
        match got {
            HubMessage::State(a) => {
                assert_eq!((a.event.video_id.as_str(), a.event.seq), (new.as_str(), 1));
                assert!(a.remote);
            }
            other => panic!("{other:?}"),
        }
        let more = tokio::time::timeout(std::time::Duration::from_millis(300), sub.next()).await;
        assert!(more.is_err(), "the old video is not replayed: {more:?}");
        hub.stop(None);
    }

    #[tokio::test]
    async fn a_subscriber_that_stops_reading_is_closed_with_a_reason() {
        let mut hub = hub();
        let mut stuck = hub.subscribe(Scope::Video("v1".into())).await.expect("sub");
        let mut other = hub.subscribe(Scope::Video("v1".into())).await.expect("sub");
        for seq in 0..STATE_QUEUE as u64 + 1 {
            hub.publish_state(state("v1", "alice", seq))
                .await
                .expect("state");
            if let Some(HubMessage::State(a)) = other.next().await {
                assert_eq!(a.event.seq, seq);
            }
        }
        assert_eq!(
            hub.count().await.expect("count"),
            1,
            "only the stuck one was dropped"
        );
        let mut drained = 0;
        while stuck.next().await.is_some() {
            drained += 1;
        }
        assert_eq!(drained, STATE_QUEUE);
        assert!(stuck.close_reason().is_some_and(|r| r.contains("behind")));
    }

    /// An outlet that writes down what it is given, and can stop.
    #[derive(Clone, Default)]
    struct Recorder {
        got: Arc<Mutex<Vec<(VideoId, u64)>>>,
        refuse_after: Option<usize>,
    }

    impl Outlet for Recorder {
        fn state(&self, a: &Arc<Announced>) -> bool {
            let Ok(mut got) = self.got.lock() else {
                return false;
            };
            if self.refuse_after.is_some_and(|n| got.len() >= n) {
                return false;
            }
            got.push((a.event.video_id.clone(), a.event.seq));
            true
        }
        fn progress(&self, _: &Arc<ProgressEvent>) -> bool {
            true
        }
        fn is_open(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn every_subscriber_of_every_shard_gets_its_events_in_order() {
        let mut hub = HubState::new(ProgressBoard::default(), 3);
        let mut outlets = Vec::new();
        for i in 0..30 {
            let outlet = Recorder {
                refuse_after: (i == 7).then_some(2),
                ..Recorder::default()
            };
            let scope = match i % 3 {
                0 => Scope::Owner("alice".into()),
                1 => Scope::Video("v1".into()),
                _ => Scope::Video("v2".into()),
            };
            hub.attach(scope, Box::new(outlet.clone()))
                .await
                .expect("attach");
            outlets.push(outlet);
        }
        for seq in 1..=5 {
            for v in ["v1", "v2"] {
                hub.publish_state(state(v, "alice", seq))
                    .await
                    .expect("state");
            }
        }
        // Read twice (a remote wake-up): sent once.
        hub.publish_state(state("v1", "alice", 3))
            .await
            .expect("state");
        assert_eq!(hub.count().await.expect("count"), 29, "one stopped");
        for (i, outlet) in outlets.iter().enumerate() {
            let got = outlet.got.lock().expect("lock").clone();
            let wanted: Vec<(VideoId, u64)> = (1..=5)
                .flat_map(|seq| ["v1", "v2"].map(|v| (v.to_string(), seq)))
                .filter(|(v, _)| match i % 3 {
                    0 => true,
                    1 => v == "v1",
                    _ => v == "v2",
                })
                .take(if i == 7 { 2 } else { usize::MAX })
                .collect();
            assert_eq!(got, wanted, "subscriber {i}");
        }
        assert_eq!(
            hub.watched_videos().await.expect("videos").len(),
            19,
            "the one-video subscribers still open"
        );
    }

    #[tokio::test]
    async fn the_log_read_again_after_the_end_is_not_fanned_out_twice() {
        let mut hub = hub();
        let outlet = Recorder::default();
        hub.attach(Scope::All, Box::new(outlet.clone()))
            .await
            .expect("attach");
        let ready = |seq| {
            let mut a = (*state("v1", "alice", seq)).clone();
            a.event.state = VideoState::Ready;
            Arc::new(a)
        };
        hub.publish_state(state("v1", "alice", 1)).await.expect("1");
        hub.publish_state(state("v1", "alice", 2)).await.expect("2");
        hub.publish_state(ready(3)).await.expect("3");
        // Another node's wake-up read the whole log after the end.
        for a in [state("v1", "alice", 1), state("v1", "alice", 2), ready(3)] {
            hub.publish_state(a).await.expect("again");
        }
        hub.count().await.expect("count");
        let got = outlet.got.lock().expect("lock").clone();
        assert_eq!(got, [1, 2, 3].map(|seq| ("v1".to_string(), seq)));
        assert_eq!(hub.last("v1"), Some(3));
        for i in 0..FINISHED_KEPT {
            hub.finished.insert(format!("other-{i}"), 1);
        }
        assert_eq!(hub.last("v1"), None, "only the last ones are kept");
    }

    #[tokio::test]
    async fn stopping_the_hub_ends_every_stream() {
        let mut hub = hub();
        let mut a = hub.subscribe(Scope::All).await.expect("sub");
        let mut b = hub.subscribe(Scope::All).await.expect("sub");
        hub.publish_state(state("v1", "alice", 1))
            .await
            .expect("state");
        drop(hub);
        assert!(matches!(a.next().await, Some(HubMessage::State(_))));
        assert_eq!(a.next().await, None);
        assert!(matches!(b.next().await, Some(HubMessage::State(_))));
        assert_eq!(b.next().await, None);
    }
}
