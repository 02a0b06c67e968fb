//! The ports' conformance suite: the same tests run against every
//! implementation of [`Catalog`], [`JobLeases`] and [`EventBus`]: SQLite
//! with the in-process bus always, and PostgreSQL 15 (a real server
//! started by the test setup, two nodes on one database) with the
//! `postgres` feature. Each test gets a fresh catalog.

#[cfg(feature = "postgres")]
#[path = "common/pg.rs"]
mod pg;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vidmill_actors::bus::BusSubscription;
use vidmill_actors::catalog::{Artefact, Change, NewVideo, CHANNELS};
use vidmill_actors::*;

/// A catalog with its leases, as one node sees it.
trait Shared: Catalog + JobLeases {}
impl<T: Catalog + JobLeases> Shared for T {}

/// Two nodes sharing one catalog and one bus.
struct Backend {
    a: Arc<dyn Shared>,
    b: Arc<dyn Shared>,
    bus_a: Arc<dyn EventBus>,
    bus_b: Arc<dyn EventBus>,
    #[cfg(feature = "postgres")]
    db: Option<pg::TestDb>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Arc::new(SqliteCatalog::open(&dir.path().join("c.sqlite")).expect("open"));
    let bus = Arc::new(LocalBus::default());
    Backend {
        a: catalog.clone(),
        b: catalog,
        bus_a: bus.clone(),
        bus_b: bus,
        #[cfg(feature = "postgres")]
        db: None,
        _dir: Some(dir),
    }
}

#[cfg(feature = "postgres")]
async fn postgres() -> Backend {
    use vidmill_actors::catalog::{PgBus, PgCatalog};
    let db = pg::TestDb::new().await;
    let a = PgCatalog::connect(&db.url, "node-a").await.expect("node a");
    let b = PgCatalog::connect(&db.url, "node-b").await.expect("node b");
    let bus_a = PgBus::connect(&db.url, "node-a").await.expect("bus a");
    let bus_b = PgBus::connect(&db.url, "node-b").await.expect("bus b");
    Backend {
        a: Arc::new(a),
        b: Arc::new(b),
        bus_a: Arc::new(bus_a),
        bus_b: Arc::new(bus_b),
        db: Some(db),
        _dir: None,
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::sqlite().await).await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::postgres().await).await;
                }
            )*
        }
    };
}

conformance!(
    every_visible_change_is_one_event_without_gaps,
    concurrent_changes_from_two_nodes_keep_seq_gapless,
    terminal_changes_write_one_outbox_row_per_channel,
    listing_pages_newest_first_and_isolates_owners,
    jobs_are_created_by_queued_and_removed_by_terminal_or_delete,
    claims_follow_the_fair_order,
    concurrent_claimers_never_get_the_same_job,
    an_expired_lease_is_taken_over_by_another_node,
    renewing_an_expired_lease_fails_lease_lost,
    a_fenced_change_after_the_lease_was_lost_changes_nothing,
    release_and_release_node_put_jobs_back,
    usage_counts_sources_outputs_and_open_uploads,
    artefacts_are_recorded_until_forgotten,
    the_bus_delivers_to_every_node,
);

/// How long a condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// Polls `check` until it returns `Some`.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn video(owner: &str, state: VideoState) -> NewVideo {
    NewVideo {
        id: new_id(),
        owner: owner.into(),
        filename: "a.mov".into(),
        options: Options::default(),
        state,
        source_bytes: 0,
    }
}

fn state(s: VideoState) -> Change {
    Change {
        state: Some(s),
        ..Change::default()
    }
}

fn mp4(size_bytes: u64) -> Outputs {
    Outputs {
        mp4: Some(Mp4Output {
            size_bytes,
            duration: Some(1.0),
            width: 2,
            height: 2,
            method: "remux".into(),
        }),
        ..Outputs::default()
    }
}

async fn waiting(c: &dyn Shared) -> Vec<VideoId> {
    let queue = c.queue().await.expect("queue");
    queue.waiting.into_iter().map(|(_, v)| v).collect()
}

const TTL: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_millis(300);

