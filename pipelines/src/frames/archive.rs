//! The frames ZIP: images stored (JPEG and PNG do not compress further) as
//! `frames/000001.jpg`, … in order, then `index.csv` describing each.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;

use crate::error::{MediaError, Result};

pub(crate) const INDEX_HEADER: &str =
    "index,requested_seconds,actual_seconds,filename,width,height\n";

pub(crate) struct FrameArchive {
    zip: zip::ZipWriter<BufWriter<File>>,
    index: String,
    extension: &'static str,
    count: u64,
}

impl std::fmt::Debug for FrameArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameArchive")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

fn stored() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false)
}

impl FrameArchive {
    pub(crate) fn create(path: &Path, extension: &'static str) -> Result<Self> {
        let file = File::create(path).map_err(|e| MediaError::io(path, e))?;
        Ok(Self {
            zip: zip::ZipWriter::new(BufWriter::with_capacity(1 << 20, file)),
            index: INDEX_HEADER.to_string(),
            extension,
            count: 0,
        })
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Adds the image for target `k` (zero-based).
    pub(crate) fn add(
        &mut self,
        k: u64,
        requested: f64,
        actual: f64,
        size: (u32, u32),
        image: &[u8],
    ) -> Result<()> {
        let n = k + 1;
        let name = format!("frames/{n:06}.{}", self.extension);
        self.zip
            .start_file(name.as_str(), stored())
            .map_err(zip_error)?;
        self.zip
            .write_all(image)
            .map_err(|e| MediaError::Pipeline(format!("write {name}: {e}")))?;
        self.index.push_str(&format!(
            "{n},{},{},{name},{},{}\n",
            seconds(requested),
            seconds(actual),
            size.0,
            size.1
        ));
        self.count += 1;
        Ok(())
    }

    /// Writes `index.csv` and the central directory.
    pub(crate) fn finish(mut self) -> Result<()> {
        self.zip
            .start_file("index.csv", stored())
            .map_err(zip_error)?;
        self.zip
            .write_all(self.index.as_bytes())
            .map_err(|e| MediaError::Pipeline(format!("write index.csv: {e}")))?;
        let mut out = self.zip.finish().map_err(zip_error)?;
        out.flush()
            .map_err(|e| MediaError::Pipeline(format!("flush frames archive: {e}")))?;
        Ok(())
    }
}

/// Seconds with millisecond precision and no trailing zeros: `2.5`, `0.033`.
fn seconds(s: f64) -> String {
    let t = format!("{s:.3}");
    let t = t.trim_end_matches('0').trim_end_matches('.');
    if t.is_empty() || t == "-0" {
        "0".into()
    } else {
        t.into()
    }
}

fn zip_error(e: zip::result::ZipError) -> MediaError {
    MediaError::Pipeline(format!("frames archive: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_short_and_exact_to_the_millisecond() {
        assert_eq!(seconds(2.5), "2.5");
        assert_eq!(seconds(0.0), "0");
        assert_eq!(seconds(10.0), "10");
        assert_eq!(seconds(0.0333333), "0.033");
    }

    #[test]
    fn archive_holds_frames_then_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.zip");
        let mut a = FrameArchive::create(&path, "jpg").expect("create");
        a.add(0, 0.0, 0.0, (4, 2), b"one").expect("add");
        a.add(1, 2.0, 1.967, (4, 2), b"two").expect("add");
        a.finish().expect("finish");
        let mut z = zip::ZipArchive::new(File::open(&path).expect("open")).expect("zip");
        let names: Vec<String> = (0..z.len())
            .map(|i| {
                z.by_index(i)
                    .expect("entry")
                    .name()
                    .expect("name")
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            ["frames/000001.jpg", "frames/000002.jpg", "index.csv"]
        );
        let mut csv = String::new();
        std::io::Read::read_to_string(&mut z.by_name("index.csv").expect("index"), &mut csv)
            .expect("read");
        assert_eq!(
            csv,
            format!("{INDEX_HEADER}1,0,0,frames/000001.jpg,4,2\n2,2,1.967,frames/000002.jpg,4,2\n")
        );
    }
}
