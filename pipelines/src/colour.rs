//! Colour: what range, matrix, transfer and primaries a source's pictures
//! use, and what every output gets. The MP4 is limited range ("TV", 16–235)
//! BT.601 for standard definition or BT.709 otherwise, tagged so; stills
//! are full-range JPEG (JFIF) or RGB PNG, converted, never just relabelled.
//! HDR (BT.2020 with PQ or HLG) is converted to BT.709 SDR by remapping
//! the transfer function and primaries; there is no tone mapping.

use std::str::FromStr;

use gst_video::{VideoColorMatrix, VideoColorPrimaries, VideoColorRange, VideoTransferFunction};
use serde::{Deserialize, Serialize};

/// The colour description of a video stream, as its caps say it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Colour {
    /// Samples span 0–255 instead of 16–235: JPEG-style, "yuvj".
    pub full_range: Option<bool>,
    /// `bt601`, `bt709`, `bt2020`, … (ffmpeg's `color_space` names).
    pub matrix: Option<String>,
    /// `bt709`, `smpte2084` (PQ), `arib-std-b67` (HLG), …
    pub transfer: Option<String>,
    /// `bt709`, `bt470bg`, `smpte170m`, `bt2020`, …
    pub primaries: Option<String>,
}

impl Colour {
    /// Reads GStreamer's `colorimetry` caps field (`bt709`, `2:4:5:4`, …).
    pub(crate) fn from_caps_field(s: &str) -> Self {
        let Ok(c) = gst_video::VideoColorimetry::from_str(s) else {
            return Self::default();
        };
        Self {
            full_range: match c.range() {
                VideoColorRange::Range0_255 => Some(true),
                VideoColorRange::Range16_235 => Some(false),
                _ => None,
            },
            matrix: match c.matrix() {
                VideoColorMatrix::Bt601 | VideoColorMatrix::Smpte240m => Some("bt601".into()),
                VideoColorMatrix::Bt709 => Some("bt709".into()),
                VideoColorMatrix::Bt2020 => Some("bt2020".into()),
                VideoColorMatrix::Rgb => Some("rgb".into()),
                VideoColorMatrix::Fcc => Some("fcc".into()),
                _ => None,
            },
            transfer: match c.transfer() {
                VideoTransferFunction::Bt709
                | VideoTransferFunction::Bt601
                | VideoTransferFunction::Bt202010
                | VideoTransferFunction::Bt202012 => Some("bt709".into()),
                VideoTransferFunction::Smpte2084 => Some("smpte2084".into()),
                VideoTransferFunction::AribStdB67 => Some("arib-std-b67".into()),
                VideoTransferFunction::Srgb => Some("iec61966-2-1".into()),
                VideoTransferFunction::Gamma22 => Some("gamma22".into()),
                VideoTransferFunction::Gamma28 => Some("gamma28".into()),
                _ => None,
            },
            primaries: match c.primaries() {
                VideoColorPrimaries::Bt709 => Some("bt709".into()),
                VideoColorPrimaries::Bt470bg => Some("bt470bg".into()),
                VideoColorPrimaries::Smpte170m => Some("smpte170m".into()),
                VideoColorPrimaries::Bt2020 => Some("bt2020".into()),
                VideoColorPrimaries::Bt470m => Some("bt470m".into()),
                _ => None,
            },
        }
    }

    /// PQ or HLG: pictures meant for an HDR display.
    pub fn is_hdr(&self) -> bool {
        matches!(self.transfer.as_deref(), Some("smpte2084" | "arib-std-b67"))
    }
}

/// What the MP4 (and the frames on their way to an image) are converted
/// to, as a GStreamer colorimetry string. BT.601 stays BT.601 (standard
/// definition, what DVDs, DV and most SD cameras use); everything else,
/// HDR included, becomes BT.709. A source that does not say is taken as
/// players take it: BT.601 below 720 lines, BT.709 from 720 up.
pub(crate) fn mp4_colorimetry(source: &Colour, height: u32) -> &'static str {
    let sd = match source.matrix.as_deref() {
        Some("bt601") => true,
        Some(_) => false,
        None => height < 720,
    };
    if sd && !source.is_hdr() {
        "bt601"
    } else {
        "bt709"
    }
}

/// JFIF: full range with the BT.601 matrix, what every JPEG reader assumes.
pub(crate) const JPEG_COLORIMETRY: &str = "1:4:0:0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_colorimetry_is_read() {
        crate::init().expect("gstreamer");
        let c = Colour::from_caps_field("bt709");
        assert_eq!(c.full_range, Some(false));
        assert_eq!(c.matrix.as_deref(), Some("bt709"));
        let jpeg = Colour::from_caps_field(JPEG_COLORIMETRY);
        assert_eq!(jpeg.full_range, Some(true));
        assert_eq!(jpeg.matrix.as_deref(), Some("bt601"));
        let hlg = Colour::from_caps_field("bt2100-hlg");
        assert!(hlg.is_hdr());
        assert_eq!(hlg.primaries.as_deref(), Some("bt2020"));
        assert_eq!(Colour::from_caps_field("nonsense"), Colour::default());
    }

    #[test]
    fn outputs_are_bt601_for_sd_and_bt709_otherwise() {
        crate::init().expect("gstreamer");
        let unknown = Colour::default();
        assert_eq!(mp4_colorimetry(&unknown, 576), "bt601");
        assert_eq!(mp4_colorimetry(&unknown, 1080), "bt709");
        let sd709 = Colour::from_caps_field("bt709");
        assert_eq!(mp4_colorimetry(&sd709, 480), "bt709");
        let hd601 = Colour::from_caps_field("bt601");
        assert_eq!(mp4_colorimetry(&hd601, 1080), "bt601");
        let pq = Colour::from_caps_field("bt2100-pq");
        assert_eq!(mp4_colorimetry(&pq, 2160), "bt709");
    }
}