async fn every_visible_change_is_one_event_without_gaps(be: Backend) {
    let c = &be.a;
    let (v, first) = c
        .insert(video("alice", VideoState::Queued))
        .await
        .expect("insert");
    assert_eq!((first.seq, v.last_seq), (1, 1));
    let (_, e2) = c
        .apply(
            &v.id,
            Change {
                state: Some(VideoState::Processing),
                stage: Some(Some(Stage::Probing)),
                in_flight: Some(true),
                ..Change::default()
            },
        )
        .await
        .expect("apply");
    let (_, silent) = c
        .apply(
            &v.id,
            Change {
                in_flight: Some(true),
                ..Change::default()
            },
        )
        .await
        .expect("apply");
    assert!(silent.is_none(), "no visible change, no event");
    let (after, e3) = c
        .apply(
            &v.id,
            Change {
                outputs: Some(mp4(1)),
                ..Change::default()
            },
        )
        .await
        .expect("apply");
    assert_eq!(after.outputs, mp4(1));
    assert_eq!(after.last_seq, 3);
    assert_eq!((e2.map(|e| e.seq), e3.map(|e| e.seq)), (Some(2), Some(3)));
    let replay = be.b.events_after(&v.id, 1).await.expect("events");
    assert_eq!(replay.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(replay[0].stage, Some(Stage::Probing));
    assert_eq!(replay[1].outputs, mp4(1));
    let read = be.b.get(&v.id).await.expect("get").expect("video");
    assert_eq!(read.state, VideoState::Processing);
    assert_eq!(read.created_at.len(), "2024-01-01T00:00:00.000Z".len());
    assert!(read.created_at.ends_with('Z'), "{}", read.created_at);
}

async fn concurrent_changes_from_two_nodes_keep_seq_gapless(be: Backend) {
    let (v, _) =
        be.a.insert(video("alice", VideoState::Queued))
            .await
            .expect("insert");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 {
            be.a.clone()
        } else {
            be.b.clone()
        };
        let id = v.id.clone();
        tasks.push(tokio::spawn(async move {
            let change = Change {
                error: Some(Some(VideoError::new("x", format!("change {i}")))),
                ..Change::default()
            };
            node.apply(&id, change)
                .await
                .expect("apply")
                .1
                .expect("event")
                .seq
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("task"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=21).collect::<Vec<u64>>());
    let log = be.a.events_after(&v.id, 0).await.expect("events");
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=21).collect::<Vec<u64>>()
    );
    assert_eq!(be.b.get(&v.id).await.expect("get").expect("v").last_seq, 21);
}

async fn terminal_changes_write_one_outbox_row_per_channel(be: Backend) {
    let c = &be.a;
    let (v, _) = c
        .insert(video("alice", VideoState::Queued))
        .await
        .expect("insert");
    c.apply(&v.id, state(VideoState::Processing))
        .await
        .expect("processing");
    assert!(c
        .pending_notifications(10)
        .await
        .expect("pending")
        .is_empty());
    let (_, event) = c
        .apply(
            &v.id,
            Change {
                state: Some(VideoState::Ready),
                outputs: Some(mp4(5)),
                ..Change::default()
            },
        )
        .await
        .expect("ready");
    let event = event.expect("event");
    let pending = be.b.pending_notifications(10).await.expect("pending");
    assert_eq!(pending.len(), CHANNELS.len());
    let channels: HashSet<_> = pending.iter().map(|p| p.channel.as_str()).collect();
    assert_eq!(channels, CHANNELS.into_iter().collect());
    for p in &pending {
        assert_eq!(
            (p.kind.as_str(), p.seq, p.attempts),
            ("video.ready", event.seq, 0)
        );
        assert_eq!(p.event, event);
        assert!(p.wait_seconds <= 0.001 && p.age_seconds >= 0.0, "{p:?}");
    }
    let newest = c
        .newest_playable()
        .await
        .expect("newest")
        .expect("playable");
    assert_eq!(newest.id, v.id);
    c.notification_failed(pending[0].id, 60)
        .await
        .expect("failed");
    c.notification_delivered(pending[1].id)
        .await
        .expect("delivered");
    let left = c.pending_notifications(10).await.expect("pending");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].attempts, 1);
    assert!(left[0].wait_seconds > 50.0, "{:?}", left[0]);
    c.drop_notification(left[0].id).await.expect("drop");
    assert!(c
        .pending_notifications(10)
        .await
        .expect("pending")
        .is_empty());
    assert_eq!(c.purge_delivered(1).await.expect("purge"), 0);
    c.set_contact("alice", "a@example.org").await.expect("set");
    c.set_contact("alice", "a@example.org")
        .await
        .expect("again");
    assert_eq!(
        be.b.contact("alice").await.expect("contact").as_deref(),
        Some("a@example.org")
    );
    assert_eq!(c.contact("bob").await.expect("contact"), None);
}

async fn listing_pages_newest_first_and_isolates_owners(be: Backend) {
    let c = &be.a;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            c.insert(video("alice", VideoState::Queued))
                .await
                .expect("insert")
                .0
                .id,
        );
    }
    c.insert(video("bob", VideoState::Queued))
        .await
        .expect("insert");
    let first = c.list("alice", None, 2, None).await.expect("list");
    let page_ids = |p: &catalog::Page| p.videos.iter().map(|v| v.id.clone()).collect::<Vec<_>>();
    assert_eq!(page_ids(&first), [ids[4].clone(), ids[3].clone()]);
    let second = c
        .list("alice", None, 2, first.next_cursor)
        .await
        .expect("list");
    assert_eq!(page_ids(&second), [ids[2].clone(), ids[1].clone()]);
    let third = c
        .list("alice", None, 2, second.next_cursor)
        .await
        .expect("list");
    assert_eq!(page_ids(&third), [ids[0].clone()]);
    assert!(third.next_cursor.is_none());
    assert!(c.get_owned("bob", &ids[0]).await.expect("get").is_none());
    assert!(c.get_owned("alice", &ids[0]).await.expect("get").is_some());
    assert!(c
        .list("alice", Some(VideoState::Ready), 10, None)
        .await
        .expect("list")
        .videos
        .is_empty());
    assert_eq!(
        c.list("alice", Some(VideoState::Queued), 10, None)
            .await
            .expect("list")
            .videos
            .len(),
        5
    );
    let counts = c.count_by_state().await.expect("count");
    assert_eq!(counts, vec![(VideoState::Queued, 6)]);
    assert_eq!(c.unfinished().await.expect("unfinished").len(), 6);
}

