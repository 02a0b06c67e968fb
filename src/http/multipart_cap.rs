//! A cap on what a multipart form may hold before its `file` part
//! (`server.max_header_bytes`): the form parser keeps the preamble, part
//! headers and fields before the file in memory while it looks for their
//! ends, so a part header that never ends would otherwise grow memory by
//! all that is sent.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Bytes;

use super::error::ApiError;

/// What a multipart form may hold before its `file` part's bytes start
/// broke `server.max_header_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("the form holds more than {0} bytes of part headers and fields before its `file` part")]
struct FormPrefixTooLarge(usize);

/// A multipart body as the form parser reads it, failing once the parser
/// asks for more although it already holds `cap` bytes and has not found
/// the `file` part.
#[derive(Debug)]
pub struct FormPrefixCap<S> {
    inner: S,
    fed: usize,
    cap: usize,
    file_found: Arc<AtomicBool>,
}

impl<S> FormPrefixCap<S> {
    /// `inner` capped at `cap` bytes until [`FileFound::mark`] is called.
    pub fn new(inner: S, cap: usize) -> (Self, FileFound) {
        let file_found = Arc::new(AtomicBool::new(false));
        let cap = Self {
            inner,
            fed: 0,
            cap,
            file_found: file_found.clone(),
        };
        (cap, FileFound(file_found))
    }
}

/// Lifts the cap once the `file` part is found: its bytes stream through.
#[derive(Debug)]
pub struct FileFound(Arc<AtomicBool>);

impl FileFound {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl<S, E> futures_util::Stream for FormPrefixCap<S>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<axum::BoxError>,
{
    type Item = Result<Bytes, axum::BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.fed > this.cap && !this.file_found.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(FormPrefixTooLarge(this.cap).into())));
        }
        let next = ready!(Pin::new(&mut this.inner).poll_next(cx));
        if let Some(Ok(chunk)) = &next {
            this.fed = this.fed.saturating_add(chunk.len());
        }
        Poll::Ready(next.map(|r| r.map_err(Into::into)))
    }
}

/// What a broken form or body answers: a form too large before its file,
/// a body too slow, or one cut off.
pub fn form_error(e: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(too_large) = c.downcast_ref::<FormPrefixTooLarge>() {
            return ApiError::InvalidOption {
                name: "body",
                why: format!("{too_large}; put the `file` part first"),
            };
        }
        cause = c.source();
    }
    super::body_rate::broken_body(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn chunks(
        n: usize,
        size: usize,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter((0..n).map(move |_| Ok(Bytes::from(vec![b'a'; size]))))
    }

    #[tokio::test]
    async fn the_cap_holds_until_the_file_is_found() {
        let (mut capped, _found) = FormPrefixCap::new(chunks(10, 1000), 2500);
        let mut read = 0;
        let err = loop {
            match capped.next().await {
                Some(Ok(c)) => read += c.len(),
                Some(Err(e)) => break e,
                None => panic!("no cap"),
            }
        };
        assert_eq!(read, 3000, "one chunk past the cap, no more");
        assert!(matches!(
            form_error(err.as_ref()),
            ApiError::InvalidOption { name: "body", .. }
        ));
    }

    #[tokio::test]
    async fn the_files_bytes_stream_through() {
        let (capped, found) = FormPrefixCap::new(chunks(10, 1000), 2500);
        found.mark();
        let total: usize = capped
            .map(|c| c.map(|c| c.len()).unwrap_or(0))
            .fold(0, |a, n| async move { a + n })
            .await;
        assert_eq!(total, 10_000);
    }
}
