//! The core with real actors and a real catalog, each test on SQLite and
//! on PostgreSQL (see `common::backend`): the video life cycle, fairness
//! and the CPU budget, cancel, retry, stalls, crashes, panics while
//! stopping and recovery after a restart. The engine is scripted (see
//! `common`).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use vidmill_actors::catalog;
use vidmill_actors::*;

async fn next_state(feed: &mut Feed) -> StateEvent {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("an event in time")
            .expect("feed open");
        if let HubMessage::State(e) = message {
            return e.event.clone();
        }
    }
}

async fn a_video_goes_from_queued_to_ready_with_every_output_published() {
    let core = start(2).await;
    let v = core
        .create(
            "alice",
            Script::Work {
                steps: 3,
                step_ms: 10,
            },
        )
        .await;
    assert_eq!(v.state, VideoState::Queued);
    let mut feed = core
        .handle
        .subscribe("alice", Some(&v.id), Some(0))
        .await
        .expect("subscribe");
    let ready = core.wait_state("alice", &v.id, VideoState::Ready).await;
    assert!(
        ready.outputs.mp4.is_some()
            && ready.outputs.frames.is_some()
            && ready.outputs.poster.is_some()
    );
    assert_eq!(ready.stage, None);
    assert_eq!(
        ready.source.as_ref().map(|s| s.container.as_str()),
        Some("test")
    );
    assert!(core.store.path(&object_key(&v.id, "source")).exists());
    for name in ["video.mp4", "frames.zip", "poster.jpg"] {
        assert!(
            core.store.path(&ready.outputs.key(&v.id, name)).exists(),
            "{name} stored"
        );
    }
    let runs = std::fs::read_dir(core.store.path(&format!("videos/{}/runs", v.id)))
        .expect("runs")
        .count();
    assert_eq!(runs, 1, "the objects of one run");
    let mut events = Vec::new();
    while events.last().map(|e: &StateEvent| e.seq) != Some(ready.last_seq) {
        events.push(next_state(&mut feed).await);
    }
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=ready.last_seq).collect::<Vec<_>>(),
        "every state event once, in order"
    );
    let stages: Vec<_> = events.iter().map(|e| (e.state, e.stage)).collect();
    assert!(stages.contains(&(VideoState::Processing, Some(Stage::Probing))));
    assert!(stages.contains(&(VideoState::Processing, Some(Stage::Converting))));
    assert!(stages.contains(&(VideoState::Processing, Some(Stage::Finalizing))));
    assert_eq!(stages.last(), Some(&(VideoState::Ready, None)));
    // The MP4 is announced while frames are still to come.
    let mp4_first = events
        .iter()
        .position(|e| e.outputs.mp4.is_some())
        .expect("mp4 event");
    assert!(
        events[mp4_first].outputs.frames.is_none(),
        "mp4 published before frames"
    );
    assert!(
        core.work_files().is_empty(),
        "no temp files left: {:?}",
        core.work_files()
    );
}

