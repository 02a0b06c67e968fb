//! What probing learns about a source file, in the terms API.md uses.

use serde::Serialize;

use crate::colour::Colour;

/// How the picture must be turned for display (from the container's rotation
/// matrix or orientation tag).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Orientation {
    /// Clockwise degrees: 0, 90, 180 or 270.
    pub rotation: u32,
    /// Mirrored horizontally before rotating.
    pub flipped: bool,
}

impl Orientation {
    /// Parses GStreamer's `image-orientation` tag value.
    pub fn from_tag(tag: &str) -> Self {
        let (flipped, rest) = match tag.strip_prefix("flip-") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        let rotation = match rest {
            "rotate-90" => 90,
            "rotate-180" => 180,
            "rotate-270" => 270,
            _ => 0,
        };
        Self { rotation, flipped }
    }

    pub fn is_identity(self) -> bool {
        self == Self::default()
    }

    /// A quarter turn swaps width and height.
    pub fn swaps_axes(self) -> bool {
        self.rotation % 180 == 90
    }

    /// `videoflip`'s `video-direction` value that makes the picture upright.
    pub(crate) fn flip_method(self) -> &'static str {
        match (self.flipped, self.rotation) {
            (false, 90) => "90r",
            (false, 180) => "180",
            (false, 270) => "90l",
            (false, _) => "identity",
            // Mirrored, then turned: (x, y) → (−x, y) → (−y, −x) for 90°,
            // the anti-diagonal transpose; (y, x) for 270°, the diagonal one
            // (what ffmpeg shows for a [0 1; 1 0] display matrix).
            (true, 90) => "ur-ll",
            (true, 180) => "vert",
            (true, 270) => "ul-lr",
            (true, _) => "horiz",
        }
    }
}

/// The video stream of a source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct VideoFacts {
    /// Short codec name: h264, hevc, vp8, vp9, av1, mpeg4, mpeg2video,
    /// mpeg1video, mjpeg, png, jpeg2000, theora, or the caps name when
    /// unknown.
    pub codec: String,
    /// Codec profile as the parser reports it (e.g. "high", "high-10").
    pub profile: Option<String>,
    /// ffmpeg-style pixel format when it can be told (e.g. "yuv420p").
    pub pixel_format: Option<String>,
    /// Bits per luma sample, when the parser reports it.
    pub bit_depth: Option<u32>,
    /// Chroma subsampling ("4:2:0", "4:4:4"), when the parser reports it.
    pub chroma_format: Option<String>,
    /// Coded width and height, before rotation.
    pub width: u32,
    pub height: u32,
    pub pixel_aspect_ratio: (u32, u32),
    pub orientation: Orientation,
    /// Nominal frames per second; `None` for variable frame rate.
    pub frame_rate: Option<f64>,
    pub interlaced: bool,
    /// Mean seconds between keyframes over the first part of the stream.
    pub keyframe_spacing: Option<f64>,
    /// Range, matrix, transfer and primaries, as far as the stream says.
    pub colour: Colour,
}

/// Codecs that code each picture as a still image: their streams carry
/// image/* caps (see `probe`).
const STILL_CODECS: &[&str] = &["mjpeg", "png", "jpeg2000", "gif", "bmp", "tiff", "webp"];

impl VideoFacts {
    /// Whether the video is coded as a sequence of still images.
    pub fn is_still_codec(&self) -> bool {
        STILL_CODECS.contains(&self.codec.as_str())
    }

    /// Display width and height: rotation applied.
    pub fn display_size(&self) -> (u32, u32) {
        if self.orientation.swaps_axes() {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// The audio stream of a source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct AudioFacts {
    /// Short codec name: aac, mp3, opus, vorbis, ac3, pcm, ...
    pub codec: String,
    pub channels: u32,
    pub sample_rate: u32,
}

/// Everything probing learns about a source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct MediaFacts {
    /// Container: mp4, quicktime, matroska, webm, avi, mpegts, ogg, flv, ...
    pub container: String,
    /// Seconds, when the container tells.
    pub duration: Option<f64>,
    /// Stream time in seconds of the earliest packet of any stream: where
    /// a player's clock (and the MP4, and frame times) start. Non-zero for
    /// MPEG program and transport streams and other captures.
    pub start: f64,
    /// Whether a seek lands on the frame asked for: the container has an
    /// index (MP4, MOV, Matroska with cues and a duration). Fragmented MP4,
    /// MPEG streams, FLV and Matroska written live are searched by guessing
    /// at byte offsets, and AVI keeps no presentation times to seek by:
    /// frames are then decoded straight through.
    pub seekable: bool,
    pub size_bytes: u64,
    pub video: VideoFacts,
    pub audio: Option<AudioFacts>,
}

impl MediaFacts {
    pub fn duration(&self) -> Option<std::time::Duration> {
        self.duration
            .filter(|d| d.is_finite() && *d > 0.0)
            .map(std::time::Duration::from_secs_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientation_tags_parse() {
        assert_eq!(Orientation::from_tag("rotate-90").rotation, 90);
        let f = Orientation::from_tag("flip-rotate-270");
        assert!(f.flipped && f.rotation == 270 && f.swaps_axes());
        assert!(Orientation::from_tag("rotate-0").is_identity());
        assert_eq!(Orientation::from_tag("rotate-180").flip_method(), "180");
        assert_eq!(
            Orientation::from_tag("flip-rotate-270").flip_method(),
            "ul-lr"
        );
        assert_eq!(
            Orientation::from_tag("flip-rotate-90").flip_method(),
            "ur-ll"
        );
    }
}
