//! Still-image encoding of decoded frames through one long-lived
//! `appsrc ! jpegenc ! appsink` (frames converted to JFIF's colours first,
//! see `jfif`) or `appsrc ! videoconvert ! pngenc ! appsink` pipeline, so a
//! job pays for building the encoder once, not per frame.

use std::time::Duration;

use gst::prelude::*;

use super::jfif::ToJfif;
use crate::colour::JPEG_COLORIMETRY;
use crate::error::{MediaError, Result};
use crate::frames::ImageFormat;
use crate::graph::{format_filter, make};
use crate::runner::shut_down;

/// Longest one image may take to encode (a 4K PNG is the slow case).
const ENCODE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct ImageEncoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    caps: Option<gst::Caps>,
    /// JPEG: how frames of the current caps become JFIF, and the layout
    /// they are written in.
    to_jfif: Option<(ToJfif, gst_video::VideoInfo)>,
    format: ImageFormat,
}

impl std::fmt::Debug for ImageEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageEncoder").finish_non_exhaustive()
    }
}

impl ImageEncoder {
    pub(crate) fn new(format: ImageFormat, jpeg_quality: u32) -> Result<Self> {
        let src = gst_app::AppSrc::builder()
            .format(gst::Format::Time)
            .is_live(false)
            .build();
        let sink = gst_app::AppSink::builder().sync(false).build();
        let pipeline = gst::Pipeline::new();
        let chain: Vec<gst::Element> = match format {
            ImageFormat::Jpeg => {
                let encoder = make("jpegenc")?;
                encoder.set_property("quality", jpeg_quality.clamp(1, 100) as i32);
                vec![src.clone().upcast(), encoder, sink.clone().upcast()]
            }
            ImageFormat::Png => {
                // PNG is RGB, made by videoconvert from the frame's own
                // colorimetry.
                let convert = make("videoconvert")?;
                convert.set_property("n-threads", 0u32);
                vec![
                    src.clone().upcast(),
                    convert,
                    format_filter("RGB")?,
                    make("pngenc")?,
                    sink.clone().upcast(),
                ]
            }
        };
        pipeline.add_many(&chain)?;
        gst::Element::link_many(&chain)?;
        pipeline.set_state(gst::State::Playing)?;
        Ok(Self {
            pipeline,
            src,
            sink,
            caps: None,
            to_jfif: None,
            format,
        })
    }

    /// Encodes one decoded frame.
    pub(crate) fn encode(&mut self, frame: &gst::Sample) -> Result<Vec<u8>> {
        let buffer = frame
            .buffer_owned()
            .ok_or_else(|| MediaError::Pipeline("frame without a buffer".into()))?;
        let caps = frame
            .caps()
            .ok_or_else(|| MediaError::Pipeline("frame without caps".into()))?;
        if self.caps.as_ref().is_none_or(|c| c.as_ref() != caps) {
            self.set_input_caps(caps.to_owned())?;
        }
        let buffer = match &self.to_jfif {
            Some((to_jfif, out_info)) => {
                let in_info = gst_video::VideoInfo::from_caps(caps)
                    .map_err(|e| MediaError::Pipeline(format!("frame caps: {e}")))?;
                jfif_frame(to_jfif, &buffer, &in_info, out_info)?
            }
            None => buffer,
        };
        self.src
            .push_buffer(buffer)
            .map_err(|e| MediaError::Pipeline(format!("image encoder refused a frame: {e:?}")))?;
        let timeout = gst::ClockTime::from_nseconds(ENCODE_TIMEOUT.as_nanos() as u64);
        let Some(sample) = self.sink.try_pull_sample(timeout) else {
            return Err(self.failure());
        };
        let buffer = sample
            .buffer()
            .ok_or_else(|| MediaError::Pipeline("encoded image without data".into()))?;
        let map = buffer
            .map_readable()
            .map_err(|e| MediaError::Pipeline(format!("map encoded image: {e}")))?;
        Ok(map.as_slice().to_vec())
    }

    /// New frame caps: for JPEG, a new conversion and the caps of the
    /// converted frames; for PNG, the caps as they are.
    fn set_input_caps(&mut self, caps: gst::Caps) -> Result<()> {
        let src_caps = match self.format {
            ImageFormat::Jpeg => {
                let info = gst_video::VideoInfo::from_caps(&caps)
                    .map_err(|e| MediaError::Pipeline(format!("frame caps: {e}")))?;
                let colorimetry = JPEG_COLORIMETRY
                    .parse::<gst_video::VideoColorimetry>()
                    .map_err(|e| MediaError::Pipeline(format!("JFIF colorimetry: {e}")))?;
                let out_info =
                    gst_video::VideoInfo::builder(info.format(), info.width(), info.height())
                        .fps(info.fps())
                        .colorimetry(&colorimetry)
                        .build()
                        .map_err(|e| MediaError::Pipeline(format!("JFIF frame layout: {e}")))?;
                let out_caps = out_info
                    .to_caps()
                    .map_err(|e| MediaError::Pipeline(format!("JFIF frame caps: {e}")))?;
                self.to_jfif = Some((ToJfif::for_frames(&info)?, out_info));
                out_caps
            }
            ImageFormat::Png => caps.clone(),
        };
        self.src.set_caps(Some(&src_caps));
        self.caps = Some(caps);
        Ok(())
    }

    fn failure(&self) -> MediaError {
        let bus_error = self.pipeline.bus().and_then(|bus| {
            bus.pop_filtered(&[gst::MessageType::Error])
                .and_then(|m| match m.view() {
                    gst::MessageView::Error(e) => Some(format!("{} ({:?})", e.error(), e.debug())),
                    _ => None,
                })
        });
        MediaError::Pipeline(format!(
            "image encoder produced nothing: {}",
            bus_error.unwrap_or_else(|| "timed out".into())
        ))
    }
}

/// One frame in JFIF's colours, in a new buffer laid out as `out_info`.
fn jfif_frame(
    to_jfif: &ToJfif,
    buffer: &gst::Buffer,
    in_info: &gst_video::VideoInfo,
    out_info: &gst_video::VideoInfo,
) -> Result<gst::Buffer> {
    let src = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), in_info)
        .map_err(|_| MediaError::Pipeline("cannot read a decoded frame".into()))?;
    let mut out = gst::Buffer::with_size(out_info.size())
        .map_err(|e| MediaError::Pipeline(format!("frame buffer: {e}")))?;
    {
        let out_ref = out
            .get_mut()
            .ok_or_else(|| MediaError::Pipeline("new frame buffer not writable".into()))?;
        out_ref.set_pts(buffer.pts());
        let mut dst = gst_video::VideoFrameRef::from_buffer_ref_writable(out_ref, out_info)
            .map_err(|_| MediaError::Pipeline("cannot write a JFIF frame".into()))?;
        to_jfif.convert(&src, &mut dst)?;
    }
    Ok(out)
}

impl Drop for ImageEncoder {
    fn drop(&mut self) {
        shut_down(&self.pipeline);
    }
}
