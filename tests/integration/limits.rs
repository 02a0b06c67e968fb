//! Media limits against the real server: what a file declares is refused at
//! upload (422 `limit-exceeded`, the key named, nothing kept), and a file
//! that declares an absurd duration costs only what it really holds.

use std::time::{Duration, Instant};

use crate::support::*;

/// Makes the Matroska `Duration` element of `webm` claim `ms` milliseconds
/// (the default timecode scale): a 1 s file that says it lasts forever.
fn claim_duration(webm: &mut [u8], ms: f64) {
    let at = webm
        .windows(2)
        .position(|w| w == [0x44, 0x89])
        .expect("a Duration element");
    match webm[at + 2] {
        0x88 => webm[at + 3..at + 11].copy_from_slice(&ms.to_be_bytes()),
        0x84 => webm[at + 3..at + 7].copy_from_slice(&(ms as f32).to_be_bytes()),
        size => panic!("Duration of unexpected size {size:#x}"),
    }
}

/// A VP8 WebM of `width`x`height` at `fps`, `seconds` long.
fn webm_of(dir: &std::path::Path, width: u32, height: u32, fps: u32, seconds: f64) -> Vec<u8> {
    use vidmill_pipelines::synth::{self, Container, SynthSpec, VideoCodec};
    let path = dir.join(format!("src-{width}x{height}-{fps}-{seconds}.webm"));
    let spec = SynthSpec {
        width,
        height,
        fps,
        seconds,
        ..SynthSpec::new(VideoCodec::Vp8, Container::Webm)
    };
    synth::generate(&spec, &path).expect("generate");
    std::fs::read(path).expect("read source")
}

/// Asserts a 422 `limit-exceeded` whose `limit` field is `key` (a value,
/// not only words in the detail, which names it too).
fn assert_limit(r: &Response, key: &str) {
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.code(), "limit-exceeded");
    let problem = r.json();
    assert_eq!(problem["limit"], key, "{problem}");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains(key)),
        "{problem}"
    );
}

/// The server of these tests: each media limit small enough for a test
/// file to pass it (a 320x240, 30 fps WebM of 1 s passes none).
const LIMITS: &str =
    "max_duration_seconds = 2.0\nmax_frames = 5\nmax_pixels = 76800\nmax_frame_rate = 30.0\n";

#[test]
fn over_a_declared_limit_the_upload_is_refused_by_name_and_nothing_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The test server's config ends in its `[limits]` table.
    let server = Server::start(dir.path(), LIMITS);
    let token = server.token("limited");
    let long = webm(dir.path(), 4.0);
    let r = server.upload(&token, "filename=long.webm", &long);
    assert_limit(&r, "limits.max_duration_seconds");
    let short = webm(dir.path(), 1.0);
    let r = server.upload(&token, "filename=dense.webm&frames_every=0.1", &short);
    assert_limit(&r, "limits.max_frames");
    let large = webm_of(dir.path(), 640, 360, 30, 1.0);
    let r = server.upload(&token, "filename=large.webm", &large);
    assert_limit(&r, "limits.max_pixels");
    let fast = webm_of(dir.path(), 320, 240, 60, 1.0);
    let r = server.upload(&token, "filename=fast.webm", &fast);
    assert_limit(&r, "limits.max_frame_rate");
    let listed = server.get("/v1/videos", &token).json();
    assert_eq!(
        listed["videos"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
    // Within the limits the same server takes it.
    let r = server.upload(&token, "filename=fine.webm&frames_every=0.5", &short);
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json()["id"].as_str().expect("id").to_string();
    let v = server.wait_for(&token, &id, |v| {
        v["state"] != "queued" && v["state"] != "processing"
    });
    assert_eq!(v["state"], "ready", "{v}");
}

/// Sends `body` as one tus upload with `metadata` (already encoded) and
/// answers the PATCH that carries its last byte.
fn tus_upload(server: &Server, token: &str, metadata: &str, body: &[u8]) -> Response {
    let mut headers = vec![
        ("Authorization", format!("Bearer {token}")),
        ("Tus-Resumable", "1.0.0".to_string()),
    ];
    let mut create = headers.clone();
    create.push(("Upload-Length", body.len().to_string()));
    create.push(("Upload-Metadata", metadata.to_string()));
    let created = server.request("POST", "/v1/uploads", &create, b"");
    assert_eq!(created.status, 201, "{created:?}");
    let location = created.header("location").expect("location").to_string();
    headers.push(("Upload-Offset", "0".into()));
    headers.push(("Content-Type", "application/offset+octet-stream".into()));
    server.request("PATCH", &location, &headers, body)
}

#[test]
fn a_resumable_upload_over_a_limit_is_refused_by_name_on_its_last_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), LIMITS);
    let token = server.token("resumer");
    // `frames_every 0.1` (base64 of `0.1` is `MC4x`).
    let cases = [
        ("", webm(dir.path(), 4.0), "limits.max_duration_seconds"),
        (
            ",frames_every MC4x",
            webm(dir.path(), 1.0),
            "limits.max_frames",
        ),
        (
            "",
            webm_of(dir.path(), 640, 360, 30, 1.0),
            "limits.max_pixels",
        ),
        (
            "",
            webm_of(dir.path(), 320, 240, 60, 1.0),
            "limits.max_frame_rate",
        ),
    ];
    for (extra, body, key) in cases {
        let r = tus_upload(&server, &token, &format!("filename YS53ZWJt{extra}"), &body);
        assert_limit(&r, key);
    }
    let listed = server.get("/v1/videos", &token).json();
    assert_eq!(
        listed["videos"].as_array().map(Vec::len),
        Some(0),
        "refused uploads are removed: {listed}"
    );
}