async fn another_owners_video_starts_at_the_next_free_slot() {
    let core = start(1).await;
    let mut a = Vec::new();
    for _ in 0..10 {
        a.push(
            core.create(
                "a",
                Script::Work {
                    steps: 10,
                    step_ms: 30,
                },
            )
            .await,
        );
    }
    // One of a's videos is running; b's single video must be next.
    let deadline = Instant::now() + Duration::from_secs(5);
    while core.handle.stats().await.expect("stats").admission.running == 0 {
        assert!(Instant::now() < deadline, "nothing started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let b = core
        .create(
            "b",
            Script::Work {
                steps: 2,
                step_ms: 10,
            },
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let position = loop {
        let positions = core.handle.queue_positions().await.expect("positions");
        if let Some(p) = positions.get(&b.id) {
            break *p;
        }
        assert!(Instant::now() < deadline, "b never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(position, 0, "b is next in line");
    core.wait_state("b", &b.id, VideoState::Ready).await;
    let started = core.engine.record.started.lock().expect("started").clone();
    assert_eq!(started.get(1), Some(&b.id), "start order: {started:?}");
    for v in &a {
        core.wait_state("a", &v.id, VideoState::Ready).await;
    }
    assert_eq!(
        core.engine.record.max_running.load(Ordering::SeqCst),
        1,
        "cpu_budget 1: one pipeline at a time"
    );
}

async fn the_cpu_budget_bounds_concurrent_pipelines() {
    let core = start(2).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            core.create(
                &format!("o{}", i % 3),
                Script::Work {
                    steps: 3,
                    step_ms: 30,
                },
            )
            .await,
        );
    }
    for (i, v) in ids.iter().enumerate() {
        core.wait_state(&format!("o{}", i % 3), &v.id, VideoState::Ready)
            .await;
    }
    let max = core.engine.record.max_running.load(Ordering::SeqCst);
    assert_eq!(
        max, 2,
        "two pipelines at once with cpu_budget 2, never more"
    );
    let stats = core.settled_admission().await;
    assert_eq!(stats.admission.running, 0, "every slot handed back");
    assert_eq!(stats.admission.queued, 0);
}

async fn deleting_a_running_video_stops_it_frees_the_slot_and_leaves_nothing() {
    // Also when the pipeline panics while being stopped: still a clean
    // stop, never counted as a crash and restarted.
    for script in [Script::Hang, Script::PanicWhenCancelled] {
        let core = start(1).await;
        let hung = core.create("alice", script).await;
        let next = core
            .create(
                "alice",
                Script::Work {
                    steps: 1,
                    step_ms: 5,
                },
            )
            .await;
        core.wait_for("alice", &hung.id, "converting", |v| {
            v.stage == Some(Stage::Converting)
        })
        .await;
        let started = Instant::now();
        core.handle.delete("alice", &hung.id).await.expect("delete");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{script:?} stopped in {:?}",
            started.elapsed()
        );
        assert!(core
            .handle
            .get("alice", &hung.id)
            .await
            .expect_err("gone")
            .is_not_found());
        assert!(
            !core.store.path(&format!("videos/{}", hung.id)).exists(),
            "objects removed"
        );
        core.wait_state("alice", &next.id, VideoState::Ready).await;
        let runs = core
            .engine
            .record
            .runs
            .lock()
            .expect("runs")
            .get(&hung.id)
            .copied();
        assert_eq!(
            runs,
            Some(1),
            "{script:?}: a deleted video never runs again"
        );
        assert!(core.work_files().is_empty(), "{:?}", core.work_files());
    }
}

async fn retry_reruns_a_failed_video_from_its_stored_source() {
    let core = start(1).await;
    let v = core.create("alice", Script::FailFirst { times: 1 }).await;
    let failed = core.wait_state("alice", &v.id, VideoState::Failed).await;
    assert_eq!(
        failed.error.as_ref().map(|e| e.code.as_str()),
        Some("pipeline-failed")
    );
    let ready_one = core
        .create(
            "alice",
            Script::Work {
                steps: 1,
                step_ms: 1,
            },
        )
        .await;
    core.wait_state("alice", &ready_one.id, VideoState::Ready)
        .await;
    let conflict = core
        .handle
        .retry("alice", &ready_one.id)
        .await
        .expect_err("not failed");
    assert!(matches!(conflict, CoreError::WrongState { .. }));
    assert!(core
        .handle
        .retry("bob", &v.id)
        .await
        .expect_err("foreign")
        .is_not_found());
    let retried = core.handle.retry("alice", &v.id).await.expect("retry");
    assert_eq!(retried.attempts, 2);
    let ready = core.wait_state("alice", &v.id, VideoState::Ready).await;
    assert_eq!(ready.error, None);
    assert_eq!(ready.attempts, 2);
}

async fn stalls_and_bad_media_fail_with_their_codes() {
    let core = start(2).await;
    let stalled = core.create("alice", Script::Stall).await;
    let bad = core.create("alice", Script::Unsupported).await;
    let s = core
        .wait_state("alice", &stalled.id, VideoState::Failed)
        .await;
    assert_eq!(s.error.map(|e| e.code), Some("pipeline-stalled".into()));
    let b = core.wait_state("alice", &bad.id, VideoState::Failed).await;
    assert_eq!(b.error.map(|e| e.code), Some("unsupported-media".into()));
    assert!(core.work_files().is_empty());
}

async fn a_video_that_keeps_crashing_fails_while_others_proceed() {
    let core = start(2).await;
    let crasher = core.create("alice", Script::Panic).await;
    let fine = core
        .create(
            "bob",
            Script::Work {
                steps: 2,
                step_ms: 10,
            },
        )
        .await;
    let failed = core
        .wait_state("alice", &crasher.id, VideoState::Failed)
        .await;
    assert_eq!(
        failed.error.map(|e| e.code),
        Some("crashed-repeatedly".into())
    );
    assert_eq!(failed.crashes, 3);
    assert_eq!(
        core.engine
            .record
            .runs
            .lock()
            .expect("runs")
            .get(&crasher.id),
        Some(&3)
    );
    core.wait_state("bob", &fine.id, VideoState::Ready).await;
    let stats = core.settled_admission().await;
    assert_eq!(
        stats.admission.running, 0,
        "crashed runs released their slots"
    );
}

async fn a_crashed_worker_costs_one_attempt_and_a_limit_fails_at_once() {
    let core = start(2).await;
    let once = core.create("alice", Script::CrashFirst { times: 1 }).await;
    let always = core.create("alice", Script::CrashFirst { times: 99 }).await;
    let greedy = core.create("bob", Script::OverLimit).await;
    let fine = core
        .create(
            "bob",
            Script::Work {
                steps: 2,
                step_ms: 10,
            },
        )
        .await;
    let ready = core.wait_state("alice", &once.id, VideoState::Ready).await;
    assert_eq!(ready.crashes, 1, "the crash cost one attempt");
    assert_eq!(ready.error, None);
    let failed = core
        .wait_state("alice", &always.id, VideoState::Failed)
        .await;
    let error = failed.error.expect("error");
    assert_eq!(error.code, "pipeline-crashed");
    assert!(error.message.contains("SIGSEGV"), "{}", error.message);
    let limited = core.wait_state("bob", &greedy.id, VideoState::Failed).await;
    let error = limited.error.expect("error");
    assert_eq!(error.code, "limit-exceeded");
    // The engine said which limit beside its message: the stored message
    // names it.
    assert!(
        error.message.contains("limits.worker_memory_bytes"),
        "{}",
        error.message
    );
    core.wait_state("bob", &fine.id, VideoState::Ready).await;
    let runs = core.engine.record.runs.lock().expect("runs").clone();
    assert_eq!(runs.get(&once.id), Some(&2));
    assert_eq!(runs.get(&always.id), Some(&2), "one retry, then failed");
    assert_eq!(runs.get(&greedy.id), Some(&1), "a limit is not retried");
    let seqs: Vec<u64> = backend::catalog_for(core.dir.path())
        .await
        .events_after(&once.id, 0)
        .await
        .expect("events")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=ready.last_seq).collect::<Vec<_>>());
    let stats = core.handle.stats().await.expect("stats");
    assert_eq!(stats.admission.running, 0, "slots released");
    assert!(core.work_files().is_empty(), "{:?}", core.work_files());
}

