//! Outputs are written under a temporary name beside their final path and
//! renamed only when complete, so a reader never sees half a file; the
//! temporary file is removed on every other path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{MediaError, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file being written. Dropped without [`TempOutput::commit`], it is removed.
#[derive(Debug)]
pub(crate) struct TempOutput {
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl TempOutput {
    /// Reserves a temporary path in `target`'s directory (same filesystem, so
    /// the final rename is atomic).
    pub(crate) fn new(target: &Path) -> Result<Self> {
        let name = target
            .file_name()
            .ok_or_else(|| MediaError::Invalid(format!("{} is not a file path", target.display())))?
            .to_string_lossy();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = target.with_file_name(format!(".{name}.{}-{n}.vidmill-tmp", std::process::id()));
        Ok(Self {
            temp,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.temp
    }

    /// A sibling scratch path (e.g. the muxer's faststart buffer), removed
    /// together with this output.
    pub(crate) fn scratch(&self, suffix: &str) -> PathBuf {
        let mut s = self.temp.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    }

    /// Flushes the file to disk and moves it to its final name.
    pub(crate) fn commit(mut self) -> Result<u64> {
        let file = std::fs::File::open(&self.temp).map_err(|e| MediaError::io(&self.temp, e))?;
        file.sync_all().map_err(|e| MediaError::io(&self.temp, e))?;
        let len = file
            .metadata()
            .map_err(|e| MediaError::io(&self.temp, e))?
            .len();
        std::fs::rename(&self.temp, &self.target).map_err(|e| MediaError::io(&self.target, e))?;
        self.committed = true;
        Ok(len)
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
        let _ = std::fs::remove_file(self.scratch(".moov"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_output_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("out.mp4");
        {
            let out = TempOutput::new(&target).expect("temp");
            std::fs::write(out.path(), b"partial").expect("write");
            std::fs::write(out.scratch(".moov"), b"scratch").expect("write");
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
    }

    #[test]
    fn committed_output_appears_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("out.mp4");
        let out = TempOutput::new(&target).expect("temp");
        std::fs::write(out.path(), b"done").expect("write");
        assert_eq!(out.commit().expect("commit"), 4);
        assert_eq!(std::fs::read(&target).expect("read"), b"done");
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 1);
    }
}
