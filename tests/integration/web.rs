//! The web page in a real browser (Debian's chromium driven by
//! playwright-core): sign in, upload, watch it become ready live, play it.

use std::path::Path;

use crate::support::{webm, Server};

#[test]
fn the_page_is_served_with_a_strict_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let r = server.request("GET", "/", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").expect("csp");
    assert!(
        csp.contains("script-src 'sha256-") && !csp.contains("script-src 'unsafe"),
        "{csp}"
    );
    assert!(String::from_utf8_lossy(&r.body).contains("<title>vidmill</title>"));
}

#[test]
fn a_user_uploads_watches_and_plays_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("alice");
    let file = dir.path().join("beach day.webm");
    std::fs::write(&file, webm(dir.path(), 2.0)).expect("write");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients/web-page.mjs");
    let out = std::process::Command::new("node")
        .arg(script)
        .arg(format!("http://{}", server.addr))
        .arg(&token)
        .arg(&file)
        .output()
        .expect("node (`make test-clients` installs it, playwright-core and chromium)");
    assert!(
        out.status.success(),
        "the browser run failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(seen["name"], "beach day.webm");
    assert_eq!(
        seen["hashAfterSignIn"], "",
        "the token leaves the address bar"
    );
    assert!(
        seen["currentTime"].as_f64().is_some_and(|t| t >= 0.5),
        "did not play: {seen}"
    );
    assert!(seen["videoWidth"].as_u64().is_some_and(|w| w > 0), "{seen}");
    let links = seen["links"].as_array().expect("links");
    assert!(
        links
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("/frames.zip?"))),
        "{seen}"
    );
    assert_eq!(seen["errors"], serde_json::json!([]), "console errors");
}