async fn jobs_are_created_by_queued_and_removed_by_terminal_or_delete(be: Backend) {
    let c = &be.a;
    let (queued, _) = c
        .insert(video("alice", VideoState::Queued))
        .await
        .expect("insert");
    let (uploading, _) = c
        .insert(video("alice", VideoState::Uploading))
        .await
        .expect("insert");
    assert_eq!(waiting(&**c).await, [queued.id.as_str()]);
    c.apply(&uploading.id, state(VideoState::Queued))
        .await
        .expect("queued");
    assert_eq!(
        waiting(&*be.b).await,
        [queued.id.clone(), uploading.id.clone()]
    );
    c.apply(&queued.id, state(VideoState::Failed))
        .await
        .expect("failed");
    assert_eq!(waiting(&**c).await, [uploading.id.as_str()]);
    assert!(c.delete(&uploading.id).await.expect("delete"));
    assert!(!c.delete(&uploading.id).await.expect("again"));
    assert!(waiting(&**c).await.is_empty());
    assert!(c.get(&uploading.id).await.expect("get").is_none());
    assert!(c
        .events_after(&uploading.id, 0)
        .await
        .expect("events")
        .is_empty());
    // A retry queues the failed video again.
    c.apply(&queued.id, state(VideoState::Queued))
        .await
        .expect("retry");
    assert_eq!(waiting(&**c).await, [queued.id.as_str()]);
}

async fn claims_follow_the_fair_order(be: Backend) {
    let mut ids = std::collections::HashMap::new();
    for name in ["a1", "a2", "a3", "b1", "b2", "c1"] {
        let owner = match &name[..1] {
            "a" => "alice",
            "b" => "bob",
            _ => "carol",
        };
        let (v, _) =
            be.a.insert(video(owner, VideoState::Queued))
                .await
                .expect("insert");
        ids.insert(v.id, name);
    }
    let mut order = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &be.a } else { &be.b };
        let lease = node
            .claim(&format!("node-{}", i % 2), TTL)
            .await
            .expect("claim")
            .expect("a job");
        assert!(!lease.taken_over);
        order.push(ids[&lease.video]);
        tokens.push(lease.token);
    }
    assert_eq!(order, ["a1", "b1", "c1", "a2", "b2", "a3"]);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert!(be.a.claim("node-0", TTL).await.expect("claim").is_none());
    let queue = be.b.queue().await.expect("queue");
    assert!(queue.waiting.is_empty());
    assert_eq!(queue.running.get("alice"), Some(&3));
    assert_eq!(queue.running.get("bob"), Some(&2));
    assert_eq!(queue.served.len(), 3);
    assert!(queue.served["carol"] < queue.served["alice"]);
}

async fn concurrent_claimers_never_get_the_same_job(be: Backend) {
    const JOBS: usize = 12;
    for i in 0..JOBS {
        be.a.insert(video(&format!("owner{}", i % 3), VideoState::Queued))
            .await
            .expect("insert");
    }
    let mut tasks = Vec::new();
    for i in 0..JOBS * 2 {
        let node = if i % 2 == 0 {
            be.a.clone()
        } else {
            be.b.clone()
        };
        tasks.push(tokio::spawn(async move {
            node.claim(&format!("node-{i}"), TTL).await.expect("claim")
        }));
    }
    let mut leases = Vec::new();
    for t in tasks {
        leases.extend(t.await.expect("task"));
    }
    assert_eq!(leases.len(), JOBS, "every job once, no more");
    let videos: HashSet<_> = leases.iter().map(|l| l.video.clone()).collect();
    let tokens: HashSet<_> = leases.iter().map(|l| l.token).collect();
    assert_eq!((videos.len(), tokens.len()), (JOBS, JOBS));
}

