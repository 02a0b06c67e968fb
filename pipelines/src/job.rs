//! A whole processing job: the MP4 and the frames of one source, with one
//! decode feeding both when the MP4 has to be transcoded anyway.

use std::path::Path;

use serde::Serialize;

use crate::control::Control;
use crate::convert::{self, ConvertReport, ConvertSpec, Method};
use crate::error::Result;
use crate::facts::MediaFacts;
use crate::frames::{self, FrameJob, FramesReport, FramesSpec, Strategy};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSpec {
    pub convert: Option<ConvertSpec>,
    pub frames: Option<FramesSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobReport {
    pub convert: Option<ConvertReport>,
    pub frames: Option<FramesReport>,
}

/// Runs `job` on `input`. A transcode with frames decodes once and feeds a
/// `tee`; a remux copies without decoding, so frames then run on their own.
pub fn run_job(
    input: &Path,
    facts: &MediaFacts,
    job: &JobSpec,
    ctl: &Control,
) -> Result<JobReport> {
    crate::init()?;
    match (&job.convert, &job.frames) {
        (Some(c), Some(f)) if convert::plan(facts, c) == Method::Transcode => {
            let frames = FrameJob::new(facts, f, Strategy::Shared, &ctl.limits)?;
            let converted = convert::transcode_or_remux(input, facts, c, ctl, Some(&frames))?;
            Ok(JobReport {
                convert: Some(converted),
                frames: Some(frames.finish()?),
            })
        }
        (c, f) => {
            let convert = c
                .as_ref()
                .map(|c| convert::convert(input, facts, c, ctl))
                .transpose()?;
            let frames = f
                .as_ref()
                .map(|f| frames::frames(input, facts, f, ctl))
                .transpose()?;
            Ok(JobReport { convert, frames })
        }
    }
}
