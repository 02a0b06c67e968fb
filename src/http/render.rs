//! The video resource as API.md shows it: options, source, progress with
//! queue position, and outputs with signed URLs. Every field is bounded
//! (the file name too, whatever an older record holds), so a page of the
//! listing (at most 500 videos) stays within a few KiB per video.

use serde_json::{json, Value};
use vidmill_actors::{Outputs, StateEvent, Video, VideoState};

use super::upload::MAX_FILENAME_BYTES;
use crate::app::App;

pub fn outputs(app: &App, video: &Video, outputs: &Outputs) -> Value {
    let mut map = serde_json::Map::new();
    if let Some(m) = &outputs.mp4 {
        map.insert("mp4".into(), json!({
            "url": app.signed_url(video, "video.mp4"), "size_bytes": m.size_bytes, "duration": m.duration,
            "width": m.width, "height": m.height, "method": m.method,
        }));
    }
    if let Some(f) = &outputs.frames {
        map.insert("frames".into(), json!({
            "url": app.signed_url(video, "frames.zip"), "size_bytes": f.size_bytes, "count": f.count, "every": f.every,
        }));
    }
    if let Some(p) = &outputs.poster {
        map.insert(
            "poster".into(),
            json!({"url": app.signed_url(video, "poster.jpg"), "size_bytes": p.size_bytes}),
        );
    }
    Value::Object(map)
}

/// The video resource; `queue_position` for queued videos when known.
pub fn video(app: &App, v: &Video, queue_position: Option<usize>) -> Value {
    let progress = app
        .handle
        .progress(&v.id)
        .filter(|_| v.state == VideoState::Processing);
    let percent = match v.state {
        VideoState::Ready => 100.0,
        VideoState::Uploading => app.uploads.percent(&v.id).unwrap_or(0.0),
        _ => progress.as_ref().map_or(0.0, |p| p.percent),
    };
    json!({
        "id": v.id,
        "filename": shown_name(&v.filename),
        "state": v.state,
        "stage": v.stage,
        "progress": {
            "percent": percent,
            "speed": progress.as_ref().map(|p| p.speed),
            "eta_seconds": progress.as_ref().and_then(|p| p.eta_seconds),
            "queue_position": queue_position.filter(|_| v.state == VideoState::Queued),
        },
        "attempts": v.attempts,
        "created_at": v.created_at,
        "updated_at": v.updated_at,
        "options": v.options,
        "source": v.source,
        "outputs": outputs(app, v, &v.outputs),
        "error": v.error,
    })
}

/// The file name cut to [`MAX_FILENAME_BYTES`] on a character boundary:
/// uploads are refused longer names, but records from before that rule
/// may hold names of any length (a review listed 500 videos with 250 KB
/// names as a 75 MB answer).
fn shown_name(name: &str) -> &str {
    let mut end = name.len().min(MAX_FILENAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// A `state` WebSocket message.
pub fn state_event(app: &App, video: &Video, e: &StateEvent) -> Value {
    json!({
        "type": "state", "video_id": e.video_id, "seq": e.seq, "state": e.state, "stage": e.stage,
        "error": e.error, "outputs": outputs(app, video, &e.outputs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_stored_name_is_shown_cut_on_a_character_boundary() {
        assert_eq!(shown_name("holiday.mov"), "holiday.mov");
        let long = "é".repeat(200_000);
        let shown = shown_name(&long);
        assert_eq!(shown.len(), 254, "127 two-byte characters");
        assert!(long.starts_with(shown));
    }
}
