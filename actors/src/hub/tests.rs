//! The hub's tests: fan-out, coalescing, slow subscribers, shards, the
//! log read again, and following other nodes through the bus.

use std::sync::Mutex;

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
