//! WebSocket events (API.md "WebSocket events"): refused before the upgrade
//! when the token is bad (401) or the video is not the caller's (404); then
//! a snapshot, replayed state events after `since`, and live events.
//! Progress may be coalesced, state events never dropped; a client that
//! stops reading is closed with 1013, one that sends frames over 64 KiB
//! with 1009; pings go out every 20 s.
//!
//! The upgrade is axum's checks and hyper's upgrade; after it the stream
//! speaks the protocol itself (`frame`), so that the hub can write one
//! event's frame to thousands of sockets directly (`stream`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use vidmill_actors::Catchup;

use super::error::ApiError;
use super::identity::{authenticate, bearer, client, query_token};
use super::openapi as doc;
use super::render;
use crate::app::App;
use crate::slots::Slot;

mod frame;
mod stream;

use stream::{End, Shared, StreamOutlet, Writer};

const PING_EVERY: Duration = Duration::from_secs(20);
/// A client that has not answered two pings is gone.
const PONG_DEADLINE: Duration = Duration::from_secs(45);
const MAX_FRAME: usize = 64 << 10;
/// What a stream reads the client's frames into at a time: clients send
/// next to nothing (pongs), and a larger frame is read in pieces.
const READ_CHUNK: usize = 512;
/// How long a closing frame may take to go out.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Identity from the header or, for browsers, `?access_token=`, once the
/// page the request comes from may open WebSockets here (`origin`).
#[derive(Debug)]
pub struct WsIdentity(String);

impl FromRequestParts<App> for WsIdentity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        super::origin::check(app, &parts.headers)?;
        let token = bearer(&parts.headers)
            .map(String::from)
            .or_else(|| query_token(parts));
        let who = authenticate(
            app,
            client(parts.extensions.get()),
            token.as_deref(),
            "send a bearer token or ?access_token=",
        )
        .await?;
        Ok(Self(who.sub))
    }
}

/// `?since=`: a sequence number as the catalog stores them, so at most
/// `i64::MAX` (a larger one can name no event and must not reach SQL).
fn since(query: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    query
        .get("since")
        .map(|s| {
            s.parse::<u64>()
                .ok()
                .filter(|n| i64::try_from(*n).is_ok())
                .ok_or_else(|| ApiError::InvalidOption {
                    name: "since",
                    why: format!("expected a sequence number from 0 to {}", i64::MAX),
                })
        })
        .transpose()
}

