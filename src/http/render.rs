//! The video resource as API.md shows it: options, source, progress with
//! queue position, and outputs with signed URLs.

use serde_json::{json, Value};
use vidmill_actors::{Outputs, StateEvent, Video, VideoState};

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
        .latest_progress(&v.id)
        .filter(|_| v.state == VideoState::Processing);
    let percent = match v.state {
        VideoState::Ready => 100.0,
        VideoState::Uploading => app.uploads.percent(&v.id).unwrap_or(0.0),
        _ => progress.as_ref().map_or(0.0, |p| p.percent),
    };
    json!({
        "id": v.id,
        "filename": v.filename,
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

/// A `state` WebSocket message.
pub fn state_event(app: &App, video: &Video, e: &StateEvent) -> Value {
    json!({
        "type": "state", "video_id": e.video_id, "seq": e.seq, "state": e.state, "stage": e.stage,
        "error": e.error, "outputs": outputs(app, video, &e.outputs),
    })
}
