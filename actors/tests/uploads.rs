//! Resumable uploads in the core: a video `uploading` with its partial file,
//! finished into the queue, kept across a restart, expired, deleted.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use vidmill_actors::*;

/// A source the scripted engine turns into a ready video.
fn media() -> Vec<u8> {
    Script::Work {
        steps: 1,
        step_ms: 1,
    }
    .encode()
    .into_bytes()
}

fn append(upload: &PartialUpload, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&upload.path)
        .expect("open partial");
    f.write_all(bytes).expect("append");
}

async fn an_upload_receives_its_bytes_then_is_queued_and_processed() {
    let core = start(1).await;
    let bytes = media();
    let v = core
        .handle
        .begin_upload("alice", "a.mov", Options::default(), bytes.len() as u64)
        .await
        .expect("begin");
    assert_eq!(v.state, VideoState::Uploading);
    let partial = core
        .handle
        .partial_upload("alice", &v.id)
        .await
        .expect("partial");
    assert_eq!((partial.offset, partial.length), (0, bytes.len() as u64));
    assert!(core
        .handle
        .partial_upload("bob", &v.id)
        .await
        .expect_err("foreign")
        .is_not_found());

    append(&partial, &bytes[..3]);
    let early = core
        .handle
        .finish_upload("alice", &v.id)
        .await
        .expect_err("short");
    assert!(matches!(early, CoreError::Incomplete { .. }), "{early:?}");
    assert_eq!(
        core.handle
            .partial_upload("alice", &v.id)
            .await
            .expect("partial")
            .offset,
        3
    );

    append(&partial, &bytes[3..]);
    let queued = core
        .handle
        .finish_upload("alice", &v.id)
        .await
        .expect("finish");
    assert_eq!(queued.state, VideoState::Queued);
    assert!(!partial.path.exists(), "the bytes moved to the store");
    assert!(core.store.path(&object_key(&v.id, "source")).exists());
    let ready = core.wait_state("alice", &v.id, VideoState::Ready).await;
    assert_eq!(ready.attempts, 1);
    assert!(
        core.handle
            .partial_upload("alice", &v.id)
            .await
            .expect_err("done")
            .is_not_found(),
        "a finished upload takes no more bytes"
    );
}

async fn a_restart_keeps_unfinished_uploads_and_sweeps_stray_partials() {
    let core = start(1).await;
    let bytes = media();
    let v = core
        .handle
        .begin_upload("alice", "a.mov", Options::default(), bytes.len() as u64)
        .await
        .expect("begin");
    let partial = core
        .handle
        .partial_upload("alice", &v.id)
        .await
        .expect("partial");
    append(&partial, &bytes[..4]);
    let stray = partial.path.with_file_name(new_id());
    std::fs::write(&stray, b"nobody's").expect("stray");
    core.handle.shutdown().await.expect("shutdown");
    let TestCore { dir, .. } = core;

    let core = start_in(dir, 1).await;
    assert!(!stray.exists(), "a partial file without an upload is swept");
    let resumed = core
        .handle
        .partial_upload("alice", &v.id)
        .await
        .expect("kept");
    assert_eq!(resumed.offset, 4, "the offset survives the restart");
    append(&resumed, &bytes[4..]);
    core.handle
        .finish_upload("alice", &v.id)
        .await
        .expect("finish");
    core.wait_state("alice", &v.id, VideoState::Ready).await;
}

async fn deleted_and_expired_uploads_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 1);
    cfg.upload_expiry = Duration::from_millis(300);
    let core = start_with(dir, cfg).await;
    let begin = |name: &'static str| {
        let handle = core.handle.clone();
        async move {
            let v = handle
                .begin_upload("alice", name, Options::default(), 10)
                .await
                .expect("begin");
            let path = handle.partial_upload("alice", &v.id).await.expect("p").path;
            (v, path)
        }
    };
    let (deleted, deleted_path) = begin("a.mov").await;
    core.handle
        .delete("alice", &deleted.id)
        .await
        .expect("delete");
    assert!(!deleted_path.exists());

    let (old, old_path) = begin("b.mov").await;
    assert!(
        core.handle
            .expire_uploads()
            .await
            .expect("expire")
            .is_empty(),
        "not yet"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        core.handle.expire_uploads().await.expect("expire"),
        vec![old.id.clone()]
    );
    assert!(core
        .handle
        .get("alice", &old.id)
        .await
        .expect_err("gone")
        .is_not_found());
    assert!(!old_path.exists());
    let leftovers: Vec<_> = std::fs::read_dir(old_path.parent().expect("dir"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

crate::on_every_backend!(
    an_upload_receives_its_bytes_then_is_queued_and_processed,
    a_restart_keeps_unfinished_uploads_and_sweeps_stray_partials,
    deleted_and_expired_uploads_leave_nothing,
);
