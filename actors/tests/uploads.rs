//! Resumable uploads in the core: a video `uploading` whose bytes wait in a
//! partial file (SQLite) or in the store's multipart upload (PostgreSQL, a
//! cluster), finished into the queue, kept across a restart, expired,
//! deleted; and, in the store, appended by requests that take turns.

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

/// Appends `bytes` to `owner`'s upload as one request would.
async fn append(handle: &Handle, upload: &PartialUpload, bytes: &[u8]) {
    match &upload.file {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .expect("open partial");
            f.write_all(bytes).expect("append");
        }
        None => {
            let mut writer = handle
                .write_upload("alice", &upload.id)
                .await
                .expect("hold");
            writer.write(bytes).await.expect("write");
            writer.settle().await.expect("settle");
            writer.release().await;
        }
    }
}

/// Tail pieces of upload `id` in the store.
fn tail_pieces(core: &TestCore, id: &str) -> usize {
    std::fs::read_dir(core.store.path(&format!("videos/{id}")))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("upload-tail"))
                .count()
        })
        .unwrap_or(0)
}

/// Whether what `upload` kept of its bytes is gone: its partial file, or
/// its multipart upload and tail.
fn nothing_kept(core: &TestCore, upload: &PartialUpload) -> bool {
    match &upload.file {
        Some(path) => !path.exists(),
        None => core.store.open_multiparts() == 0 && tail_pieces(core, &upload.id) == 0,
    }
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

    append(&core.handle, &partial, &bytes[..3]).await;
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

    append(&core.handle, &partial, &bytes[3..]).await;
    let queued = core
        .handle
        .finish_upload("alice", &v.id)
        .await
        .expect("finish");
    assert_eq!(queued.state, VideoState::Queued);
    assert!(
        nothing_kept(&core, &partial),
        "the bytes moved to the source"
    );
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
    append(&core.handle, &partial, &bytes[..4]).await;
    let partials = config(core.dir.path(), 1).partial_dir;
    std::fs::create_dir_all(&partials).expect("partials");
    let stray = partials.join(new_id());
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
    append(&core.handle, &resumed, &bytes[4..]).await;
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
            let partial = handle.partial_upload("alice", &v.id).await.expect("p");
            // Some bytes, so that there is something to leave behind.
            append(&handle, &partial, b"abc").await;
            (v, partial)
        }
    };
    let (deleted, deleted_partial) = begin("a.mov").await;
    core.handle
        .delete("alice", &deleted.id)
        .await
        .expect("delete");
    assert!(nothing_kept(&core, &deleted_partial));

    let (old, old_partial) = begin("b.mov").await;
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
    assert!(nothing_kept(&core, &old_partial));
    let partials = config(core.dir.path(), 1).partial_dir;
    let leftovers: Vec<_> = std::fs::read_dir(&partials)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let objects: Vec<_> = std::fs::read_dir(core.store.path("videos"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(objects.is_empty(), "{objects:?}");
}

/// A source of `len` bytes the scripted engine takes (its script on the
/// first line, then padding), with bytes that differ along it.
fn big_media(len: usize) -> Vec<u8> {
    let mut bytes = media();
    bytes.push(b'\n');
    let mut i = 0u32;
    while bytes.len() < len {
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        bytes.push(b'a' + (i >> 16) as u8 % 26);
    }
    bytes.truncate(len);
    bytes
}

/// In the store, requests of any size take turns: bytes too few for a
/// part wait in the tail, which the next request sends on; parts are cut
/// at the store's minimum; the source is the bytes sent, in order.
#[cfg(feature = "postgres")]
async fn stored_uploads_cut_parts_across_requests() {
    const MIB: usize = 1 << 20;
    let core = start(1).await;
    let bytes = big_media(13 * MIB + 12_345);
    let v = core
        .handle
        .begin_upload("alice", "big.mov", Options::default(), bytes.len() as u64)
        .await
        .expect("begin");
    let partial = core.handle.partial_upload("alice", &v.id).await.expect("p");
    assert!(partial.file.is_none(), "kept in the store");
    // 3 MiB (tail), 4 MiB (a 7 MiB part), 2 MiB (tail), then in one
    // request 1 MiB... and the rest, in chunks as a body arrives.
    // Then 70 requests of 100 bytes: each adds a piece to the tail, until
    // the tail has too many and one request folds them.
    let mut at = 0;
    let sizes = [3 * MIB, 4 * MIB, 2 * MIB].into_iter().chain([100; 70]);
    for size in sizes {
        append(&core.handle, &partial, &bytes[at..at + size]).await;
        at += size;
        let now = core.handle.partial_upload("alice", &v.id).await.expect("p");
        assert_eq!(now.offset, at as u64, "every byte is counted");
    }
    let pieces = tail_pieces(&core, &v.id);
    assert!(
        (1..=64).contains(&pieces),
        "the tail was folded, not grown without end: {pieces} pieces"
    );
    let mut writer = core
        .handle
        .write_upload("alice", &v.id)
        .await
        .expect("hold");
    assert_eq!(writer.recorded(), at as u64);
    for chunk in bytes[at..].chunks(64 * 1024) {
        writer.write(chunk).await.expect("write");
    }
    assert_eq!(writer.settle().await.expect("settle"), bytes.len() as u64);
    writer.release().await;
    assert_eq!(
        core.store.open_multiparts(),
        1,
        "not joined before the finish"
    );

    core.handle
        .finish_upload("alice", &v.id)
        .await
        .expect("finish");
    let source = std::fs::read(core.store.path(&object_key(&v.id, "source"))).expect("source");
    assert!(source == bytes, "the source is the bytes sent, in order");
    assert!(nothing_kept(&core, &partial));
    core.wait_state("alice", &v.id, VideoState::Ready).await;
}

/// A request that finds the upload held waits for the holder to let go,
/// and the holder is told; a holder that lost its hold records nothing.
#[cfg(feature = "postgres")]
async fn a_stored_upload_is_written_by_one_request_at_a_time() {
    let core = start(1).await;
    let bytes = big_media(100_000);
    let v = core
        .handle
        .begin_upload("alice", "a.mov", Options::default(), bytes.len() as u64)
        .await
        .expect("begin");
    let mut first = core
        .handle
        .write_upload("alice", &v.id)
        .await
        .expect("hold");
    first.write(&bytes[..1000]).await.expect("write");
    let handle = core.handle.clone();
    let id = v.id.clone();
    let second = tokio::spawn(async move { handle.write_upload("alice", &id).await });
    // The first hears of it at its next renewal, stores what it has and
    // lets go; the second then starts where the first ended.
    tokio::time::timeout(Duration::from_secs(3), first.superseded())
        .await
        .expect("the holder is told another request wants the upload");
    assert_eq!(first.settle().await.expect("settle"), 1000);
    first.release().await;
    let mut second = second.await.expect("join").expect("second holds");
    assert_eq!(second.recorded(), 1000);

    // A third waits its turn, and gives up when the second never lets go.
    let started = std::time::Instant::now();
    let busy = core
        .handle
        .write_upload("alice", &v.id)
        .await
        .expect_err("busy");
    assert!(matches!(busy, CoreError::Busy(_)), "{busy:?}");
    assert!(started.elapsed() >= Duration::from_secs(4), "it waited");
    second.write(&bytes[1000..]).await.expect("write");
    assert_eq!(second.settle().await.expect("settle"), bytes.len() as u64);
    second.release().await;
    core.handle
        .finish_upload("alice", &v.id)
        .await
        .expect("finish");
    let source = std::fs::read(core.store.path(&object_key(&v.id, "source"))).expect("source");
    assert!(source == bytes);
}

#[cfg(feature = "postgres")]
mod stored {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_uploads_cut_parts_across_requests() {
        crate::common::backend::on(
            crate::common::backend::Backend::Postgres,
            super::stored_uploads_cut_parts_across_requests(),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stored_upload_is_written_by_one_request_at_a_time() {
        crate::common::backend::on(
            crate::common::backend::Backend::Postgres,
            super::a_stored_upload_is_written_by_one_request_at_a_time(),
        )
        .await;
    }
}

crate::on_every_backend!(
    an_upload_receives_its_bytes_then_is_queued_and_processed,
    a_restart_keeps_unfinished_uploads_and_sweeps_stray_partials,
    deleted_and_expired_uploads_leave_nothing,
);
