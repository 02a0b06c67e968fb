//! Multipart uploads as `POST /v1/videos` reads them (`src/http/upload.rs`):
//! the form parser behind the part-header cap (`src/http/multipart_cap.rs`)
//! and the file-name check, on any body cut into any chunks. In memory: no
//! temp file, no server.
//! Input: the boundary, a NUL, then the body; a byte 0xFF in the body ends
//! a chunk (the parser must hold up wherever the network splits a body).

#![no_main]

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use libfuzzer_sys::fuzz_target;
use vidmill::fuzzing::{filename, form_error, FormPrefixCap, MAX_FILENAME_BYTES};

/// Small, so that the cap is reached by inputs the fuzzer can afford.
const CAP: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some(at) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (boundary, body) = (&data[..at], &data[at + 1..]);
    let Ok(boundary) = std::str::from_utf8(boundary) else {
        return;
    };
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .split(|&b| b == 0xFF)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let Ok(request) = Request::builder()
        .method("POST")
        .uri("/v1/videos")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(())
    else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let (capped, file_found) = FormPrefixCap::new(futures_util::stream::iter(chunks), CAP);
        let (parts, ()) = request.into_parts();
        let request = Request::from_parts(parts, Body::from_stream(capped));
        let Ok(mut form) = Multipart::from_request(request, &()).await else {
            return;
        };
        loop {
            let mut field = match form.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => return,
                Err(e) => {
                    form_error(&e);
                    return;
                }
            };
            if field.name() != Some("file") {
                continue;
            }
            file_found.mark();
            if let Ok(name) = filename(field.file_name()) {
                assert!(!name.is_empty() && name.len() <= MAX_FILENAME_BYTES);
            }
            loop {
                match field.chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return,
                    Err(e) => {
                        form_error(&e);
                        return;
                    }
                }
            }
        }
    });
});