async fn an_expired_lease_is_taken_over_by_another_node(be: Backend) {
    let (v, _) =
        be.a.insert(video("alice", VideoState::Queued))
            .await
            .expect("insert");
    let first =
        be.a.claim("node-a", SHORT)
            .await
            .expect("claim")
            .expect("job");
    assert_eq!(first.video, v.id);
    assert!(be.b.claim("node-b", SHORT).await.expect("claim").is_none());
    let b = be.b.clone();
    let second = wait_for("the lease to expire", || {
        let b = b.clone();
        async move { b.claim("node-b", TTL).await.expect("claim") }
    })
    .await;
    assert_eq!(second.video, v.id);
    assert!(second.taken_over, "the first node's lease had expired");
    assert!(second.token > first.token);
    let lost = be.a.renew(&first, TTL, None).await.expect_err("lost");
    assert!(
        matches!(lost, CoreError::LeaseLost(ref id) if *id == v.id),
        "{lost}"
    );
    be.b.renew(&second, TTL, None)
        .await
        .expect("the new holder renews");
}

async fn renewing_an_expired_lease_fails_lease_lost(be: Backend) {
    let (v, _) =
        be.a.insert(video("alice", VideoState::Queued))
            .await
            .expect("insert");
    let lease =
        be.a.claim("node-a", SHORT)
            .await
            .expect("claim")
            .expect("job");
    let progress = LeasedProgress {
        percent: 42.0,
        speed: 1.5,
        eta_seconds: Some(3.0),
    };
    be.a.renew(&lease, SHORT, Some(progress))
        .await
        .expect("renew in time");
    assert_eq!(
        be.b.progress(&v.id).await.expect("progress"),
        Some(progress)
    );
    be.a.renew(&lease, SHORT, None)
        .await
        .expect("renew keeps progress");
    assert_eq!(
        be.b.progress(&v.id).await.expect("progress"),
        Some(progress)
    );
    let c = be.a.clone();
    wait_for("the lease to expire", || {
        let c = c.clone();
        async move { (waiting(&*c).await.len() == 1).then_some(()) }
    })
    .await;
    let lost = be.a.renew(&lease, TTL, None).await.expect_err("expired");
    assert!(matches!(lost, CoreError::LeaseLost(_)), "{lost}");
    assert_eq!(be.a.progress(&v.id).await.expect("progress"), None);
}

async fn a_fenced_change_after_the_lease_was_lost_changes_nothing(be: Backend) {
    let (v, _) =
        be.a.insert(video("alice", VideoState::Queued))
            .await
            .expect("insert");
    let lease =
        be.a.claim("node-a", SHORT)
            .await
            .expect("claim")
            .expect("job");
    let (started, _) =
        be.a.apply(
            &v.id,
            Change {
                state: Some(VideoState::Processing),
                fence: Some(lease.token),
                in_flight: Some(true),
                ..Change::default()
            },
        )
        .await
        .expect("a fenced change while held");
    let b = be.b.clone();
    let taker = wait_for("another node to take the video", || {
        let b = b.clone();
        async move { b.claim("node-b", TTL).await.expect("claim") }
    })
    .await;
    let lost =
        be.a.apply(
            &v.id,
            Change {
                state: Some(VideoState::Ready),
                outputs: Some(mp4(9)),
                fence: Some(lease.token),
                ..Change::default()
            },
        )
        .await
        .expect_err("fenced out");
    assert!(matches!(lost, CoreError::LeaseLost(_)), "{lost}");
    let now = be.b.get(&v.id).await.expect("get").expect("video");
    assert_eq!(now, started, "nothing changed");
    assert_eq!(
        be.b.events_after(&v.id, 0).await.expect("events").len() as u64,
        started.last_seq
    );
    assert!(be.b.pending_notifications(10).await.expect("p").is_empty());
    let (done, _) =
        be.b.apply(
            &v.id,
            Change {
                state: Some(VideoState::Ready),
                outputs: Some(mp4(9)),
                fence: Some(taker.token),
                ..Change::default()
            },
        )
        .await
        .expect("the holder publishes");
    assert_eq!(done.state, VideoState::Ready);
    assert!(waiting(&*be.a).await.is_empty());
    assert!(be.a.queue().await.expect("queue").running.is_empty());
}

async fn release_and_release_node_put_jobs_back(be: Backend) {
    for _ in 0..3 {
        be.a.insert(video("alice", VideoState::Queued))
            .await
            .expect("insert");
    }
    let l1 = be.a.claim("n1", TTL).await.expect("claim").expect("job");
    let _l2 = be.a.claim("n1", TTL).await.expect("claim").expect("job");
    let _l3 = be.b.claim("n2", TTL).await.expect("claim").expect("job");
    be.a.release(&l1).await.expect("release");
    assert_eq!(waiting(&*be.b).await, [l1.video.as_str()]);
    let again = be.b.claim("n2", TTL).await.expect("claim").expect("job");
    assert_eq!(again.video, l1.video);
    assert!(again.token > l1.token);
    be.a.release(&l1)
        .await
        .expect("a stale release is no error");
    assert!(waiting(&*be.a).await.is_empty(), "and does nothing");
    assert_eq!(be.a.release_node("n1").await.expect("release node"), 1);
    assert_eq!(waiting(&*be.a).await.len(), 1);
    assert_eq!(
        be.a.queue().await.expect("q").running.get("alice"),
        Some(&2)
    );
    assert_eq!(be.b.release_node("n1").await.expect("again"), 0);
}

