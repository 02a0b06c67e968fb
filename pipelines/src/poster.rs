//! The poster: one representative frame as a JPEG, taken a little way in so
//! that fade-ins and black leaders are skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::control::Control;
use crate::error::{MediaError, Result};
use crate::facts::MediaFacts;
use crate::frames::{Accuracy, Grabber, ImageEncoder, ImageFormat};
use crate::graph;
use crate::output::TempOutput;

#[derive(Debug, Clone, PartialEq)]
pub struct PosterSpec {
    pub output: PathBuf,
    pub max_height: u32,
    pub jpeg_quality: u32,
}

impl PosterSpec {
    pub fn new(output: impl Into<PathBuf>) -> Self {
        Self {
            output: output.into(),
            max_height: 1080,
            jpeg_quality: 85,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PosterReport {
    pub width: u32,
    pub height: u32,
    /// Stream time of the chosen frame, in seconds.
    pub time: f64,
    pub size_bytes: u64,
}

/// A tenth of the way in, at most 10 s: past intros, early enough to be cheap.
pub fn poster_time(facts: &MediaFacts) -> f64 {
    facts.duration.map_or(0.0, |d| (d * 0.1).min(10.0))
}

pub fn poster(
    input: &Path,
    facts: &MediaFacts,
    spec: &PosterSpec,
    ctl: &Control,
) -> Result<PosterReport> {
    crate::init()?;
    let size = graph::output_size(&facts.video, spec.max_height);
    let mut grabber = Grabber::open(input, facts, size, ctl)?;
    let grabbed = match grabber.grab(poster_time(facts), Accuracy::Exact)? {
        Some(g) => Some(g),
        None => grabber.grab(0.0, Accuracy::Exact)?,
    };
    let (time, sample) =
        grabbed.ok_or_else(|| MediaError::Corrupt("the video yielded no frame".into()))?;
    drop(grabber);
    let image = ImageEncoder::new(ImageFormat::Jpeg, spec.jpeg_quality)?.encode(&sample)?;
    let out = TempOutput::new(&spec.output)?;
    let mut file = std::fs::File::create(out.path()).map_err(|e| MediaError::io(out.path(), e))?;
    file.write_all(&image)
        .map_err(|e| MediaError::io(out.path(), e))?;
    drop(file);
    let size_bytes = out.commit()?;
    Ok(PosterReport {
        width: size.0,
        height: size.1,
        time,
        size_bytes,
    })
}
