//! Notifications from the outbox: one per `ready` or `failed`, in order per
//! video, retried while the receiver is down, kept across a restart,
//! dropped when too old.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use vidmill_actors::*;

fn quick() -> Script {
    Script::Work {
        steps: 1,
        step_ms: 1,
    }
}

/// Waits until the inbox holds `n` notifications and returns them.
async fn delivered(core: &TestCore, n: usize, within: Duration) -> Vec<Notification> {
    let deadline = Instant::now() + within;
    loop {
        let got = core.notes.delivered.lock().expect("inbox").clone();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} delivered: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn every_end_is_notified_once_in_order() {
    let core = start(1).await;
    let fine = core.create("alice", quick()).await;
    core.wait_state("alice", &fine.id, VideoState::Ready).await;
    let flaky = core.create("bob", Script::FailFirst { times: 1 }).await;
    core.wait_state("bob", &flaky.id, VideoState::Failed).await;
    core.handle.retry("bob", &flaky.id).await.expect("retry");
    core.wait_state("bob", &flaky.id, VideoState::Ready).await;

    let notes = delivered(&core, 3, Duration::from_secs(5)).await;
    let seen: Vec<(&str, &str)> = notes
        .iter()
        .map(|n| (n.video.id.as_str(), n.kind.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (fine.id.as_str(), "video.ready"),
            (flaky.id.as_str(), "video.failed"),
            (flaky.id.as_str(), "video.ready"),
        ]
    );
    assert!(notes[1].event.seq < notes[2].event.seq);
    assert_eq!(
        notes[1].event.error.as_ref().map(|e| e.code.as_str()),
        Some("pipeline-failed")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        core.notes.delivered.lock().expect("inbox").len(),
        3,
        "each once"
    );
}

async fn a_receiver_that_is_down_gets_them_later_in_order() {
    let core = start(1).await;
    core.notes.refuse.store(2, Ordering::SeqCst);
    let v = core.create("alice", Script::FailFirst { times: 1 }).await;
    core.wait_state("alice", &v.id, VideoState::Failed).await;
    core.handle.retry("alice", &v.id).await.expect("retry");
    core.wait_state("alice", &v.id, VideoState::Ready).await;
    // Refused twice (1 s, then 2 s of backoff), then both, failed first.
    let notes = delivered(&core, 2, Duration::from_secs(10)).await;
    let kinds: Vec<&str> = notes.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(kinds, ["video.failed", "video.ready"]);
    assert_eq!(core.notes.attempts.load(Ordering::SeqCst), 4);
}

async fn undelivered_notifications_survive_a_restart() {
    let core = start(1).await;
    core.notes.refuse.store(usize::MAX, Ordering::SeqCst);
    let v = core.create("alice", quick()).await;
    core.wait_state("alice", &v.id, VideoState::Ready).await;
    core.handle.shutdown().await.expect("shutdown");
    let TestCore { dir, .. } = core;
    let core = start_in(dir, 1).await;
    let notes = delivered(&core, 1, Duration::from_secs(5)).await;
    assert_eq!(
        (notes[0].video.id.as_str(), notes[0].kind.as_str()),
        (v.id.as_str(), "video.ready")
    );
}

async fn notifications_older_than_the_limit_are_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 1);
    cfg.notify_max_age = Duration::ZERO;
    let core = start_with(dir, cfg).await;
    let v = core.create("alice", quick()).await;
    core.wait_state("alice", &v.id, VideoState::Ready).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(core.notes.delivered.lock().expect("inbox").is_empty());
    assert_eq!(core.notes.attempts.load(Ordering::SeqCst), 0);
}

async fn owners_with_an_address_are_also_mailed() {
    let core = start(1).await;
    core.notes.email.store(true, Ordering::SeqCst);
    core.handle
        .set_contact("alice", "alice@example.org")
        .await
        .expect("contact");
    let a = core.create("alice", quick()).await;
    core.wait_state("alice", &a.id, VideoState::Ready).await;
    let b = core.create("bob", quick()).await;
    core.wait_state("bob", &b.id, VideoState::Ready).await;
    let notes = delivered(&core, 3, Duration::from_secs(5)).await;
    let mut seen: Vec<(String, String, Option<String>)> = notes
        .iter()
        .map(|n| (n.video.owner.clone(), n.channel.clone(), n.email.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "alice".into(),
                "email".into(),
                Some("alice@example.org".into())
            ),
            ("alice".into(), "webhook".into(), None),
            ("bob".into(), "webhook".into(), None),
        ],
        "bob has no address: no mail"
    );
}

crate::on_every_backend!(
    every_end_is_notified_once_in_order,
    a_receiver_that_is_down_gets_them_later_in_order,
    undelivered_notifications_survive_a_restart,
    notifications_older_than_the_limit_are_dropped,
    owners_with_an_address_are_also_mailed,
);
