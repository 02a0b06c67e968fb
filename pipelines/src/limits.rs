//! Media limits: how long, how large and how dense a source may be, and how
//! many images one archive may hold. A small file can declare anything (a
//! duration of 10^12 s, 30000×30000 pictures), so each limit is checked
//! twice: against what the container declares, at probe time, and against
//! what decoding actually finds, while a job runs. A limit passed fails
//! with `LimitExceeded`, which says which [`Limit`] (as a value, so callers
//! need not read it back out of the message) and whose message names the
//! limit's configuration key.

use serde::{Deserialize, Serialize};

use crate::error::{MediaError, Result};
use crate::facts::MediaFacts;
use crate::frames::frame_count;

/// The name of the details structure on a bus error that a limit posted,
/// so the runner tells it from any other pipeline error.
pub(crate) const LIMIT_DETAILS: &str = "vidmill-limit";

/// The field of those details that holds the limit's key.
pub(crate) const LIMIT_FIELD: &str = "limit";

/// Which media limit a source passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    Duration,
    Pixels,
    FrameRate,
    Frames,
}

impl Limit {
    const ALL: [Self; 4] = [Self::Duration, Self::Pixels, Self::FrameRate, Self::Frames];

    /// The limit's configuration key, as problem bodies name it.
    pub const fn key(self) -> &'static str {
        match self {
            Self::Duration => "limits.max_duration_seconds",
            Self::Pixels => "limits.max_pixels",
            Self::FrameRate => "limits.max_frame_rate",
            Self::Frames => "limits.max_frames",
        }
    }

    /// The limit whose key is `key` (how a limit travels on the bus).
    pub(crate) fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.key() == key)
    }

    fn exceeded(self, why: String) -> MediaError {
        MediaError::LimitExceeded { limit: self, why }
    }
}

/// What one source may be. The defaults fit one VM (8K, 240 fps, 12 hours)
/// and are the `[limits]` defaults of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MediaLimits {
    /// Longest source, in seconds.
    pub max_duration: f64,
    /// Most pixels in one picture (width × height).
    pub max_pixels: u64,
    /// Highest nominal frame rate, in frames per second.
    pub max_frame_rate: f64,
    /// Most images in one frames archive.
    pub max_frames: u64,
}

impl Default for MediaLimits {
    fn default() -> Self {
        Self {
            max_duration: 12.0 * 3600.0,
            max_pixels: 8192 * 4320,
            max_frame_rate: 240.0,
            max_frames: 20_000,
        }
    }
}

impl MediaLimits {
    /// No limits: for reading back vidmill's own outputs and for tools.
    pub const fn unlimited() -> Self {
        Self {
            max_duration: f64::INFINITY,
            max_pixels: u64::MAX,
            max_frame_rate: f64::INFINITY,
            max_frames: u64::MAX,
        }
    }

    /// Holds what a probe found (as declared) to the limits.
    pub fn check_source(&self, facts: &MediaFacts) -> Result<()> {
        if let Some(d) = facts.duration.filter(|d| d.is_finite()) {
            self.check_media_time(d)?;
        }
        self.check_picture(facts.video.width, facts.video.height)?;
        if let Some(fps) = facts.video.frame_rate {
            if fps > self.max_frame_rate {
                return Err(Limit::FrameRate.exceeded(format!(
                    "the video declares {fps:.0} frames per second, more than the limit of {:.0} (limits.max_frame_rate)",
                    self.max_frame_rate
                )));
            }
        }
        Ok(())
    }

    /// Holds a frames request (`every` seconds over `duration`) to the
    /// archive limit.
    pub fn check_frames(&self, every: f64, duration: Option<f64>) -> Result<()> {
        let Some(duration) = duration.filter(|d| d.is_finite() && *d > 0.0) else {
            return Ok(());
        };
        if every > 0.0 && duration / every > self.max_frames as f64 {
            return Err(self.too_many_frames(frame_count(every, duration)));
        }
        Ok(())
    }

    pub(crate) fn too_many_frames(&self, count: u64) -> MediaError {
        Limit::Frames.exceeded(format!(
            "a frame every so often makes {count} images, more than the limit of {} (limits.max_frames); ask for a longer frames_every",
            self.max_frames
        ))
    }

