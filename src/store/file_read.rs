//! Reading the file store's objects by range: one positional read
//! (`pread`) per chunk on the blocking pool, straight into the buffer that
//! goes to the socket. tokio's file type would read into its own buffer and
//! copy from there, one more pass over every byte served.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use vidmill_actors::{BlobObject, BoxFuture, ByteChunks, StoreError};

/// Bytes per read: a typical player range in one blocking-pool hop, and a
/// bound on the memory one response holds at a time.
const CHUNK: u64 = 1 << 20;

/// An open file with its length and modification time.
#[derive(Debug)]
pub struct FileObject {
    file: Arc<std::fs::File>,
    len: u64,
    modified: SystemTime,
}

/// Opens `path` and reads its metadata in one blocking-pool hop.
pub async fn open(path: &Path) -> io::Result<FileObject> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let meta = file.metadata()?;
        Ok(FileObject {
            file: Arc::new(file),
            len: meta.len(),
            modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        })
    })
    .await
    .map_err(io::Error::other)?
}

impl BlobObject for FileObject {
    fn size_bytes(&self) -> u64 {
        self.len
    }

    fn modified(&self) -> SystemTime {
        self.modified
    }

    fn range(&self, start: u64, count: u64) -> Box<dyn ByteChunks> {
        Box::new(FileRange {
            file: self.file.clone(),
            at: start,
            left: count,
        })
    }
}

/// What is left of a range being read.
struct FileRange {
    file: Arc<std::fs::File>,
    at: u64,
    left: u64,
}

impl ByteChunks for FileRange {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            if self.left == 0 {
                return Ok(None);
            }
            let (file, at, n) = (self.file.clone(), self.at, self.left.min(CHUNK) as usize);
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, at).map(|()| buf)
            })
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
            match read {
                Ok(buf) => {
                    self.at += n as u64;
                    self.left -= n as u64;
                    Ok(Some(buf))
                }
                Err(e) => {
                    // A failed read ends the range.
                    self.left = 0;
                    Err(StoreError::Unavailable(format!("read: {e}")))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_range_streams_exactly_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(3 * CHUNK as usize + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).expect("write");
        let file = open(&path).await.expect("open");
        assert_eq!(file.size_bytes(), data.len() as u64);
        for (start, count) in [
            (0, data.len() as u64),
            (5, 1),
            (CHUNK - 3, CHUNK + 10),
            (data.len() as u64 - 1, 1),
            (7, 0),
        ] {
            let mut got = Vec::new();
            let mut chunks = file.range(start, count);
            while let Some(chunk) = chunks.next_chunk().await.expect("chunk") {
                assert!(chunk.len() as u64 <= CHUNK);
                got.extend_from_slice(&chunk);
            }
            assert_eq!(
                got,
                &data[start as usize..(start + count) as usize],
                "{start}+{count}"
            );
        }
    }
}