/// One video's events (WebSocket)
///
/// Upgrades to a WebSocket that sends JSON text frames (schema
/// `EventMessage`): a `snapshot` of the video, every `state` event after
/// `?since=` in order, then live `progress` and `state` events. The server
/// pings every 20 s; frames over 64 KiB close the connection (1009), a client
/// that does not read is closed with 1013.
#[utoipa::path(
    get,
    path = "/v1/videos/{id}/events",
    tag = "events",
    params(
        ("id" = String, Path, description = "Video id"),
        ("since" = Option<u64>, Query, description = "Replay the `state` events after this `seq` first"),
    ),
    responses(
        (status = 101, description = "Switching protocols: the event stream (`EventMessage` text frames)"),
        (status = 400, description = "`invalid-option`: bad `since`", body = doc::Problem,
            content_type = "application/problem+json"),
        (status = 401, description = "`invalid-token`, refused before the upgrade", body = doc::Problem,
            content_type = "application/problem+json"),
        (status = 403, description = "`origin-not-allowed`: a page of another origin, refused before the upgrade",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`video-not-found` (also for another owner's video), refused before the upgrade",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit-exceeded`: the caller has `limits.quota_websocket_connections` streams open",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 426, description = "Not a WebSocket upgrade request"),
        (status = 429, description = "`rate-limited`, with `Retry-After`", body = doc::Problem,
            content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("access_token" = [])),
)]
pub async fn video_events(
    State(app): State<App>,
    WsIdentity(owner): WsIdentity,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    let slot = app.quotas.websocket(&owner)?;
    let since = since(&query)?;
    let stream = Stream::new(&app);
    let catchup = app
        .handle
        .attach(&owner, Some(&id), since, stream.outlet())
        .await?;
    Ok(accept(stream, owner, catchup, upgrade, slot))
}

/// All own videos' events (WebSocket)
///
/// Like the per-video stream, for every video of the caller: first a
/// `snapshot` of each one not yet `ready` or `failed`, then live events.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    responses(
        (status = 101, description = "Switching protocols: the event stream (`EventMessage` text frames)"),
        (status = 401, description = "`invalid-token`, refused before the upgrade", body = doc::Problem,
            content_type = "application/problem+json"),
        (status = 403, description = "`origin-not-allowed`: a page of another origin, refused before the upgrade",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit-exceeded`: the caller has `limits.quota_websocket_connections` streams open",
            body = doc::Problem, content_type = "application/problem+json"),
        (status = 426, description = "Not a WebSocket upgrade request"),
        (status = 429, description = "`rate-limited`, with `Retry-After`", body = doc::Problem,
            content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("access_token" = [])),
)]
pub async fn owner_events(
    State(app): State<App>,
    WsIdentity(owner): WsIdentity,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    let slot = app.quotas.websocket(&owner)?;
    let stream = Stream::new(&app);
    let catchup = app
        .handle
        .attach(&owner, None, None, stream.outlet())
        .await?;
    Ok(accept(stream, owner, catchup, upgrade, slot))
}

/// A WebSocket upgrade request as axum checks it (the same refusals),
/// keeping hyper's upgrade for the stream to take the socket itself.
#[derive(Debug)]
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        // axum checks the request; without hyper's upgrade to take, it
        // ends on "not upgradable" only when every check before passed.
        let on_upgrade = parts.extensions.remove::<OnUpgrade>();
        let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned();
        match WebSocketUpgrade::from_request_parts(parts, state).await {
            Err(WebSocketUpgradeRejection::ConnectionNotUpgradable(_)) => {}
            Err(rejection) => return Err(rejection.into_response()),
            // Cannot be without the upgrade; refused as axum would.
            Ok(_) => {}
        }
        match (key, on_upgrade) {
            (Some(key), Some(on_upgrade)) => Ok(Self { key, on_upgrade }),
            _ => Err(StatusCode::UPGRADE_REQUIRED.into_response()),
        }
    }
}

/// An event stream before and after the upgrade; ending it (dropping it)
/// lets the hub drop its outlet and closes the socket.
#[derive(Debug)]
struct Stream(std::sync::Arc<Shared>);

impl Stream {
    fn new(app: &App) -> Self {
        Self(Shared::new(app.clone()))
    }

    fn outlet(&self) -> Box<dyn vidmill_actors::Outlet> {
        Box::new(StreamOutlet(self.0.clone()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// Answers the upgrade and runs the stream, which holds `slot` (its place
/// in the owner's WebSocket quota) until it closes.
fn accept(
    stream: Stream,
    owner: String,
    catchup: Catchup,
    upgrade: Upgrade,
    slot: Slot<String>,
) -> Response {
    let Upgrade { key, on_upgrade } = upgrade;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!(owner, error = %e, "websocket upgrade failed"),
        };
        let app = stream.0.app().clone();
        app.metrics.ws_opened();
        let reason = run(&stream, upgraded, catchup).await;
        tracing::debug!(owner, reason, "websocket closed");
        app.metrics.ws_closed();
        drop(stream);
        drop(slot);
    });
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// How long a client may keep the server's sends waiting, in total, before
/// it counts as not reading. Waits add up and are forgiven at one second in
/// six of time between sends, so a client on a slow link that keeps up is
/// never closed, while one that stopped reading is closed even though the
/// kernel lets a little more through now and then (it grows the socket's
/// send buffer whenever the stuck peer answers a window probe, which would
/// keep any single send from waiting long).
#[derive(Debug)]
struct SendBudget {
    owed: Duration,
    last_end: Instant,
}

impl SendBudget {
    const LIMIT: Duration = Duration::from_secs(10);
    const FORGIVE_ONE_IN: u32 = 6;

    fn new(now: Instant) -> Self {
        Self {
            owed: Duration::ZERO,
            last_end: now,
        }
    }

    /// How long the send starting `now` may wait.
    fn allowance(&mut self, now: Instant) -> Duration {
        let forgiven = now.saturating_duration_since(self.last_end) / Self::FORGIVE_ONE_IN;
        self.owed = self.owed.saturating_sub(forgiven);
        Self::LIMIT.saturating_sub(self.owed)
    }

    fn spent(&mut self, waited: Duration, now: Instant) {
        self.owed += waited;
        self.last_end = now;
    }
}

/// The socket's two halves (the TCP stream's own when it is one, so that
/// reading and writing share no lock), and what the client sent before
/// the upgrade was answered.
fn halves(upgraded: Upgraded) -> (Box<dyn AsyncRead + Send + Unpin>, Writer, Bytes) {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (read, write) = parts.io.into_inner().into_split();
            (Box::new(read), Box::new(write), parts.read_buf)
        }
        Err(upgraded) => {
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            (Box::new(read), Box::new(write), Bytes::new())
        }
    }
}

/// Sends the catch-up, then serves the stream until it ends; why it ended.
async fn run(stream: &Stream, upgraded: Upgraded, catchup: Catchup) -> &'static str {
    let shared = &stream.0;
    let (mut read, writer, early) = halves(upgraded);
    shared.upgraded(writer);
    send_catchup(shared, catchup).await;
    let mut reader = frame::Reader::new(MAX_FRAME);
    let mut incoming = Vec::new();
    if reader.feed(&early, &mut incoming).is_err() {
        return close(shared, 1009, "frame too large or malformed", "bad frame").await;
    }
    drop(early);
    let mut buf = [0u8; READ_CHUNK];
    let mut budget = SendBudget::new(Instant::now());
    // When frames started waiting for the socket, and how long they may.
    let mut blocked: Option<(Instant, Instant)> = None;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_pong = Instant::now();
    loop {
        for message in incoming.drain(..) {
            match message {
                frame::Incoming::Ping(payload) => {
                    shared.send_pong(frame::encode(frame::PONG, &payload));
                }
                frame::Incoming::Pong => last_pong = Instant::now(),
                frame::Incoming::Close(_) => {
                    return close(shared, 1000, "", "client closed").await;
                }
            }
        }
        let (waiting, end) = shared.status();
        match end {
            Some(End::Dropped) => {
                return close(
                    shared,
                    1013,
                    "too slow: events were not read",
                    "dropped by the hub",
                )
                .await
            }
            Some(End::Gone | End::Closed) => return "client gone",
            None => {}
        }
        if waiting && blocked.is_none() {
            let now = Instant::now();
            blocked = Some((now, now + budget.allowance(now)));
        }
        let deadline = blocked.map(|(_, by)| tokio::time::Instant::from_std(by));
        tokio::select! {
            drained = std::future::poll_fn(|cx| shared.poll_drain(cx)), if waiting => match drained {
                Ok(()) => {
                    if let Some((since, _)) = blocked.take() {
                        let now = Instant::now();
                        budget.spent(now - since, now);
                    }
                }
                Err(_) => return "client gone",
            },
            () = sleep_until(deadline), if deadline.is_some() => {
                return close(shared, 1013, "too slow: events were not read", "slow").await;
            }
            () = shared.woken() => {}
            got = read.read(&mut buf) => match got {
                Ok(0) | Err(_) => return "client closed",
                Ok(n) => {
                    if reader.feed(&buf[..n], &mut incoming).is_err() {
                        return close(shared, 1009, "frame too large or malformed", "bad frame").await;
                    }
                }
            },
            _ = ping.tick() => {
                if last_pong.elapsed() > PONG_DEADLINE {
                    return close(shared, 1001, "no pong", "no pong").await;
                }
                shared.send(frame::encode(frame::PING, b""));
            }
        }
    }
}

/// The snapshot, then the replay; live events follow. What they were
/// made from is not kept (a stream may stay open for days).
async fn send_catchup(shared: &Shared, catchup: Catchup) {
    let app = shared.app();
    let Catchup {
        snapshot,
        replay,
        seen,
    } = catchup;
    let positions = match snapshot.is_empty() {
        true => HashMap::new(),
        false => app.handle.queue_positions().await.unwrap_or_default(),
    };
    let frames = snapshot
        .iter()
        .map(|v| {
            let video = render::video(app, v, positions.get(&v.id).copied());
            frame::text(&json!({"type": "snapshot", "video": video}).to_string())
        })
        .collect();
    shared.caught_up(frames, &replay, seen);
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends a close frame after what waits (for at most [`CLOSE_WAIT`]);
/// returns `why`.
async fn close(shared: &Shared, code: u16, reason: &str, why: &'static str) -> &'static str {
    shared.send(frame::close(code, reason));
    let _ =
        tokio::time::timeout(CLOSE_WAIT, std::future::poll_fn(|cx| shared.poll_drain(cx))).await;
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    fn since_of(value: &str) -> Result<Option<u64>, ApiError> {
        since(&HashMap::from([("since".to_string(), value.to_string())]))
    }

    #[test]
    fn since_is_a_sequence_number_the_catalog_can_hold() {
        assert_eq!(since(&HashMap::new()).ok(), Some(None));
        assert_eq!(since_of("0").ok(), Some(Some(0)));
        assert_eq!(
            since_of("9223372036854775807").ok(),
            Some(Some(i64::MAX as u64))
        );
        for bad in ["9223372036854775808", "18446744073709551615", "-1", "x", ""] {
            assert!(
                matches!(
                    since_of(bad),
                    Err(ApiError::InvalidOption { name: "since", .. })
                ),
                "{bad}"
            );
        }
    }

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn a_fresh_client_may_keep_one_send_waiting_for_the_whole_limit() {
        let t0 = Instant::now();
        assert_eq!(SendBudget::new(t0).allowance(t0), SendBudget::LIMIT);
    }

    #[test]
    fn repeated_waits_add_up_to_the_limit() {
        let t0 = Instant::now();
        let mut b = SendBudget::new(t0);
        let mut now = t0;
        let mut sends = 0;
        // Waits of 2 s, 1 s apart: forgiveness cannot keep up.
        while b.allowance(now) > s(2.0) {
            now += s(2.0);
            b.spent(s(2.0), now);
            now += s(1.0);
            sends += 1;
        }
        assert!((4..=6).contains(&sends), "{sends}");
    }

    #[test]
    fn a_slow_link_that_keeps_up_is_never_closed() {
        let t0 = Instant::now();
        let mut b = SendBudget::new(t0);
        let mut now = t0;
        // Half-second waits every 5 s, for over an hour.
        for _ in 0..1000 {
            assert!(b.allowance(now) > s(9.0));
            now += s(0.5);
            b.spent(s(0.5), now);
            now += s(5.0);
        }
    }
}
