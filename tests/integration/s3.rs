//! The S3 store against a real S3 server: Garage on loopback with a bucket
//! and key made for each test. The store itself (multipart puts, ranged
//! reads, copies, prefix deletes, multipart uploads kept across calls,
//! small whole objects), and the whole server on it.

use std::path::Path;
use std::process::Command;

pub use crate::garage::Garage;
use vidmill::config::S3;
use vidmill::store::S3Store;
use vidmill_actors::{BlobStore, StoreError, StoredPart, MIN_PART_BYTES};

use crate::support::{webm, Server};

/// The S3 store on `garage`.
pub async fn store_on(garage: &Garage) -> S3Store {
    let config = S3 {
        bucket: garage.bucket.clone(),
        region: garage.region.clone(),
        endpoint: garage.endpoint.clone(),
        path_style: true,
        access_key_id: garage.access_key_id.clone(),
        ..S3::default()
    };
    S3Store::new(&config, Some(garage.secret_access_key.clone()))
        .await
        .expect("store")
}

/// A vidmill server under `dir` storing in `garage`, with `extra` lines
/// for `[storage.s3]`.
fn on_s3(dir: &Path, garage: &Garage, extra: &str) -> Server {
    Server::start_with_env(
        &dir.join("vidmill"),
        &format!("{}{extra}", garage.server_toml()),
        &[("VIDMILL__STORAGE__TYPE", "s3")],
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

async fn read_range(store: &S3Store, key: &str, start: u64, count: u64) -> Vec<u8> {
    let object = store.open(key).await.expect("open");
    let mut chunks = object.range(start, count);
    let mut got = Vec::new();
    while let Some(chunk) = chunks.next_chunk().await.expect("chunk") {
        got.extend_from_slice(&chunk);
    }
    got
}

#[test]
fn the_s3_store_keeps_reads_copies_and_deletes_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garage = Garage::start(&dir.path().join("garage"));
    runtime().block_on(async {
        let store = store_on(&garage).await;
        store.check().await.expect("bucket reachable");
        // Larger than one part: goes up in parts.
        let big: Vec<u8> = (0..(40u32 << 20)).map(|i| (i % 251) as u8).collect();
        let file = dir.path().join("big");
        std::fs::write(&file, &big).expect("write");
        let len = store.put_file("videos/a/source", &file).await.expect("put");
        assert_eq!(len, big.len() as u64);
        assert!(!file.exists(), "handed over");
        assert_eq!(store.len("videos/a/source").await.expect("len"), len);
        for (start, count) in [(0, 10), ((16 << 20) - 3, 1 << 20), (len - 5, 5)] {
            assert_eq!(
                read_range(&store, "videos/a/source", start, count).await,
                &big[start as usize..(start + count) as usize],
                "{start}+{count}"
            );
        }
        let small = dir.path().join("small");
        std::fs::write(&small, b"poster").expect("write");
        store
            .put_file("videos/a/poster.jpg", &small)
            .await
            .expect("put small");
        let copy = store
            .local_copy("videos/a/poster.jpg", &dir.path().join("scratch"))
            .await
            .expect("copy");
        assert_eq!(std::fs::read(copy).expect("read"), b"poster");
        assert!(matches!(
            store.len("videos/b/source").await,
            Err(StoreError::NotFound(_))
        ));
        store
            .rename("videos/a/poster.jpg", "videos/a/renamed.jpg")
            .await
            .expect("rename");
        assert!(
            store.len("videos/a/poster.jpg").await.is_err(),
            "moved away"
        );
        assert_eq!(
            store.len("videos/a/renamed.jpg").await.expect("moved here"),
            6
        );
        store.delete_prefix("videos/a/").await.expect("delete");
        assert!(store.len("videos/a/source").await.is_err());
        assert!(store.len("videos/a/poster.jpg").await.is_err());
    });
}

/// Stores `bytes` as part `number` of `upload`, as a caller records it.
async fn put_part(
    store: &S3Store,
    key: &str,
    upload: &str,
    number: u32,
    bytes: &[u8],
) -> StoredPart {
    let etag = store
        .put_part(key, upload, number, bytes.to_vec())
        .await
        .expect("part");
    assert!(!etag.is_empty(), "part {number} has an ETag");
    StoredPart {
        number,
        etag,
        size: bytes.len() as u64,
    }
}

#[test]
fn parts_stored_by_separate_calls_join_into_the_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garage = Garage::start(&dir.path().join("garage"));
    runtime().block_on(async {
        let store = store_on(&garage).await;
        let key = "videos/p/source";
        let full = MIN_PART_BYTES as usize;
        let first: Vec<u8> = (0..full).map(|i| (i % 251) as u8).collect();
        let second: Vec<u8> = (0..full).map(|i| (i % 241) as u8 ^ 0x5a).collect();
        let last: Vec<u8> = (0..1000).map(|i| (i % 7) as u8 + 1).collect();
        let upload = store.start_parts(key).await.expect("start");
        let mut parts = Vec::new();
        for (number, bytes) in [(1, &first), (2, &second), (3, &last)] {
            parts.push(put_part(&store, key, &upload, number, bytes).await);
        }
        assert!(
            matches!(store.len(key).await, Err(StoreError::NotFound(_))),
            "no object before the join"
        );
        let expected = [first, second, last].concat();
        let len = store.join_parts(key, &upload, &parts).await.expect("join");
        assert_eq!(len, expected.len() as u64);
        assert_eq!(store.len(key).await.expect("len"), len);
        let got = store.get_bytes(key).await.expect("get");
        assert!(got == expected, "the parts in order");
        let at = full as u64 - 2;
        assert_eq!(
            read_range(&store, key, at, 4).await,
            &expected[at as usize..at as usize + 4],
            "across the first boundary"
        );
        // A node that died right after joining: the next joins again.
        assert_eq!(
            store
                .join_parts(key, &upload, &parts)
                .await
                .expect("join again"),
            len
        );
        store
            .abort_parts(key, &upload)
            .await
            .expect("joined is gone");
        assert_eq!(store.get_bytes(key).await.expect("get"), expected);
    });
}

