//! State events rendered once for every subscriber of a video: a state
//! event reaches each of its subscribers' streams (10,000 of them in the
//! fan-out benchmark), and its text, signed links included, is the same
//! for all of them. The first subscriber to handle a video's latest event
//! renders it; the others send the same bytes. The event carries the
//! video as it was stored, so rendering reads nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;

/// Bound on the videos remembered; past it the map starts over (a cache).
const MAX_VIDEOS: usize = 10_000;

/// The latest rendered state event of each video, by seq.
#[derive(Debug, Clone, Default)]
pub struct RenderedStates(Arc<Mutex<HashMap<String, (u64, Utf8Bytes)>>>);

impl RenderedStates {
    /// The text of state event `seq` of `video_id`, made by `render` once
    /// however many subscribers ask. Rendering happens under the lock (it
    /// takes microseconds), so it happens once.
    pub fn get_or_render<F>(&self, video_id: &str, seq: u64, render: F) -> Utf8Bytes
    where
        F: FnOnce() -> Utf8Bytes,
    {
        let Ok(mut map) = self.0.lock() else {
            return render();
        };
        if let Some((at, text)) = map.get(video_id) {
            if *at == seq {
                return text.clone();
            }
        }
        if map.len() >= MAX_VIDEOS {
            map.clear();
        }
        let text = render();
        map.insert(video_id.to_string(), (seq, text.clone()));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn an_event_is_rendered_once_for_all_its_subscribers() {
        let states = RenderedStates::default();
        let renders = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (states, renders) = (states.clone(), renders.clone());
            tasks.push(tokio::spawn(async move {
                states.get_or_render("v1", 7, || {
                    renders.fetch_add(1, Ordering::SeqCst);
                    Utf8Bytes::from("seven")
                })
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task").as_str(), "seven");
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1);
        // A newer event is rendered anew.
        let eight = states.get_or_render("v1", 8, || Utf8Bytes::from("eight"));
        assert_eq!(eight.as_str(), "eight");
    }
}
