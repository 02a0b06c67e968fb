//! The tus request headers (`src/http/tus/headers.rs`): byte counts and
//! `Upload-Metadata` from any header value bytes a client can send.
//! Input: the `Upload-Length` value, a NUL, then the `Upload-Metadata` value.

#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use vidmill::fuzzing::{byte_count, metadata};

fuzz_target!(|data: &[u8]| {
    let (length, meta) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    let mut headers = HeaderMap::new();
    // What hyper would refuse never reaches the handlers.
    if let Ok(v) = HeaderValue::from_bytes(length) {
        headers.insert("upload-length", v);
    }
    if let Ok(v) = HeaderValue::from_bytes(meta) {
        headers.insert("upload-metadata", v);
    }
    if let Ok(Some(n)) = byte_count(&headers, "upload-length") {
        let text = std::str::from_utf8(length).expect("a counted value is text");
        assert_eq!(text.trim().parse::<u64>().ok(), Some(n));
    }
    if let Ok(map) = metadata(&headers) {
        for key in map.keys() {
            assert!(
                !key.is_empty() && !key.contains(',') && !key.contains(' '),
                "{key:?}"
            );
        }
    }
});
