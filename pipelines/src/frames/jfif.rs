//! Decoded 4:2:0 frames to JFIF's colours: YCbCr of any usual matrix and
//! range becomes the full-range BT.601 YCbCr every JPEG reader assumes, in
//! one pass over the planes. jpegenc then takes the 4:2:0 planes as they
//! are; the way through RGB (convert up, libjpeg converting back and
//! subsampling again) cost about 10 ms more per 1080p image. GStreamer
//! 1.22's videoconvert cannot do this: it relabels a change of range alone
//! instead of converting it.

use gst_video::prelude::*;
use gst_video::{VideoColorMatrix, VideoColorRange, VideoFormat, VideoInfo};

use crate::error::{MediaError, Result};

/// Fixed point: 16 fraction bits.
const ONE: f64 = 65536.0;

/// BT.601's luma weights (Kr, Kb): JFIF's matrix.
const BT601: (f64, f64) = (0.299, 0.114);

/// A conversion from one source colorimetry to JFIF: each output sample
/// a weighted sum of the input samples, weights in 16.16 fixed point, so
/// that the loops over the planes are plain arithmetic the compiler
/// vectorises.
pub(crate) struct ToJfif {
    /// Black's luma in the source: 16 (limited) or 0 (full).
    black: i32,
    y_from_y: i32,
    y_from_u: i32,
    y_from_v: i32,
    u_from_u: i32,
    u_from_v: i32,
    v_from_u: i32,
    v_from_v: i32,
}

impl ToJfif {
    /// For frames whose matrix has luma weights `(kr, kb)`, full range or
    /// limited (16–235 luma, 16–240 chroma).
    pub(crate) fn new((kr, kb): (f64, f64), full_range: bool) -> Self {
        let (black, y_span, c_span) = if full_range {
            (0, 255.0, 255.0)
        } else {
            (16, 219.0, 224.0)
        };
        // Columns: what a unit of normalised luma, Pb and Pr in the source
        // becomes in JFIF's (Y, Cb − 128, Cr − 128), by way of RGB (linear,
        // so composing the two matrices is exact).
        let column = |e: [f64; 3]| rgb_to_jfif(ycbcr_to_rgb((kr, kb), e));
        let [a, b, c] = [
            column([1.0, 0.0, 0.0]),
            column([0.0, 1.0, 0.0]),
            column([0.0, 0.0, 1.0]),
        ];
        let per_sample = |weight: f64, span: f64| (weight / span * ONE).round() as i32;
        Self {
            black,
            // Luma does not feed chroma: Kr + Kg + Kb = 1 on both sides.
            y_from_y: per_sample(a[0], y_span),
            y_from_u: per_sample(b[0], c_span),
            y_from_v: per_sample(c[0], c_span),
            u_from_u: per_sample(b[1], c_span),
            u_from_v: per_sample(c[1], c_span),
            v_from_u: per_sample(b[2], c_span),
            v_from_v: per_sample(c[2], c_span),
        }
    }

    /// A chroma pair's share of its luma samples.
    #[inline]
    fn luma_share(&self, u: u8, v: u8) -> i32 {
        self.y_from_u * (u as i32 - 128) + self.y_from_v * (v as i32 - 128)
    }

    #[inline]
    fn luma(&self, y: u8, share: i32) -> u8 {
        to_sample(self.y_from_y * (y as i32 - self.black) + share)
    }

    #[inline]
    fn cb(&self, u: u8, v: u8) -> u8 {
        to_sample(self.u_from_u * (u as i32 - 128) + self.u_from_v * (v as i32 - 128) + MID)
    }

    #[inline]
    fn cr(&self, u: u8, v: u8) -> u8 {
        to_sample(self.v_from_u * (u as i32 - 128) + self.v_from_v * (v as i32 - 128) + MID)
    }

    /// For frames described by `info` (I420), or an error naming what is
    /// not handled.
    pub(crate) fn for_frames(info: &VideoInfo) -> Result<Self> {
        if info.format() != VideoFormat::I420 {
            return Err(MediaError::Pipeline(format!(
                "still images are made from I420, not {}",
                info.format()
            )));
        }
        let colorimetry = info.colorimetry();
        let weights = match colorimetry.matrix() {
            VideoColorMatrix::Bt601 => BT601,
            VideoColorMatrix::Bt709 => (0.2126, 0.0722),
            VideoColorMatrix::Bt2020 => (0.2627, 0.0593),
            VideoColorMatrix::Smpte240m => (0.212, 0.087),
            VideoColorMatrix::Fcc => (0.30, 0.11),
            // Unsaid: as players take it (see `colour::mp4_colorimetry`).
            _ if info.height() < 720 => BT601,
            _ => (0.2126, 0.0722),
        };
        let full = colorimetry.range() == VideoColorRange::Range0_255;
        Ok(Self::new(weights, full))
    }

