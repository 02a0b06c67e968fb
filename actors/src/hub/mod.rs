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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, Notify};

use crate::bus::BusEvent;
use crate::model::{ProgressEvent, StateEvent, Video, VideoId};
use crate::state::VideoState;

mod remote;
pub use remote::Remote;

/// State events a subscriber may have unread before it is closed as too
/// slow: far more than one video's whole life (about ten events), so only a
/// reader that has stopped reading hits it.
pub const STATE_QUEUE: usize = 256;

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

struct Subscriber {
    scope: Scope,
    state: mpsc::Sender<Arc<Announced>>,
    slot: Arc<ProgressSlot>,
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

pub enum HubMsg {
    Subscribe(Scope, RpcReplyPort<Subscription>),
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

#[derive(Default)]
pub struct HubState {
    board: ProgressBoard,
    /// The last state seq fanned out per unfinished video: what a wake-up
    /// from the bus is compared with.
    last_seq: HashMap<VideoId, u64>,
    /// When the bus last brought anything (or the hub started), in
    /// milliseconds since the epoch: a video created after it that the hub
    /// does not know was announced while the bus was away.
    heard_ms: u64,
    listener: Option<tokio::task::JoinHandle<()>>,
    next_id: u64,
    subscribers: HashMap<u64, Subscriber>,
}

impl std::fmt::Debug for HubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubState")
            .field("subscribers", &self.subscribers.len())
            .finish()
    }
}

impl HubState {
    fn subscribe(&mut self, scope: Scope) -> Subscription {
        let (tx, rx) = mpsc::channel(STATE_QUEUE);
        let slot = Arc::new(ProgressSlot::default());
        self.next_id += 1;
        self.subscribers.insert(
            self.next_id,
            Subscriber {
                scope,
                state: tx,
                slot: slot.clone(),
            },
        );
        Subscription { state: rx, slot }
    }

    fn publish_state(&mut self, announced: Arc<Announced>) {
        let event = &announced.event;
        if self
            .last_seq
            .get(&event.video_id)
            .is_some_and(|last| event.seq <= *last)
        {
            // Read twice (a wake-up raced the local announcement): sent once.
            return;
        }
        if event.state.is_terminal() {
            self.last_seq.remove(&event.video_id);
        } else {
            self.last_seq.insert(event.video_id.clone(), event.seq);
        }
        if event.state != VideoState::Processing {
            self.board.clear(&event.video_id);
        }
        let mut gone = Vec::new();
        for (id, sub) in &self.subscribers {
            if !sub.wants(announced.remote, &event.video_id, &event.owner) {
                continue;
            }
            // Progress from before this change is stale now.
            if let Ok(mut latest) = sub.slot.latest.lock() {
                latest.remove(&event.video_id);
            }
            match sub.state.try_send(announced.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if let Ok(mut reason) = sub.slot.closed.lock() {
                        *reason =
                            Some(format!("subscriber fell {STATE_QUEUE} state events behind"));
                    }
                    gone.push(*id);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*id),
            }
        }
        for id in gone {
            // Dropping the sender ends the subscriber's stream.
            if let Some(sub) = self.subscribers.remove(&id) {
                sub.slot.notify.notify_one();
            }
        }
    }

    fn publish_progress(&mut self, event: Arc<ProgressEvent>) {
        self.board.set(event.clone());
        self.subscribers.retain(|_, sub| !sub.state.is_closed());
        for sub in self.subscribers.values() {
            if sub.wants(false, &event.video_id, &event.owner) {
                if let Ok(mut latest) = sub.slot.latest.lock() {
                    latest.insert(event.video_id.clone(), event.clone());
                }
                sub.slot.notify.notify_one();
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
    fn heard_on_bus(&self, myself: &ActorRef<HubMsg>, state: &mut HubState, event: BusEvent) {
        let Some(remote) = &self.remote else { return };
        if remote.is_own(&event) {
            return;
        }
        let heard_before = state.heard_ms;
        if !matches!(event, BusEvent::Resync) {
            state.heard_ms = now_ms();
        }
        match event {
            BusEvent::State { video, seq } => {
                let last = state.last_seq.get(&video).copied().unwrap_or(0);
                if seq > last {
                    remote.catch_up(myself.clone(), video, last);
                }
            }
            BusEvent::Progress { event, .. } => state.publish_progress(Arc::new(event)),
            BusEvent::Resync => {
                let mut videos: Vec<(VideoId, u64)> = state
                    .last_seq
                    .iter()
                    .map(|(v, s)| (v.clone(), *s))
                    .collect();
                for sub in state.subscribers.values() {
                    if let Scope::Video(id) = &sub.scope {
                        if !state.last_seq.contains_key(id) {
                            videos.push((id.clone(), 0));
                        }
                    }
                }
                for (video, after) in videos {
                    remote.catch_up(myself.clone(), video, after);
                }
                // An owner's stream also wants the videos created while
                // the bus was away, which the hub has never heard of.
                let owners: std::collections::BTreeSet<String> = state
                    .subscribers
                    .values()
                    .filter_map(|sub| match &sub.scope {
                        Scope::Owner(owner) => Some(owner.clone()),
                        _ => None,
                    })
                    .collect();
                let known: Arc<std::collections::HashSet<VideoId>> =
                    Arc::new(state.last_seq.keys().cloned().collect());
                for owner in owners {
                    remote.catch_up_owner(myself.clone(), owner, heard_before, known.clone());
                }
            }
        }
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
        Ok(HubState {
            board: self.board.clone(),
            heard_ms: now_ms(),
            listener: self.remote.as_ref().map(|r| r.listen(myself)),
            ..HubState::default()
        })
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
        match message {
            HubMsg::Subscribe(scope, reply) => {
                let _ = reply.send(state.subscribe(scope));
            }
            HubMsg::State(event) => state.publish_state(event),
            HubMsg::Bus(event) => self.heard_on_bus(&myself, state, event),
            HubMsg::Progress(event) => state.publish_progress(event),
            HubMsg::Forget(video) => {
                state.last_seq.remove(&video);
                state.board.clear(&video);
            }
            HubMsg::Count(reply) => {
                state.subscribers.retain(|_, s| !s.state.is_closed());
                let _ = reply.send(state.subscribers.len());
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

    #[tokio::test]
    async fn progress_coalesces_but_state_events_all_arrive() {
        let mut hub = HubState::default();
        let mut sub = hub.subscribe(Scope::Owner("alice".into()));
        for p in [10.0, 20.0, 30.0] {
            hub.publish_progress(progress("v1", p));
        }
        hub.publish_state(state("v2", "alice", 1));
        hub.publish_state(state("v2", "alice", 2));
        hub.publish_state(state("v3", "bob", 1));
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
        let mut hub = HubState::default();
        let mut stuck = hub.subscribe(Scope::Video("v1".into()));
        let mut other = hub.subscribe(Scope::Video("v1".into()));
        for seq in 0..STATE_QUEUE as u64 + 1 {
            hub.publish_state(state("v1", "alice", seq));
            if let Some(HubMessage::State(a)) = other.next().await {
                assert_eq!(a.event.seq, seq);
            }
        }
        assert_eq!(hub.subscribers.len(), 1, "only the stuck one was dropped");
        let mut drained = 0;
        while stuck.next().await.is_some() {
            drained += 1;
        }
        assert_eq!(drained, STATE_QUEUE);
        assert!(stuck.close_reason().is_some_and(|r| r.contains("behind")));
    }
}