#[test]
fn a_file_declaring_a_trillion_seconds_costs_what_it_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("liar");
    let mut lying = webm(dir.path(), 1.0);
    claim_duration(&mut lying, 1e15);
    let started = Instant::now();
    let r = server.upload(&token, "filename=forever.webm&frames_every=0.5", &lying);
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json()["id"].as_str().expect("id").to_string();
    let v = server.wait_for(&token, &id, |v| {
        v["state"] != "queued" && v["state"] != "processing"
    });
    // Its packets say 1 s (and a third of a millisecond): that is what it
    // is, frames at 0, 0.5 and 1.0 s and no more.
    assert_eq!(v["state"], "ready", "{v}");
    assert_eq!(v["outputs"]["frames"]["count"], 3, "{v}");
    assert!(
        v["source"]["duration"].as_f64().is_some_and(|d| d < 2.0),
        "{v}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let rss = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .expect("server RSS");
    assert!(rss < 300 * 1024, "server RSS {rss} KiB");
}

#[test]
fn a_direct_upload_over_a_limit_is_refused_by_name_at_completion() {
    use crate::s3::{put_presigned, Garage};
    let dir = tempfile::tempdir().expect("tempdir");
    let garage = Garage::start(&dir.path().join("garage"));
    // The `[limits]` keys before the S3 table, which would take them.
    let server = Server::start_with_env(
        &dir.path().join("vidmill"),
        &format!("{LIMITS}{}", garage.server_toml()),
        &[("VIDMILL__STORAGE__TYPE", "s3")],
    );
    let token = server.token("direct");
    let bearer = [("Authorization", format!("Bearer {token}"))];
    let cases = [
        ("", webm(dir.path(), 4.0), "limits.max_duration_seconds"),
        (
            "&frames_every=0.1",
            webm(dir.path(), 1.0),
            "limits.max_frames",
        ),
        (
            "",
            webm_of(dir.path(), 640, 360, 30, 1.0),
            "limits.max_pixels",
        ),
    ];
    for (options, body, key) in cases {
        let created = server.request(
            "POST",
            &format!("/v1/videos?upload=direct{options}"),
            &bearer,
            b"",
        );
        assert_eq!(created.status, 201, "{created:?}");
        let created = created.json();
        let id = created["id"].as_str().expect("id").to_string();
        assert_eq!(put_presigned(&created["upload"], &body, dir.path()), "200");
        let r = server.request("POST", &format!("/v1/videos/{id}/complete"), &bearer, b"");
        assert_limit(&r, key);
    }
    assert_eq!(
        server.get("/v1/videos", &token).json()["videos"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "refused uploads are removed"
    );
}