#[test]
fn an_aborted_upload_takes_no_parts_and_aborting_again_is_no_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garage = Garage::start(&dir.path().join("garage"));
    runtime().block_on(async {
        let store = store_on(&garage).await;
        let key = "videos/q/source";
        let upload = store.start_parts(key).await.expect("start");
        let part = put_part(&store, key, &upload, 1, b"early bytes").await;
        store.abort_parts(key, &upload).await.expect("abort");
        let late = store.put_part(key, &upload, 2, vec![1; 100]).await;
        assert!(matches!(late, Err(StoreError::NotFound(_))), "{late:?}");
        store.abort_parts(key, &upload).await.expect("abort twice");
        let joined = store.join_parts(key, &upload, &[part]).await;
        assert!(matches!(joined, Err(StoreError::NotFound(_))), "{joined:?}");
        assert!(matches!(store.len(key).await, Err(StoreError::NotFound(_))));
        assert_eq!(
            store.list("videos/q/").await.expect("list"),
            Vec::<String>::new()
        );
    });
}

#[test]
fn a_small_part_before_the_last_fails_the_join() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garage = Garage::start(&dir.path().join("garage"));
    runtime().block_on(async {
        let store = store_on(&garage).await;
        let key = "videos/r/source";
        let upload = store.start_parts(key).await.expect("start");
        let parts = [
            put_part(&store, key, &upload, 1, &vec![3; 1 << 20]).await,
            put_part(&store, key, &upload, 2, &[4; 10]).await,
        ];
        let joined = store.join_parts(key, &upload, &parts).await;
        assert!(
            matches!(&joined, Err(StoreError::Unavailable(m)) if m.contains("part 1")),
            "{joined:?}"
        );
        assert!(
            matches!(store.len(key).await, Err(StoreError::NotFound(_))),
            "no object"
        );
        let none = store.join_parts(key, &upload, &[]).await;
        assert!(matches!(none, Err(StoreError::Unavailable(_))), "{none:?}");
        store.abort_parts(key, &upload).await.expect("abort");
    });
}

#[test]
fn small_objects_are_written_and_read_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garage = Garage::start(&dir.path().join("garage"));
    runtime().block_on(async {
        let store = store_on(&garage).await;
        let key = "videos/s/upload-tail-12";
        store.put_bytes(key, b"first".to_vec()).await.expect("put");
        store
            .put_bytes(key, b"the tail".to_vec())
            .await
            .expect("replace");
        assert_eq!(store.get_bytes(key).await.expect("get"), b"the tail");
        store
            .put_bytes("videos/s/empty", Vec::new())
            .await
            .expect("put empty");
        assert_eq!(store.get_bytes("videos/s/empty").await.expect("get"), b"");
        let gone = store.get_bytes("videos/s/upload-tail-99").await;
        assert_eq!(
            gone,
            Err(StoreError::NotFound("videos/s/upload-tail-99".into()))
        );
    });
}

