//! The slowest request body accepted (`server.min_body_bytes_per_second`
//! over periods of `server.body_idle_timeout_seconds`): a body must bring
//! its quota of bytes within each period, and a new period starts when it
//! has. A client trickling bytes to hold a connection and a handler (a
//! slow-loris body) is cut off within two periods; one that keeps to the
//! rate, however slowly its link goes, is never cut. Also what a handler
//! makes of a body that broke off: too slow (408) or interrupted (400).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::error::ApiError;
use crate::app::App;

/// The body broke the rate: what ends it, and what handlers look for.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {0} bytes per second")]
pub struct TooSlow(pub u64);

/// The rule every request body keeps.
#[derive(Debug, Clone, Copy)]
pub struct MinRate {
    /// Bytes per second, averaged over `period`.
    pub rate: u64,
    pub period: Duration,
}

impl MinRate {
    /// Bytes due within each period: at least one, so silence is a breach.
    fn quota(&self) -> u64 {
        let due = u128::from(self.rate) * self.period.as_millis() / 1000;
        u64::try_from(due).unwrap_or(u64::MAX).max(1)
    }
}

/// A request body held to a [`MinRate`].
struct RateLimited {
    body: Body,
    rule: MinRate,
    /// Bytes received in the current period.
    received: u64,
    /// The end of the current period. The first starts when the handler
    /// first asks for the body (which is when a client that sent `Expect:
    /// 100-continue` is told to send it), not when the request arrived.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl RateLimited {
    fn new(body: Body, rule: MinRate) -> Self {
        Self {
            body,
            rule,
            received: 0,
            deadline: None,
        }
    }

    fn deadline(&mut self) -> Pin<&mut Sleep> {
        let period = self.rule.period;
        self.deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(period)))
            .as_mut()
    }

    fn new_period(&mut self) {
        self.received = 0;
        let next = Instant::now() + self.rule.period;
        self.deadline().reset(next);
    }
}

impl HttpBody for RateLimited {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    // A period that ended while nobody was reading (the
                    // handler busy elsewhere) is no fault of the client's.
                    if this.deadline().is_elapsed() {
                        this.new_period();
                    }
                    this.received += data.len() as u64;
                    if this.received >= this.rule.quota() {
                        this.new_period();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(this.deadline().poll(cx));
                Poll::Ready(Some(Err(axum::Error::new(TooSlow(this.rule.rate)))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Middleware: every request body keeps `server.min_body_bytes_per_second`.
pub async fn enforce(State(app): State<App>, request: Request, next: Next) -> Response {
    let s = &app.config.server;
    let rule = MinRate {
        rate: s.min_body_bytes_per_second,
        period: Duration::from_secs(s.body_idle_timeout_seconds),
    };
    next.run(request.map(|body| Body::new(RateLimited::new(body, rule))))
        .await
}

/// What a handler answers when reading a request body failed: 408 when it
/// was too slow, else 400 `upload-interrupted` (the client went away or
/// broke the framing). Looks through wrapping errors (axum, multipart).
pub fn broken_body(error: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(TooSlow(rate)) = e.downcast_ref::<TooSlow>() {
            return ApiError::BodyTooSlow(*rate);
        }
        cause = e.source();
    }
    tracing::debug!(error = %error, "request body ended early");
    ApiError::UploadInterrupted
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn rule(rate: u64, millis: u64) -> MinRate {
        MinRate {
            rate,
            period: Duration::from_millis(millis),
        }
    }

    /// A body that yields `chunk` bytes every `every`, `count` times.
    fn trickle(chunk: usize, every: Duration, count: usize) -> Body {
        let stream = futures_util::stream::iter(0..count).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; chunk]))
        });
        Body::from_stream(stream)
    }

    async fn read_all(body: Body) -> Result<usize, ApiError> {
        let mut stream = body.into_data_stream();
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            total += chunk.map_err(|e| broken_body(&e))?.len();
        }
        Ok(total)
    }

    #[test]
    fn the_quota_is_the_rate_over_the_period_and_never_zero() {
        assert_eq!(rule(1024, 60_000).quota(), 61_440);
        assert_eq!(rule(1000, 1_500).quota(), 1_500);
        assert_eq!(rule(0, 60_000).quota(), 1);
    }

    #[tokio::test]
    async fn a_body_that_keeps_the_rate_is_read_whole() {
        // 100 bytes every 20 ms is 5000 B/s, well above 1000 B/s.
        let body = Body::new(RateLimited::new(
            trickle(100, Duration::from_millis(20), 20),
            rule(1000, 200),
        ));
        assert_eq!(read_all(body).await.ok(), Some(2000));
    }

    #[tokio::test]
    async fn a_trickling_body_is_cut_off_as_too_slow() {
        // 1 byte every 50 ms is 20 B/s, far below 1000 B/s.
        let body = Body::new(RateLimited::new(
            trickle(1, Duration::from_millis(50), 1000),
            rule(1000, 200),
        ));
        let started = std::time::Instant::now();
        assert!(matches!(
            read_all(body).await,
            Err(ApiError::BodyTooSlow(1000))
        ));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn the_first_period_starts_when_the_body_is_first_read() {
        let body = Body::new(RateLimited::new(
            trickle(100, Duration::from_millis(10), 5),
            rule(1000, 100),
        ));
        // The handler is busy for three periods before it reads.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(read_all(body).await.ok(), Some(500));
    }

    #[tokio::test]
    async fn a_silent_body_is_cut_off_even_with_no_rate() {
        let body = Body::new(RateLimited::new(
            trickle(1, Duration::from_secs(3600), 1),
            rule(0, 100),
        ));
        assert!(matches!(
            read_all(body).await,
            Err(ApiError::BodyTooSlow(0))
        ));
    }
}