    /// Converts one frame's planes; `dst` has the same size.
    pub(crate) fn convert(
        &self,
        src: &gst_video::VideoFrameRef<&gst::BufferRef>,
        dst: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<()> {
        let (w, h) = (src.width() as usize, src.height() as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let plane = |i: u32| -> Result<(&[u8], usize)> {
            let data = src
                .plane_data(i)
                .map_err(|e| MediaError::Pipeline(format!("read frame plane {i}: {e}")))?;
            Ok((data, src.plane_stride()[i as usize] as usize))
        };
        let (sy, sy_stride) = plane(0)?;
        let (su, su_stride) = plane(1)?;
        let (sv, sv_stride) = plane(2)?;
        let strides: Vec<usize> = dst.plane_stride().iter().map(|s| *s as usize).collect();
        // Each chroma pair's share of its luma samples, spread over the
        // row's width; then the chroma planes, then luma.
        let mut shares = vec![0i32; ch * w];
        let du = dst
            .plane_data_mut(1)
            .map_err(|e| MediaError::Pipeline(format!("write frame plane 1: {e}")))?;
        for row in 0..ch {
            let (u_row, v_row) = (&su[row * su_stride..][..cw], &sv[row * sv_stride..][..cw]);
            let out = &mut du[row * strides[1]..][..cw];
            for (x, ((o, u), v)) in out.iter_mut().zip(u_row).zip(v_row).enumerate() {
                *o = self.cb(*u, *v);
                let share = self.luma_share(*u, *v);
                shares[row * w + 2 * x] = share;
                if 2 * x + 1 < w {
                    shares[row * w + 2 * x + 1] = share;
                }
            }
        }
        let dv = dst
            .plane_data_mut(2)
            .map_err(|e| MediaError::Pipeline(format!("write frame plane 2: {e}")))?;
        for row in 0..ch {
            let (u_row, v_row) = (&su[row * su_stride..][..cw], &sv[row * sv_stride..][..cw]);
            let out = &mut dv[row * strides[2]..][..cw];
            for ((o, u), v) in out.iter_mut().zip(u_row).zip(v_row) {
                *o = self.cr(*u, *v);
            }
        }
        let dy = dst
            .plane_data_mut(0)
            .map_err(|e| MediaError::Pipeline(format!("write frame plane 0: {e}")))?;
        for row in 0..h {
            let share_row = &shares[(row / 2) * w..][..w];
            let src_row = &sy[row * sy_stride..][..w];
            let out = &mut dy[row * strides[0]..][..w];
            for ((o, y), share) in out.iter_mut().zip(src_row).zip(share_row) {
                *o = self.luma(*y, *share);
            }
        }
        Ok(())
    }
}

/// Chroma's zero, in fixed point.
const MID: i32 = 128 << 16;

/// A fixed-point value rounded to the nearest sample value.
#[inline]
fn to_sample(v: i32) -> u8 {
    ((v + (1 << 15)) >> 16).clamp(0, 255) as u8
}

/// Normalised Y'CbCr (luma 0–1, Pb and Pr ±0.5) of a matrix with luma
/// weights `(kr, kb)` to R'G'B' (0–1).
fn ycbcr_to_rgb((kr, kb): (f64, f64), [y, pb, pr]: [f64; 3]) -> [f64; 3] {
    let r = y + 2.0 * (1.0 - kr) * pr;
    let b = y + 2.0 * (1.0 - kb) * pb;
    let g = (y - kr * r - kb * b) / (1.0 - kr - kb);
    [r, g, b]
}

/// R'G'B' (0–1) to JFIF's Y, Cb − 128 and Cr − 128 (0–255 scale).
fn rgb_to_jfif([r, g, b]: [f64; 3]) -> [f64; 3] {
    let (kr, kb) = BT601;
    let y = kr * r + (1.0 - kr - kb) * g + kb * b;
    [
        255.0 * y,
        255.0 * (b - y) / (2.0 * (1.0 - kb)),
        255.0 * (r - y) / (2.0 * (1.0 - kr)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixel(t: &ToJfif, y: u8, u: u8, v: u8) -> (u8, u8, u8) {
        (t.luma(y, t.luma_share(u, v)), t.cb(u, v), t.cr(u, v))
    }

    #[test]
    fn limited_bt601_is_stretched_to_full_range() {
        let t = ToJfif::new(BT601, false);
        assert_eq!(pixel(&t, 16, 128, 128), (0, 128, 128));
        assert_eq!(pixel(&t, 235, 128, 128), (255, 128, 128));
        assert_eq!(pixel(&t, 126, 128, 128), (128, 128, 128));
        assert_eq!(pixel(&t, 126, 240, 128), (128, 255, 128));
    }

    #[test]
    fn full_range_bt601_is_left_alone() {
        let t = ToJfif::new(BT601, true);
        for (y, u, v) in [(0, 0, 255), (77, 200, 31), (255, 128, 128)] {
            assert_eq!(pixel(&t, y, u, v), (y, u, v));
        }
    }

    #[test]
    fn bt709_colours_keep_their_rgb() {
        // Limited BT.709 red (R'G'B' = 1, 0, 0) is Y 63, Cb 102, Cr 240;
        // JFIF red is Y 76, Cb 85, Cr 255.
        let t = ToJfif::new((0.2126, 0.0722), false);
        let (y, u, v) = pixel(&t, 63, 102, 240);
        assert!(y.abs_diff(76) <= 1 && u.abs_diff(85) <= 1 && v.abs_diff(255) <= 1);
        // Grey stays grey: the matrix only matters where there is colour.
        assert_eq!(pixel(&t, 126, 128, 128), (128, 128, 128));
    }
}