async fn a_restart_requeues_unfinished_videos_and_sweeps_leftovers() {
    // The state a killed process leaves: one video mid-run (in flight, with
    // a work directory), one queued, one still uploading, and a recorded
    // temp file. (The SIGKILL test with the real engine is in the root crate.)
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = backend::catalog_for(dir.path()).await;
    let store = DirStore(dir.path().join("objects"));
    let mut ids = Vec::new();
    for state in [
        VideoState::Processing,
        VideoState::Queued,
        VideoState::Uploading,
    ] {
        let id = new_id();
        let source = store.path(&object_key(&id, "source"));
        std::fs::create_dir_all(source.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &source,
            Script::Work {
                steps: 1,
                step_ms: 1,
            }
            .encode(),
        )
        .expect("source");
        let new = catalog::NewVideo {
            id: id.clone(),
            owner: "alice".into(),
            filename: "a.mov".into(),
            options: Options::default(),
            state,
            source_bytes: 0,
        };
        catalog.insert(new).await.expect("insert");
        ids.push(id);
    }
    let change = catalog::Change {
        stage: Some(Some(Stage::Converting)),
        in_flight: Some(true),
        ..Default::default()
    };
    catalog.apply(&ids[0], change).await.expect("in flight");
    let run_dir = dir.path().join("work").join(&ids[0]);
    std::fs::create_dir_all(&run_dir).expect("run dir");
    std::fs::write(run_dir.join("video.mp4.partial"), b"half").expect("partial");
    let stray = dir.path().join("stray-upload.part");
    std::fs::write(&stray, b"x").expect("stray");
    catalog
        .record_artefact(catalog::Artefact {
            location: stray.to_string_lossy().into(),
            kind: "upload".into(),
            video_id: None,
        })
        .await
        .expect("record");
    drop(catalog);

    let started = Instant::now();
    let core = start_in(dir, 1).await;
    let took = started.elapsed();
    assert_eq!(core.recovery.requeued, 2);
    assert_eq!(core.recovery.interrupted, 1);
    assert!(core.recovery.swept >= 2, "{:?}", core.recovery);
    assert!(!stray.exists() && !run_dir.join("video.mp4.partial").exists());
    let resumed = core.wait_state("alice", &ids[0], VideoState::Ready).await;
    assert_eq!(
        resumed.crashes, 0,
        "a death of the whole process counts against no video"
    );
    core.wait_state("alice", &ids[1], VideoState::Ready).await;
    assert_eq!(
        core.handle.get("alice", &ids[2]).await.expect("get").state,
        VideoState::Uploading
    );
    let events = backend::catalog_for(core.dir.path())
        .await
        .events_after(&ids[0], 0)
        .await
        .expect("events");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=resumed.last_seq).collect::<Vec<_>>(),
        "no duplicate or missing events"
    );
    eprintln!(
        "recovered {} videos; start-up took {took:?}",
        core.recovery.requeued
    );
}

