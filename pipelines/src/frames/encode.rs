//! Still-image encoding of decoded frames through one long-lived
//! `appsrc ! videoconvert ! jpegenc|pngenc ! appsink` pipeline, so a job pays
//! for building the encoder once, not per frame.

use std::time::Duration;

use gst::prelude::*;

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
        let convert = make("videoconvert")?;
        convert.set_property("n-threads", 0u32);
        // Both encoders get RGB, made by videoconvert from the frame's own
        // colorimetry. jpegenc would take YUV as it comes and write JFIF,
        // which readers take as full range, so limited-range (16–235)
        // samples came out washed out; and GStreamer 1.22's videoconvert
        // relabels rather than converts a YUV → YUV change of range alone.
        // From RGB, libjpeg makes JFIF's full-range BT.601 itself.
        let filter = format_filter("RGB")?;
        let encoder = match format {
            ImageFormat::Jpeg => {
                let e = make("jpegenc")?;
                e.set_property("quality", jpeg_quality.clamp(1, 100) as i32);
                e
            }
            ImageFormat::Png => make("pngenc")?,
        };
        let sink = gst_app::AppSink::builder().sync(false).build();
        let pipeline = gst::Pipeline::new();
        let chain = [
            src.upcast_ref(),
            &convert,
            &filter,
            &encoder,
            sink.upcast_ref(),
        ];
        pipeline.add_many(chain)?;
        gst::Element::link_many(chain)?;
        pipeline.set_state(gst::State::Playing)?;
        Ok(Self {
            pipeline,
            src,
            sink,
            caps: None,
        })
    }

    /// Encodes one decoded frame.
    pub(crate) fn encode(&mut self, frame: &gst::Sample) -> Result<Vec<u8>> {
        let buffer = frame
            .buffer_owned()
            .ok_or_else(|| MediaError::Pipeline("frame without a buffer".into()))?;
        if let Some(caps) = frame.caps() {
            if self.caps.as_ref().is_none_or(|c| c.as_ref() != caps) {
                self.src.set_caps(Some(&caps.to_owned()));
                self.caps = Some(caps.to_owned());
            }
        }
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

impl Drop for ImageEncoder {
    fn drop(&mut self) {
        shut_down(&self.pipeline);
    }
}