async fn usage_counts_sources_outputs_and_open_uploads(be: Backend) {
    let c = &be.a;
    let mut upload = video("alice", VideoState::Uploading);
    upload.source_bytes = 100;
    c.insert(upload.clone()).await.expect("upload");
    let mut done = video("alice", VideoState::Queued);
    done.source_bytes = 40;
    c.insert(done.clone()).await.expect("done");
    let mut other = video("bob", VideoState::Queued);
    other.source_bytes = 7;
    c.insert(other).await.expect("bob");
    c.apply(
        &done.id,
        Change {
            outputs: Some(mp4(5)),
            ..Change::default()
        },
    )
    .await
    .expect("output");
    let usage = be.b.usage("alice").await.expect("usage");
    assert_eq!(
        usage,
        catalog::Usage {
            stored_bytes: 145,
            uploaded_last_day: 140,
            open_uploads: 1,
        }
    );
    c.delete(&upload.id).await.expect("delete");
    let usage = c.usage("alice").await.expect("usage");
    assert_eq!(usage.stored_bytes, 45, "a deleted video stores nothing");
    assert_eq!(usage.uploaded_last_day, 140, "but counts for the day");
    assert_eq!(usage.open_uploads, 0);
    c.charge_upload(&done.id, "alice", 60)
        .await
        .expect("charge");
    assert_eq!(c.usage("alice").await.expect("usage").stored_bytes, 65);
}

async fn artefacts_are_recorded_until_forgotten(be: Backend) {
    let c = &be.a;
    let a = Artefact {
        location: "/tmp/x".into(),
        kind: "temp".into(),
        video_id: None,
    };
    c.record_artefact(a.clone()).await.expect("record");
    c.record_artefact(a.clone()).await.expect("record twice");
    assert_eq!(c.artefacts().await.expect("list"), vec![a]);
    c.forget_artefact("/tmp/x").await.expect("forget");
    assert!(c.artefacts().await.expect("list").is_empty());
    let (v, _) = c
        .insert(video("alice", VideoState::Queued))
        .await
        .expect("insert");
    c.apply(
        &v.id,
        Change {
            in_flight: Some(true),
            ..Change::default()
        },
    )
    .await
    .expect("in flight");
    assert_eq!(c.clear_interrupted_runs().await.expect("clear"), 1);
    assert_eq!(c.clear_interrupted_runs().await.expect("clear"), 0);
    assert_eq!(c.add_crash(&v.id).await.expect("crash"), 1);
    assert_eq!(c.add_crash(&v.id).await.expect("crash"), 2);
    c.reset_crashes(&v.id).await.expect("reset");
    assert_eq!(c.get(&v.id).await.expect("get").expect("v").crashes, 0);
    c.check(Duration::from_secs(5)).await.expect("check");
}

/// The next event that is not a resync.
async fn next_event(sub: &mut BusSubscription) -> BusEvent {
    loop {
        let event = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .expect("an event in time")
            .expect("the bus is open");
        if event != BusEvent::Resync {
            return event;
        }
    }
}

async fn the_bus_delivers_to_every_node(be: Backend) {
    let mut on_a = be.bus_a.subscribe();
    let mut on_b = be.bus_b.subscribe();
    let wake = BusEvent::State {
        video: new_id(),
        seq: 7,
    };
    be.bus_a.publish(wake.clone()).await.expect("publish");
    assert_eq!(next_event(&mut on_a).await, wake);
    assert_eq!(next_event(&mut on_b).await, wake);
    let progress = BusEvent::Progress {
        node: "b".into(),
        event: ProgressEvent {
            video_id: new_id(),
            owner: "alice".into(),
            seq: 3,
            state: VideoState::Processing,
            stage: Some(Stage::Converting),
            percent: 12.5,
            speed: 2.0,
            eta_seconds: Some(4.0),
        },
    };
    be.bus_b.publish(progress.clone()).await.expect("publish");
    assert_eq!(next_event(&mut on_a).await, progress);
    assert_eq!(next_event(&mut on_b).await, progress);
}