async fn shutdown_puts_running_videos_back_in_the_queue_without_a_crash() {
    // Also when the pipeline panics while being stopped.
    for script in [Script::Hang, Script::PanicWhenCancelled] {
        let core = start(1).await;
        let v = core.create("alice", script).await;
        core.wait_for("alice", &v.id, "converting", |v| {
            v.stage == Some(Stage::Converting)
        })
        .await;
        core.handle.shutdown().await.expect("shutdown");
        let after = backend::catalog_for(core.dir.path())
            .await
            .get(&v.id)
            .await
            .expect("get")
            .expect("video");
        assert_eq!(after.state, VideoState::Queued, "{script:?}");
        assert_eq!(after.crashes, 0, "{script:?}");
        assert!(core.work_files().is_empty());
    }
}

async fn progress_reaches_subscribers_at_most_four_times_a_second() {
    let core = start(1).await;
    let mut feed = core
        .handle
        .subscribe("alice", None, None)
        .await
        .expect("subscribe");
    let v = core
        .create(
            "alice",
            Script::Work {
                steps: 40,
                step_ms: 25,
            },
        )
        .await;
    let started = Instant::now();
    let mut progress = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("event")
            .expect("open")
        {
            HubMessage::Progress(p) => {
                assert_eq!(p.video_id, v.id);
                progress += 1;
            }
            HubMessage::State(e) if e.event.state == VideoState::Ready => break,
            HubMessage::State(_) => {}
        }
    }
    let allowed = (started.elapsed().as_secs_f64() * 4.0).ceil() as usize + 1;
    assert!(
        progress >= 1 && progress <= allowed,
        "{progress} progress events in {:?}",
        started.elapsed()
    );
    assert!(
        core.handle.get("bob", &v.id).await.is_err(),
        "owners are isolated"
    );
}

async fn a_retry_sent_the_moment_a_video_fails_runs_it_again() {
    let core = start(1).await;
    for _ in 0..5 {
        let v = core.create("alice", Script::FailFirst { times: 1 }).await;
        let mut feed = core
            .handle
            // Replay from the start: the video may fail before this
            // subscription exists.
            .subscribe("alice", Some(&v.id), Some(0))
            .await
            .expect("subscribe");
        // Retry on the failure event itself, while the failed run's actor
        // may still be ending.
        loop {
            let e = next_state(&mut feed).await;
            if e.state == VideoState::Failed {
                break;
            }
        }
        let retried = core.handle.retry("alice", &v.id).await.expect("retry");
        assert_eq!(retried.attempts, 2);
        let ready = core.wait_state("alice", &v.id, VideoState::Ready).await;
        assert_eq!(ready.attempts, 2);
    }
}

crate::on_every_backend!(
    a_video_goes_from_queued_to_ready_with_every_output_published,
    another_owners_video_starts_at_the_next_free_slot,
    the_cpu_budget_bounds_concurrent_pipelines,
    deleting_a_running_video_stops_it_frees_the_slot_and_leaves_nothing,
    retry_reruns_a_failed_video_from_its_stored_source,
    stalls_and_bad_media_fail_with_their_codes,
    a_video_that_keeps_crashing_fails_while_others_proceed,
    a_crashed_worker_costs_one_attempt_and_a_limit_fails_at_once,
    a_restart_requeues_unfinished_videos_and_sweeps_leftovers,
    shutdown_puts_running_videos_back_in_the_queue_without_a_crash,
    progress_reaches_subscribers_at_most_four_times_a_second,
    a_retry_sent_the_moment_a_video_fails_runs_it_again,
);