#[test]
fn the_server_runs_on_s3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garage = Garage::start(&dir.path().join("garage"));
    let server = on_s3(dir.path(), &garage, "");
    let ready = server.request("GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 200, "{ready:?}");
    let token = server.token("alice");
    let created = server.upload(&token, "filename=a.webm", &webm(dir.path(), 1.0));
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["id"].as_str().expect("id").to_string();
    let video = server.wait_for(&token, &id, |v| v["state"] == "ready");
    let url = video["outputs"]["mp4"]["url"].as_str().expect("url");
    let path = url
        .split_once(server.addr.as_str())
        .map(|(_, p)| p)
        .expect("path");
    let r = server.request("GET", path, &[("Range", "bytes=0-99".into())], b"");
    assert_eq!((r.status, r.body.len()), (206, 100), "{r:?}");
    assert!(
        !server.dir.join("data/objects").exists(),
        "nothing in the file store"
    );
    let store = runtime().block_on(store_on(&garage));
    runtime().block_on(async {
        store
            .len(&format!("videos/{id}/source"))
            .await
            .expect("source");
        // The outputs, under the keys of the run that published them.
        let keys = store
            .list(&format!("videos/{id}/runs/"))
            .await
            .expect("list");
        let names: Vec<&str> = keys.iter().filter_map(|k| k.rsplit('/').next()).collect();
        assert_eq!(names, ["frames.zip", "poster.jpg", "video.mp4"], "{keys:?}");
    });
    let deleted = server.request(
        "DELETE",
        &format!("/v1/videos/{id}"),
        &[("Authorization", format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(deleted.status, 204);
    runtime().block_on(async {
        assert!(
            store.len(&format!("videos/{id}/source")).await.is_err(),
            "every object removed"
        );
        let left = store.list(&format!("videos/{id}/")).await.expect("list");
        assert_eq!(left, Vec::<String>::new());
    });
}

#[test]
fn downloads_can_redirect_to_the_bucket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garage = Garage::start(&dir.path().join("garage"));
    let server = on_s3(dir.path(), &garage, "redirect = true\n");
    let token = server.token("alice");
    let created = server.upload(&token, "filename=a.webm", &webm(dir.path(), 1.0));
    let id = created.json()["id"].as_str().expect("id").to_string();
    let video = server.wait_for(&token, &id, |v| v["state"] == "ready");
    let url = video["outputs"]["mp4"]["url"].as_str().expect("url");
    let path = url
        .split_once(server.addr.as_str())
        .map(|(_, p)| p)
        .expect("path");
    let r = server.request("GET", path, &[], b"");
    assert_eq!(r.status, 302, "{r:?}");
    let to = r.header("location").expect("location").to_string();
    assert!(to.starts_with(&garage.endpoint), "{to}");
    // The bucket serves the range itself, as what it is.
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "-r", "0-99", &to])
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(head.contains("content-type: video/mp4"), "{head}");
    assert!(head.contains("content-length: 100"), "{head}");
    // HEAD is answered by vidmill (a URL presigned for GET refuses HEAD).
    let head = server.request("HEAD", path, &[], b"");
    assert_eq!(head.status, 200, "{head:?}");
    // A bad signature is still refused before any redirect.
    let forged = path.replace("sig=", "sig=0");
    assert_eq!(server.request("GET", &forged, &[], b"").status, 403);
    // The doctor reaches the bucket and follows the redirect for its probe.
    let out = Command::new(env!("CARGO_BIN_EXE_vidmill"))
        .args(["doctor", "--config"])
        .arg(server.dir.join("config.toml"))
        .args(["--url", &format!("http://{}", server.addr)])
        .env("VIDMILL__STORAGE__TYPE", "s3")
        .output()
        .expect("doctor");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("S3 bucket vidmill reachable"), "{report}");
    assert!(report.contains("answered 206"), "{report}");
}

