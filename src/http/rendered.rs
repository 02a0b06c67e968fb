//! Events rendered once for every subscriber of a video: a state or
//! progress event reaches each of its subscribers' streams (10,000 of them
//! in the fan-out benchmark), and its frame, signed links included, is the
//! same for all of them. The first subscriber to get a video's latest
//! event renders it; the others write the same bytes. A state event
//! carries the video as it was stored, so rendering reads nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use vidmill_actors::ProgressEvent;

/// Bound on the videos remembered; past it the map starts over (a cache).
const MAX_VIDEOS: usize = 10_000;

/// The latest rendered state event (by seq) and progress event (the very
/// one, held so that it is not mistaken for a newer one at its address)
/// of each video, as whole WebSocket frames.
#[derive(Debug, Clone, Default)]
pub struct RenderedEvents(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    states: Mutex<HashMap<String, (u64, Bytes)>>,
    progress: Mutex<HashMap<String, (Arc<ProgressEvent>, Bytes)>>,
}

impl RenderedEvents {
    /// The frame of state event `seq` of `video_id`, made by `render` once
    /// however many subscribers ask. Rendering happens under the lock (it
    /// takes microseconds), so it happens once.
    pub fn state<F>(&self, video_id: &str, seq: u64, render: F) -> Bytes
    where
        F: FnOnce() -> Bytes,
    {
        let Ok(mut map) = self.0.states.lock() else {
            return render();
        };
        if let Some((at, frame)) = map.get(video_id) {
            if *at == seq {
                return frame.clone();
            }
        }
        if map.len() >= MAX_VIDEOS {
            map.clear();
        }
        let frame = render();
        map.insert(video_id.to_string(), (seq, frame.clone()));
        frame
    }

    /// The frame of progress event `event`, made by `render` once.
    pub fn progress<F>(&self, event: &Arc<ProgressEvent>, render: F) -> Bytes
    where
        F: FnOnce() -> Bytes,
    {
        let Ok(mut map) = self.0.progress.lock() else {
            return render();
        };
        if let Some((at, frame)) = map.get(&event.video_id) {
            if Arc::ptr_eq(at, event) {
                return frame.clone();
            }
        }
        if map.len() >= MAX_VIDEOS {
            map.clear();
        }
        let frame = render();
        map.insert(event.video_id.clone(), (event.clone(), frame.clone()));
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use vidmill_actors::VideoState;

    #[tokio::test]
    async fn an_event_is_rendered_once_for_all_its_subscribers() {
        let events = RenderedEvents::default();
        let renders = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (events, renders) = (events.clone(), renders.clone());
            tasks.push(tokio::spawn(async move {
                events.state("v1", 7, || {
                    renders.fetch_add(1, Ordering::SeqCst);
                    Bytes::from("seven")
                })
            }));
        }
        for t in tasks {
            assert_eq!(&t.await.expect("task")[..], b"seven");
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1);
        // A newer event is rendered anew.
        let eight = events.state("v1", 8, || Bytes::from("eight"));
        assert_eq!(&eight[..], b"eight");
    }

    #[test]
    fn a_progress_event_is_rendered_once_and_a_new_one_anew() {
        let events = RenderedEvents::default();
        let p = |percent| {
            Arc::new(ProgressEvent {
                video_id: "v1".into(),
                owner: "alice".into(),
                seq: 3,
                state: VideoState::Processing,
                stage: None,
                percent,
                speed: 1.0,
                eta_seconds: None,
            })
        };
        let (ten, twenty) = (p(10.0), p(20.0));
        assert_eq!(&events.progress(&ten, || Bytes::from("10"))[..], b"10");
        assert_eq!(&events.progress(&ten, || Bytes::from("again"))[..], b"10");
        assert_eq!(&events.progress(&twenty, || Bytes::from("20"))[..], b"20");
    }
}
