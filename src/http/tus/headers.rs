//! The tus 1.0.0 request headers: the protocol version, byte counts and
//! `Upload-Metadata` (comma-separated `key base64(value)` pairs).

use std::collections::HashMap;

use axum::http::HeaderMap;
use base64::Engine;

use crate::http::error::ApiError;

pub const VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration";
/// The only body type a PATCH (or a creation with data) may carry.
pub const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// Every request but OPTIONS must speak tus 1.0.0.
pub fn check_version(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(VERSION) => Ok(()),
        _ => Err(ApiError::TusVersion),
    }
}

/// A non-negative byte count header; `None` when absent.
pub fn byte_count(headers: &HeaderMap, name: &'static str) -> Result<Option<u64>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::InvalidOption {
                    name,
                    why: "expected a number of bytes".into(),
                })
        })
        .transpose()
}

/// Whether the body is upload bytes (`application/offset+octet-stream`).
pub fn carries_bytes(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(OFFSET_STREAM))
}

/// `Upload-Metadata` as a map. Values are standard base64; a key may come
/// without a value. Keys vidmill does not know are kept here and ignored by
/// the caller: stock clients send their own (`filetype`, `relativePath`).
pub fn metadata(headers: &HeaderMap) -> Result<HashMap<String, String>, ApiError> {
    let bad = |why: String| ApiError::InvalidOption {
        name: "Upload-Metadata",
        why,
    };
    let Some(raw) = headers.get("upload-metadata") else {
        return Ok(HashMap::new());
    };
    let raw = raw
        .to_str()
        .map_err(|_| bad("expected ASCII `key base64,...` pairs".into()))?;
    let mut map = HashMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| bad(format!("the value of `{key}` is not base64")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| bad(format!("the value of `{key}` is not UTF-8")))?;
        map.insert(key.to_string(), text);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).expect("header"));
        h
    }

    #[test]
    fn metadata_decodes_pairs_and_bare_keys() {
        // filename "a b.mp4", frames_every "2", a bare key.
        let h = with(
            "upload-metadata",
            "filename YSBiLm1wNA==, frames_every Mg==,is_confidential",
        );
        let m = metadata(&h).expect("parse");
        assert_eq!(m["filename"], "a b.mp4");
        assert_eq!(m["frames_every"], "2");
        assert_eq!(m["is_confidential"], "");
        assert!(metadata(&with("upload-metadata", "filename !!!")).is_err());
        assert!(metadata(&HeaderMap::new()).expect("none").is_empty());
    }

    #[test]
    fn versions_and_counts_are_checked() {
        assert!(check_version(&with("tus-resumable", "1.0.0")).is_ok());
        assert!(check_version(&with("tus-resumable", "0.2.2")).is_err());
        assert!(check_version(&HeaderMap::new()).is_err());
        assert_eq!(
            byte_count(&with("upload-length", "42"), "upload-length").ok(),
            Some(Some(42))
        );
        assert!(byte_count(&with("upload-length", "-1"), "upload-length").is_err());
        assert_eq!(
            byte_count(&HeaderMap::new(), "upload-length").ok(),
            Some(None)
        );
    }
}
