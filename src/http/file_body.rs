//! A byte range of a file as a response body: one positional read
//! (`pread`) per chunk on the blocking pool, straight into the buffer that
//! goes to the socket. tokio's file type would read into its own buffer and
//! copy from there, one more pass over every byte served.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use axum::body::{Body, Bytes};

/// Bytes per read: a typical player range in one blocking-pool hop, and a
/// bound on the memory one response holds at a time.
const CHUNK: u64 = 1 << 20;

/// An open file with its length and modification time.
#[derive(Debug)]
pub struct OpenFile {
    file: Arc<std::fs::File>,
    pub len: u64,
    pub modified: std::time::SystemTime,
}

/// Opens `path` and reads its metadata in one blocking-pool hop.
pub async fn open(path: &Path) -> io::Result<OpenFile> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let meta = file.metadata()?;
        Ok(OpenFile {
            file: Arc::new(file),
            len: meta.len(),
            modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        })
    })
    .await
    .map_err(io::Error::other)?
}

impl OpenFile {
    /// `count` bytes from `start`, streamed.
    pub fn body(&self, start: u64, count: u64) -> Body {
        let file = self.file.clone();
        let chunks = futures_util::stream::unfold((start, count), move |(at, left)| {
            let file = file.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let n = left.min(CHUNK) as usize;
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    file.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf))
                })
                .await
                .map_err(io::Error::other)
                .and_then(|r| r);
                match read {
                    Ok(bytes) => Some((Ok(bytes), (at + n as u64, left - n as u64))),
                    // The error ends the body; the next poll ends the stream.
                    Err(e) => Some((Err(e), (at, 0))),
                }
            }
        });
        Body::from_stream(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_range_streams_exactly_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(3 * CHUNK as usize + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).expect("write");
        let file = open(&path).await.expect("open");
        assert_eq!(file.len, data.len() as u64);
        for (start, count) in [
            (0, data.len() as u64),
            (5, 1),
            (CHUNK - 3, CHUNK + 10),
            (data.len() as u64 - 1, 1),
            (7, 0),
        ] {
            let mut got = Vec::new();
            let mut stream = file.body(start, count).into_data_stream();
            while let Some(chunk) = stream.next().await {
                got.extend_from_slice(&chunk.expect("chunk"));
            }
            assert_eq!(
                got,
                &data[start as usize..(start + count) as usize],
                "{start}+{count}"
            );
        }
    }
}
