//! Serving accepted connections: at most `server.max_connections_per_ip`
//! per client address, HTTP/1.1 (and HTTP/2 over cleartext only when
//! `server.h2c` is on), a deadline on every request head counted from when
//! the connection opens or last fell idle, a cap on head size, and the
//! drain on shutdown.
//!
//! HTTP/1.1 alone is served by hyper's own connection, whose header timer
//! runs from the first read, so a connection that sends nothing is closed
//! like one that sends half a head. With h2c on, the protocol is detected
//! first (reading up to the 24-byte HTTP/2 preface) and HTTP/2 has no
//! header timer at all, so a watchdog closes any connection that has no
//! request in flight for `header_timeout`: silent ones, preface-only ones,
//! and idle ones alike.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

use crate::config::Server as ServerConfig;
use crate::slots::Slots;

/// How long a connection closed for idleness may take to go; nothing is in
/// flight on it, so this only lets an HTTP/2 GOAWAY reach the client.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// HTTP/2 pings find peers that are gone without closing.
const H2_PING_EVERY: Duration = Duration::from_secs(20);

/// What every connection is served with.
#[derive(Debug, Clone)]
pub struct Connections {
    router: Router,
    header_timeout: Duration,
    max_header_bytes: usize,
    h2c: bool,
    per_ip: Slots<IpAddr>,
    drain: watch::Sender<bool>,
}

impl Connections {
    pub fn new(config: &ServerConfig, router: Router) -> Self {
        Self {
            router,
            header_timeout: Duration::from_secs(config.header_timeout_seconds),
            max_header_bytes: config.max_header_bytes,
            h2c: config.h2c,
            per_ip: Slots::new(config.max_connections_per_ip),
            drain: watch::Sender::new(false),
        }
    }

    /// Serves `stream` in a task of its own, holding `permit` until it
    /// ends; a client already at its connection cap is closed at once.
    pub fn serve<P: Send + 'static>(&self, stream: TcpStream, peer: SocketAddr, permit: P) {
        let Some(slot) = self.per_ip.take(client_of(peer.ip())) else {
            tracing::debug!(%peer, "closing a connection: the client is at its connection cap");
            return;
        };
        let this = self.clone();
        let stop = self.drain.subscribe();
        tokio::spawn(async move {
            if let Err(e) = this.run(stream, peer, stop).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop((slot, permit));
        });
    }

    /// Asks every connection to finish its requests and close, and waits
    /// until they have.
    pub async fn drain(&self) {
        self.drain.send_replace(true);
        self.drain.closed().await;
    }

    async fn run(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        stop: watch::Receiver<bool>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let io = TokioIo::new(stream);
        // The client's address for the handlers (per-address limits), as
        // axum's `ConnectInfo` carries it.
        let router =
            self.router
                .clone()
                .map_request(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                });
        if !self.h2c {
            let mut http1 = hyper::server::conn::http1::Builder::new();
            http1
                .timer(TokioTimer::new())
                .header_read_timeout(self.header_timeout)
                .max_header_size(self.max_header_bytes);
            let service = TowerToHyperService::new(router);
            let conn = http1.serve_connection(io, service).with_upgrades();
            return drive(conn, |c| c.graceful_shutdown(), stop, None).await;
        }
        let activity = Activity::default();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(self.max_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(H2_PING_EVERY)
            .keep_alive_timeout(H2_PING_EVERY);
        let watched = activity.clone();
        let service = tower::service_fn(move |request: hyper::Request<Incoming>| {
            let busy = watched.begin();
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Body::new(WhileSending { body, _busy: busy })),
                )
            }
        });
        let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
        let idle = Some((activity, self.header_timeout));
        drive(conn, |c| c.graceful_shutdown(), stop, idle).await
    }
}

/// Runs `conn` to its end, shutting it down gracefully when the server
/// drains, or when `idle` is given and no request is in flight for its
/// duration (then it gets [`IDLE_CLOSE_GRACE`] to go).
async fn drive<C, E>(
    conn: C,
    shut_down: impl Fn(Pin<&mut C>),
    mut stop: watch::Receiver<bool>,
    idle: Option<(Activity, Duration)>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    C: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        shut_down(conn.as_mut());
    }
    let mut closing_idle = None;
    loop {
        let idle_for = async {
            match &idle {
                Some((activity, limit)) => activity.idle_for(*limit).await,
                None => std::future::pending().await,
            }
        };
        let gone = async {
            match closing_idle {
                Some(by) => tokio::time::sleep_until(by).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = conn.as_mut() => return ended.map_err(Into::into),
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    stopping = true;
                    shut_down(conn.as_mut());
                }
            }
            () = idle_for, if closing_idle.is_none() => {
                tracing::debug!("closing a connection with no request for the header timeout");
                shut_down(conn.as_mut());
                closing_idle = Some(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
            }
            () = gone => return Ok(()),
        }
    }
}

/// Requests in flight on one connection, a response body being sent
/// included.
#[derive(Debug, Clone, Default)]
struct Activity(Arc<ActivityState>);

#[derive(Debug, Default)]
struct ActivityState {
    busy: AtomicUsize,
    changed: Notify,
}

/// One request in flight, until dropped.
#[derive(Debug)]
struct Busy(Activity);

impl Activity {
    fn begin(&self) -> Busy {
        self.0.busy.fetch_add(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.0.busy.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(limit) => return,
                () = changed => {}
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0 .0.busy.fetch_sub(1, Ordering::SeqCst);
        self.0 .0.changed.notify_waiters();
    }
}

/// A response body that keeps its request counted as in flight until it
/// has been sent (or dropped), so a long download is never idle.
struct WhileSending {
    body: Body,
    _busy: Busy,
}

impl HttpBody for WhileSending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client an address belongs to: an IPv4 address (also when mapped
/// into IPv6), or an IPv6 /64, the block one subscriber typically gets, so
/// one client cannot dodge a per-client cap by rotating addresses within it.
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_of(ip("2001:db8:1:2:bbbb::9")), ip("2001:db8:1:2::"));
        assert_eq!(client_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[tokio::test]
    async fn idleness_counts_from_the_end_of_the_last_request() {
        let activity = Activity::default();
        let busy = activity.begin();
        let limit = Duration::from_millis(200);
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle_for(limit).await }
        });
        tokio::time::sleep(limit * 3).await;
        assert!(!idle.is_finished(), "a request in flight is not idle");
        drop(busy);
        let started = std::time::Instant::now();
        idle.await.expect("idle");
        assert!(started.elapsed() >= limit, "{:?}", started.elapsed());
    }
}