/// What only PostgreSQL has: several processes, a server to lose.
#[cfg(feature = "postgres")]
mod postgres_only {
    use super::*;
    use vidmill_actors::catalog::{PgBus, PgCatalog};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_notification_goes_out_from_the_one_node_that_claimed_it() {
        let be = postgres().await;
        let (v, _) =
            be.a.insert(video("alice", VideoState::Queued))
                .await
                .expect("insert");
        be.a.apply(&v.id, state(VideoState::Ready))
            .await
            .expect("ready");
        let on_a = be.a.pending_notifications(10).await.expect("a");
        assert_eq!(on_a.len(), CHANNELS.len());
        assert!(
            be.b.pending_notifications(10).await.expect("b").is_empty(),
            "claimed by node a"
        );
        assert_eq!(
            be.a.pending_notifications(10).await.expect("a again").len(),
            CHANNELS.len(),
            "a node sees its own claims"
        );
        // A failed attempt gives the row up: any node may retry it.
        be.a.notification_failed(on_a[0].id, 0)
            .await
            .expect("failed");
        let on_b = be.b.pending_notifications(10).await.expect("b");
        assert_eq!(on_b.len(), 1);
        assert_eq!(on_b[0].id, on_a[0].id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bus_resyncs_after_its_listener_is_killed() {
        let be = postgres().await;
        let db = be.db.as_ref().expect("postgres");
        let mut on_a = be.bus_a.subscribe();
        assert_eq!(db.terminate("vidmill-listen:node-a").await, 1);
        let resync = tokio::time::timeout(PATIENCE, on_a.next())
            .await
            .expect("a resync in time");
        assert_eq!(resync, Some(BusEvent::Resync));
        // Listening again: node b's wake-ups reach node a.
        let wake = BusEvent::State {
            video: new_id(),
            seq: 2,
        };
        be.bus_b.publish(wake.clone()).await.expect("publish");
        assert_eq!(next_event(&mut on_a).await, wake);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_server_loses_nothing_and_the_bus_resyncs() {
        let server = tokio::task::spawn_blocking(pg::PgServer::private)
            .await
            .expect("start PostgreSQL");
        let db = pg::TestDb::on(server).await;
        let a = PgCatalog::connect(&db.url, "node-a").await.expect("a");
        let bus = PgBus::connect(&db.url, "node-a").await.expect("bus");
        let mut events = bus.subscribe();
        let (v, _) = a
            .insert(video("alice", VideoState::Queued))
            .await
            .expect("insert");
        let lease = a.claim("node-a", TTL).await.expect("claim").expect("job");
        let restart = db.server().clone();
        tokio::task::spawn_blocking(move || restart.restart())
            .await
            .expect("restart");
        let resync = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("a resync in time");
        assert_eq!(resync, Some(BusEvent::Resync));
        let after = wait_for("the catalog to answer again", || {
            let (a, id) = (a.clone(), v.id.clone());
            async move {
                match a.get(&id).await {
                    Ok(found) => found,
                    Err(e) => {
                        assert!(matches!(e, CoreError::Unavailable(_)), "{e}");
                        None
                    }
                }
            }
        })
        .await;
        assert_eq!(after, v, "committed work survives");
        a.renew(&lease, TTL, None)
            .await
            .expect("the lease survives too");
        let wake = BusEvent::State {
            video: v.id.clone(),
            seq: 1,
        };
        bus.publish(wake.clone()).await.expect("publish");
        assert_eq!(next_event(&mut events).await, wake);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_pool_connection_is_replaced() {
        let be = postgres().await;
        let db = be.db.as_ref().expect("postgres");
        be.a.check(Duration::from_secs(5)).await.expect("check");
        assert!(db.terminate("vidmill:node-a").await >= 1);
        // The first statement on a dead connection may fail Unavailable;
        // the pool then replaces it.
        let a = be.a.clone();
        wait_for("the pool to reconnect", || {
            let a = a.clone();
            async move {
                match a.check(Duration::from_secs(5)).await {
                    Ok(()) => Some(()),
                    Err(e) => {
                        assert!(matches!(e, CoreError::Unavailable(_)), "{e}");
                        None
                    }
                }
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_database_is_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let url = format!("postgres://postgres@127.0.0.1:{port}/none");
        let err = PgCatalog::connect(&url, "n").await.expect_err("refused");
        assert!(matches!(err, CoreError::Unavailable(_)), "{err}");
        let err = PgBus::connect(&url, "n").await.expect_err("refused");
        assert!(matches!(err, CoreError::Unavailable(_)), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_starting_together_migrate_once() {
        let db = pg::TestDb::new().await;
        let starts = (0..4).map(|i| {
            let url = db.url.clone();
            tokio::spawn(async move { PgCatalog::connect(&url, &format!("n{i}")).await })
        });
        for s in starts {
            s.await.expect("task").expect("connect");
        }
        let admin = pg::client(&db.url).await;
        let versions: i64 = admin
            .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(versions, i64::from(PgCatalog::schema_version()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newer_schema_is_refused() {
        let db = pg::TestDb::new().await;
        drop(PgCatalog::connect(&db.url, "n").await.expect("migrate"));
        pg::client(&db.url)
            .await
            .execute("INSERT INTO schema_migrations (version) VALUES (999)", &[])
            .await
            .expect("bump");
        let err = PgCatalog::connect(&db.url, "n").await.expect_err("refused");
        assert!(
            matches!(err, CoreError::Schema(ref m) if m.contains("newer")),
            "{err}"
        );
    }

    /// Two nodes on one fresh database, as their `UploadParts`, and an
    /// uploading video on it.
    async fn two_holders() -> (pg::TestDb, PgCatalog, PgCatalog, VideoId) {
        let db = pg::TestDb::new().await;
        let a = PgCatalog::connect(&db.url, "node-a").await.expect("node a");
        let b = PgCatalog::connect(&db.url, "node-b").await.expect("node b");
        let (v, _) = a
            .insert(video("alice", VideoState::Uploading))
            .await
            .expect("insert");
        (db, a, b, v.id)
    }

    fn part(number: u32) -> StoredPart {
        StoredPart {
            number,
            etag: format!("\"etag-{number}\""),
            size: MIN_PART_BYTES,
        }
    }

    fn now_ms() -> u64 {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch");
        u64::try_from(since.as_millis()).expect("ms")
    }

    fn piece(size: u64, hold: i64) -> vidmill_actors::parts::TailPiece {
        vidmill_actors::parts::TailPiece { size, hold }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stored_upload_is_recorded_under_its_hold_until_closed() {
        let (_db, a, b, id) = two_holders().await;
        assert_eq!(a.stored_upload(&id).await.expect("read"), None);
        let before = now_ms();
        a.open_parts(&id, 12 << 20, "mp-1").await.expect("open");
        let opened = b.stored_upload(&id).await.expect("read").expect("open");
        assert_eq!(
            (opened.id.as_str(), opened.length, opened.multipart.as_str()),
            (id.as_str(), 12 << 20, "mp-1")
        );
        assert_eq!(
            (opened.parts.clone(), opened.tail.clone()),
            (vec![], vec![])
        );
        // The database's clock is this machine's: a generous window.
        assert!(
            opened.touched_ms + 5_000 >= before && opened.touched_ms <= now_ms() + 5_000,
            "{} vs {before}",
            opened.touched_ms
        );
        let token = a.take_hold(&id, TTL).await.expect("take").expect("free");
        let parts = vec![part(1), part(2)];
        assert_eq!(opened.next_number, 1);
        assert_eq!(a.reserve_part(&id, token).await.expect("reserve"), 1);
        assert_eq!(a.reserve_part(&id, token).await.expect("reserve"), 2);
        let tail = vec![piece(7, token), piece(2, token)];
        a.record_parts(&id, token, &parts, &tail)
            .await
            .expect("record");
        let read = b.stored_upload(&id).await.expect("read").expect("open");
        assert_eq!((read.parts.clone(), read.tail.clone()), (parts, tail));
        assert_eq!(read.offset(), 2 * MIN_PART_BYTES + 9);
        assert_eq!(read.next_number, 3);
        assert!(read.touched_ms >= opened.touched_ms);
        assert!(!a.renew_hold(&id, token, TTL).await.expect("renew"));
        b.close_parts(&id).await.expect("close");
        assert_eq!(a.stored_upload(&id).await.expect("read"), None);
        assert!(matches!(
            a.record_parts(&id, token, &[part(1)], &[]).await,
            Err(CoreError::LeaseLost(ref lost)) if *lost == id
        ));
        assert!(matches!(
            a.take_hold(&id, TTL).await,
            Err(CoreError::NotFound(ref missing)) if *missing == id
        ));
        let nowhere = new_id();
        assert!(matches!(
            a.take_hold(&nowhere, TTL).await,
            Err(CoreError::NotFound(ref missing)) if *missing == nowhere
        ));
        assert!(matches!(
            a.open_parts(&nowhere, 1, "mp-x").await,
            Err(CoreError::NotFound(ref missing)) if *missing == nowhere
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_upload_asks_its_holder_to_let_go() {
        let (db, a, b, id) = two_holders().await;
        a.open_parts(&id, 12 << 20, "mp-1").await.expect("open");
        let first = a.take_hold(&id, TTL).await.expect("take").expect("free");
        assert!(!a.renew_hold(&id, first, TTL).await.expect("renew"));
        assert_eq!(b.take_hold(&id, TTL).await.expect("take"), None, "held");
        assert!(
            a.renew_hold(&id, first, TTL).await.expect("renew"),
            "the holder learns it is wanted"
        );
        let holder: Option<String> = pg::client(&db.url)
            .await
            .query_one(
                "SELECT holder_node FROM stored_uploads WHERE video_id = $1",
                &[&id],
            )
            .await
            .expect("holder")
            .get(0);
        assert_eq!(holder.as_deref(), Some("node-a"));
        assert_eq!(a.reserve_part(&id, first).await.expect("reserve"), 1);
        a.record_parts(&id, first, &[part(1)], &[piece(3, first)])
            .await
            .expect("record");
        a.drop_hold(&id, first).await.expect("drop");
        a.drop_hold(&id, first)
            .await
            .expect("dropping again is no error");
        let second = b.take_hold(&id, TTL).await.expect("take").expect("free");
        assert!(second > first, "{second} after {first}");
        assert!(
            !b.renew_hold(&id, second, TTL).await.expect("renew"),
            "a new hold is not wanted yet"
        );
        assert!(matches!(
            a.renew_hold(&id, first, TTL).await,
            Err(CoreError::LeaseLost(ref lost)) if *lost == id
        ));
        let before = b.stored_upload(&id).await.expect("read").expect("open");
        assert!(matches!(
            a.record_parts(&id, first, &[part(1), part(2)], &[]).await,
            Err(CoreError::LeaseLost(ref lost)) if *lost == id
        ));
        assert_eq!(
            b.stored_upload(&id).await.expect("read"),
            Some(before.clone()),
            "a stale token records nothing"
        );
        assert_eq!(
            (before.parts, before.tail),
            (vec![part(1)], vec![piece(3, first)])
        );
        assert!(
            matches!(
                a.reserve_part(&id, first).await,
                Err(CoreError::LeaseLost(_))
            ),
            "a stale hold gets no part number"
        );
        assert_eq!(
            b.reserve_part(&id, second).await.expect("reserve"),
            2,
            "numbers go on from the last one handed out, never twice"
        );
        // A stale drop leaves the new hold alone.
        a.drop_hold(&id, first).await.expect("stale drop");
        b.record_parts(&id, second, &[part(1), part(2)], &[])
            .await
            .expect("the holder records");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_hold_is_taken_over_and_records_nothing() {
        let (_db, a, b, id) = two_holders().await;
        a.open_parts(&id, 12 << 20, "mp-1").await.expect("open");
        let old = a.take_hold(&id, SHORT).await.expect("take").expect("free");
        let new = wait_for("the hold to expire", || {
            let (b, id) = (b.clone(), id.clone());
            async move { b.take_hold(&id, TTL).await.expect("take") }
        })
        .await;
        assert!(new > old, "{new} after {old}");
        assert!(matches!(
            a.record_parts(&id, old, &[part(1)], &[]).await,
            Err(CoreError::LeaseLost(ref lost)) if *lost == id
        ));
        assert!(matches!(
            a.renew_hold(&id, old, TTL).await,
            Err(CoreError::LeaseLost(ref lost)) if *lost == id
        ));
        let read = b.stored_upload(&id).await.expect("read").expect("open");
        assert_eq!((read.parts, read.tail), (vec![], vec![]));
        assert_eq!(a.take_hold(&id, TTL).await.expect("take"), None, "held");
        // A hold that lapsed records nothing, though no one took it over.
        b.drop_hold(&id, new).await.expect("drop");
        let brief = b.take_hold(&id, SHORT).await.expect("take").expect("free");
        wait_for("the brief hold to lapse", || {
            let (b, id) = (b.clone(), id.clone());
            async move {
                match b.record_parts(&id, brief, &[], &[]).await {
                    Ok(()) => None,
                    Err(e) => {
                        assert!(matches!(e, CoreError::LeaseLost(_)), "{e}");
                        Some(())
                    }
                }
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleting_the_video_forgets_its_stored_upload() {
        let (db, a, b, id) = two_holders().await;
        a.open_parts(&id, 12 << 20, "mp-1").await.expect("open");
        let token = a.take_hold(&id, TTL).await.expect("take").expect("free");
        a.record_parts(&id, token, &[part(1)], &[])
            .await
            .expect("record");
        assert!(b.delete(&id).await.expect("delete"));
        assert_eq!(a.stored_upload(&id).await.expect("read"), None);
        let rows: i64 = pg::client(&db.url)
            .await
            .query_one("SELECT COUNT(*) FROM stored_uploads", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(rows, 0);
        assert!(matches!(
            a.take_hold(&id, TTL).await,
            Err(CoreError::NotFound(ref missing)) if *missing == id
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn artefacts_and_interrupted_runs_belong_to_their_node() {
        let be = postgres().await;
        let mine = Artefact {
            location: "/tmp/part".into(),
            kind: "partial".into(),
            video_id: None,
        };
        be.a.record_artefact(mine.clone()).await.expect("a");
        be.b.record_artefact(mine.clone())
            .await
            .expect("b, same path");
        be.b.forget_artefact(&mine.location).await.expect("forget");
        assert_eq!(be.a.artefacts().await.expect("a"), vec![mine]);
        assert!(be.b.artefacts().await.expect("b").is_empty());
        let (v, _) =
            be.a.insert(video("alice", VideoState::Queued))
                .await
                .expect("insert");
        let running = Change {
            in_flight: Some(true),
            ..Change::default()
        };
        be.a.apply(&v.id, running).await.expect("in flight");
        assert_eq!(be.b.clear_interrupted_runs().await.expect("b"), 0);
        assert_eq!(be.a.clear_interrupted_runs().await.expect("a"), 1);
    }
}