/// Puts `bytes` at a presigned upload the way a client does.
pub(crate) fn put_presigned(upload: &serde_json::Value, bytes: &[u8], dir: &Path) -> String {
    let file = dir.join(format!("put-{}", bytes.len()));
    std::fs::write(&file, bytes).expect("write");
    let mut curl = Command::new("curl");
    curl.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "-T",
    ])
    .arg(&file);
    for (k, v) in upload["headers"].as_object().expect("headers") {
        curl.args(["-H", &format!("{k}: {}", v.as_str().expect("value"))]);
    }
    let out = curl
        .arg(upload["url"].as_str().expect("url"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_direct_upload_goes_to_the_bucket_then_is_completed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garage = Garage::start(&dir.path().join("garage"));
    let server = on_s3(dir.path(), &garage, "");
    let token = server.token("alice");
    let bearer = [("Authorization", format!("Bearer {token}"))];
    let start = |name: &str| {
        let r = server.request(
            "POST",
            &format!("/v1/videos?upload=direct&filename={name}&frames_every=1"),
            &bearer,
            b"",
        );
        assert_eq!(r.status, 201, "{r:?}");
        r.json()
    };

    let created = start("direct.webm");
    assert_eq!(created["state"], "uploading");
    assert_eq!(created["upload"]["method"], "PUT");
    assert!(created["upload"]["expires_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let id = created["id"].as_str().expect("id").to_string();
    let complete = format!("/v1/videos/{id}/complete");
    let early = server.request("POST", &complete, &bearer, b"");
    assert_eq!((early.status, early.code().as_str()), (409, "not-ready"));
    assert_eq!(
        put_presigned(&created["upload"], &webm(dir.path(), 1.0), dir.path()),
        "200"
    );
    let other = server.token("bob");
    let foreign = server.request(
        "POST",
        &complete,
        &[("Authorization", format!("Bearer {other}"))],
        b"",
    );
    assert_eq!(foreign.status, 404);
    let done = server.request("POST", &complete, &bearer, b"");
    assert_eq!(done.status, 200, "{done:?}");
    assert_eq!(done.json()["state"], "queued");
    let ready = server.wait_for(&token, &id, |v| v["state"] == "ready");
    assert_eq!(ready["options"]["frames_every"], 1.0);
    let again = server.request("POST", &complete, &bearer, b"");
    assert_eq!(again.status, 404, "completed once");
    // The URL keeps working for a while, but only for the staging key: the
    // source that was probed cannot be replaced through it.
    let store = runtime().block_on(store_on(&garage));
    let source_len = runtime()
        .block_on(store.len(&format!("videos/{id}/source")))
        .expect("source");
    assert_eq!(
        put_presigned(&created["upload"], &[1u8; 10], dir.path()),
        "200"
    );
    assert_eq!(
        runtime()
            .block_on(store.len(&format!("videos/{id}/source")))
            .expect("source"),
        source_len
    );

    // Not a video: refused, and the object and the record are gone.
    let junk = start("junk.bin");
    let junk_id = junk["id"].as_str().expect("id").to_string();
    assert_eq!(
        put_presigned(&junk["upload"], &[7u8; 5000], dir.path()),
        "200"
    );
    let refused = server.request(
        "POST",
        &format!("/v1/videos/{junk_id}/complete"),
        &bearer,
        b"",
    );
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (415, "unsupported-media")
    );
    assert_eq!(
        server.get(&format!("/v1/videos/{junk_id}"), &token).status,
        404
    );
    let store = runtime().block_on(store_on(&garage));
    assert!(runtime()
        .block_on(store.len(&format!("videos/{junk_id}/source")))
        .is_err());
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
}

#[test]
fn a_direct_upload_is_held_to_the_quotas_and_a_refusal_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garage = Garage::start(&dir.path().join("garage"));
    let source = webm(dir.path(), 1.0);
    let server = Server::start_with_env(
        &dir.path().join("vidmill"),
        &format!(
            "quota_open_uploads = 1\nquota_stored_bytes = {}\n{}",
            source.len() - 1,
            garage.server_toml()
        ),
        &[("VIDMILL__STORAGE__TYPE", "s3")],
    );
    let token = server.token("alice");
    let bearer = [("Authorization", format!("Bearer {token}"))];
    let start = || server.request("POST", "/v1/videos?upload=direct", &bearer, b"");
    let created = start();
    assert_eq!(created.status, 201, "{created:?}");
    let second = start();
    assert_eq!(
        (second.status, second.code().as_str()),
        (422, "limit-exceeded")
    );
    assert_eq!(second.json()["limit"], "limits.quota_open_uploads");

    let created = created.json();
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(
        put_presigned(&created["upload"], &source, dir.path()),
        "200"
    );
    let refused = server.request("POST", &format!("/v1/videos/{id}/complete"), &bearer, b"");
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (413, "limit-exceeded")
    );
    assert_eq!(refused.json()["limit"], "limits.quota_stored_bytes");
    assert_eq!(server.get(&format!("/v1/videos/{id}"), &token).status, 404);
    let store = runtime().block_on(store_on(&garage));
    for name in ["direct-upload", "source"] {
        assert!(
            runtime()
                .block_on(store.len(&format!("videos/{id}/{name}")))
                .is_err(),
            "{name} left behind"
        );
    }
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
}
