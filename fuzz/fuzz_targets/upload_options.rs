//! The upload options of `POST /v1/videos` (`src/http/upload.rs`
//! `parse_options`) from any query string, decoded as axum's `Query` does
//! (`serde_urlencoded` into a map), then held to the frames limit as the
//! handler does once the source's duration is known. Accepted options are
//! what API.md allows: at least one output, each once; `frames_every` a
//! finite number of seconds in [0.01, 86400]; a known format and accuracy.
//! A refusal names an option.
//! Input: 8 bytes of source duration (f64, little-endian), then the query.

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use vidmill::fuzzing::parse_options;
use vidmill::http::error::ApiError;
use vidmill_pipelines::{frame_count, MediaLimits, MIN_EVERY};

fuzz_target!(|data: &[u8]| {
    let Some((duration, query)) = data.split_first_chunk::<8>() else {
        return;
    };
    let duration = f64::from_le_bytes(*duration);
    let Ok(query) = serde_urlencoded::from_bytes::<HashMap<String, String>>(query) else {
        return;
    };
    let options = match parse_options(&query, 10.0) {
        Ok(o) => o,
        Err(ApiError::InvalidOption { name, .. }) => {
            assert!(!name.is_empty());
            return;
        }
        Err(e) => panic!("{query:?}: not an option error: {e:?}"),
    };
    assert!(!options.outputs.is_empty(), "{query:?}");
    for (i, kind) in options.outputs.iter().enumerate() {
        assert!(!options.outputs[..i].contains(kind), "{query:?}");
    }
    let every = options.frames_every;
    assert!(
        every.is_finite() && (MIN_EVERY..=86_400.0).contains(&every),
        "{query:?}: {every}"
    );
    if let Some(asked) = query.get("frames_every") {
        assert_eq!(asked.parse::<f64>().ok(), Some(every), "{query:?}");
    }
    assert!(matches!(options.frames_format.as_str(), "jpeg" | "png"));
    if let Some(asked) = query.get("frames_format") {
        let kept = if asked == "jpg" { "jpeg" } else { asked };
        assert_eq!(options.frames_format, kept, "{query:?}");
    }
    assert!(matches!(
        options.frames_accuracy.as_str(),
        "exact" | "keyframe"
    ));
    let limits = MediaLimits::default();
    if limits.check_frames(every, Some(duration)).is_ok() && duration.is_finite() && duration > 0.0 {
        let n = frame_count(every, duration);
        assert!(n <= limits.max_frames, "{every} over {duration}: {n}");
    }
});