    /// A picture of `width` × `height`.
    pub(crate) fn check_picture(&self, width: u32, height: u32) -> Result<()> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels {
            return Err(Limit::Pixels.exceeded(format!(
                "the video's pictures are {width}x{height}, more than the limit of {} pixels (limits.max_pixels)",
                self.max_pixels
            )));
        }
        Ok(())
    }

    /// Media time reached (declared, or decoded so far), in seconds.
    pub(crate) fn check_media_time(&self, seconds: f64) -> Result<()> {
        if seconds > self.max_duration {
            return Err(Limit::Duration.exceeded(format!(
                "the video lasts more than the limit of {:.0} s (limits.max_duration_seconds)",
                self.max_duration
            )));
        }
        Ok(())
    }
}

/// Watches, from now on, every video parser and decoder that joins
/// `pipeline` (inside parsebin and decodebin too) with `watch_pictures`.
pub(crate) fn watch_new_elements(pipeline: &gst::Pipeline, limits: MediaLimits) {
    use gst::prelude::*;
    pipeline.connect("deep-element-added", false, move |args| {
        let element = args.get(2).and_then(|v| v.get::<gst::Element>().ok())?;
        let factory = element.factory()?;
        let klass = factory.klass();
        let pictures = klass.contains("Video") || klass.contains("Image");
        if pictures && (klass.contains("Parser") || klass.contains("Decoder")) {
            if let Some(pad) = element.static_pad("src") {
                watch_pictures(&pad, limits);
            }
        }
        None
    });
}

/// Watches the pictures a stream's caps announce (a parser's, as headers
/// arrive: an MJPEG stream may change size with any frame) and stops the
/// stream, before anything is decoded, when one is over the limit.
pub(crate) fn watch_pictures(pad: &gst::Pad, limits: MediaLimits) {
    use gst::prelude::*;
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| {
        let Some(gst::EventView::Caps(caps)) = info.event().map(|e| e.view()) else {
            return gst::PadProbeReturn::Ok;
        };
        let size = caps
            .caps()
            .structure(0)
            .and_then(|s| Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?)));
        let Some((w, h)) = size else {
            return gst::PadProbeReturn::Ok;
        };
        let Err(e) = limits.check_picture(w.max(0) as u32, h.max(0) as u32) else {
            return gst::PadProbeReturn::Ok;
        };
        if let Some(element) = pad.parent_element() {
            let details = match &e {
                MediaError::LimitExceeded { limit, .. } => gst::Structure::builder(LIMIT_DETAILS)
                    .field(LIMIT_FIELD, limit.key())
                    .build(),
                _ => gst::Structure::new_empty(LIMIT_DETAILS),
            };
            let message = gst::message::Error::builder(gst::StreamError::Failed, &e.to_string())
                .details(details)
                .src(&element)
                .build();
            let _ = element.post_message(message);
        }
        // Consumed: nothing downstream negotiates, so nothing allocates.
        gst::PadProbeReturn::Handled
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::VideoFacts;

    fn facts(duration: f64, width: u32, height: u32, fps: f64) -> MediaFacts {
        MediaFacts {
            duration: Some(duration),
            video: VideoFacts {
                width,
                height,
                frame_rate: Some(fps),
                ..VideoFacts::default()
            },
            ..MediaFacts::default()
        }
    }

    /// Named twice: as the typed limit and in the message.
    fn named(r: Result<()>, key: &str) -> bool {
        matches!(r, Err(MediaError::LimitExceeded { limit, why }) if limit.key() == key && why.contains(key))
    }

    #[test]
    fn every_limit_is_found_by_its_key() {
        for l in Limit::ALL {
            assert_eq!(Limit::from_key(l.key()), Some(l));
        }
        assert_eq!(Limit::from_key("limits.max_upload_bytes"), None);
    }

    #[test]
    fn a_source_within_the_limits_passes() {
        let l = MediaLimits::default();
        assert!(l.check_source(&facts(3600.0, 3840, 2160, 60.0)).is_ok());
        assert!(l.check_source(&facts(10.0, 7680, 4320, 30.0)).is_ok());
    }

    #[test]
    fn each_limit_is_named_when_passed() {
        let l = MediaLimits::default();
        assert!(named(
            l.check_source(&facts(1e12, 640, 360, 30.0)),
            "limits.max_duration_seconds"
        ));
        assert!(named(
            l.check_source(&facts(10.0, 30000, 30000, 30.0)),
            "limits.max_pixels"
        ));
        assert!(named(
            l.check_source(&facts(10.0, 640, 360, 1000.0)),
            "limits.max_frame_rate"
        ));
        assert!(named(
            l.check_frames(0.01, Some(36000.0)),
            "limits.max_frames"
        ));
        assert!(l.check_frames(10.0, Some(36000.0)).is_ok());
        assert!(l.check_frames(0.5, None).is_ok());
    }
}
