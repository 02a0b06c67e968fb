//! WebSocket events (API.md "WebSocket events"): refused before the upgrade
//! when the token is bad (401) or the video is not the caller's (404); then
//! a snapshot, replayed state events after `since`, and live events.
//! Progress may be coalesced, state events never dropped; a client that
//! stops reading is closed with 1013, one that sends frames over 64 KiB
//! with 1009; pings go out every 20 s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::response::Response;
use serde_json::json;
use vidmill_actors::{Feed, HubMessage};

use super::error::ApiError;
use super::identity::{authenticate, bearer, client, query_token};
use super::openapi as doc;
use super::render;
use crate::app::App;
use crate::slots::Slot;

const PING_EVERY: Duration = Duration::from_secs(20);
/// A client that has not answered two pings is gone.
const PONG_DEADLINE: Duration = Duration::from_secs(45);
const MAX_FRAME: usize = 64 << 10;
/// What a connection sets aside for reading and writing (see `accept`).
const READ_BUFFER: usize = 4 << 10;
const WRITE_BUFFER: usize = 0;

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
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let stream = app.quotas.websocket(&owner)?;
    let feed = app
        .handle
        .subscribe(&owner, Some(&id), since(&query)?)
        .await?;
    Ok(accept(app, owner, feed, upgrade, stream))
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
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let stream = app.quotas.websocket(&owner)?;
    let feed = app.handle.subscribe(&owner, None, None).await?;
    Ok(accept(app, owner, feed, upgrade, stream))
}

/// Upgrades to the event stream, which holds `stream` (its place in the
/// owner's WebSocket quota) until it closes.
fn accept(
    app: App,
    owner: String,
    feed: Feed,
    upgrade: WebSocketUpgrade,
    stream: Slot<String>,
) -> Response {
    upgrade
        .max_frame_size(MAX_FRAME)
        .max_message_size(MAX_FRAME)
        // tungstenite sets aside 128 KiB to read and 128 KiB to write for
        // every connection; clients send next to nothing, and an event is a
        // few KiB: the buffers grow when they must.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            app.metrics.ws_opened();
            let reason = pump(&app, feed, socket).await;
            tracing::debug!(owner, reason, "websocket closed");
            app.metrics.ws_closed();
            drop(stream);
        })
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

async fn send(
    socket: &mut WebSocket,
    budget: &mut SendBudget,
    message: Message,
) -> Result<(), &'static str> {
    let start = Instant::now();
    let sent = tokio::time::timeout(budget.allowance(start), socket.send(message)).await;
    let end = Instant::now();
    budget.spent(end - start, end);
    match sent {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("client gone"),
        Err(_) => Err("slow"),
    }
}

fn text(value: &serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_string().into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
}

async fn pump(app: &App, mut feed: Feed, mut socket: WebSocket) -> &'static str {
    let mut budget = SendBudget::new(Instant::now());
    for v in std::mem::take(&mut feed.snapshot) {
        let positions = app.handle.queue_positions().await.unwrap_or_default();
        let snapshot = json!({"type": "snapshot", "video": render::video(app, &v, positions.get(&v.id).copied())});
        match send(&mut socket, &mut budget, text(&snapshot)).await {
            Ok(()) => {}
            Err("slow") => {
                close(&mut socket, 1013, "too slow: events were not read").await;
                return "slow during snapshot";
            }
            Err(_) => return "client gone during snapshot",
        }
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_pong = Instant::now();
    loop {
        tokio::select! {
            event = feed.next() => {
                let message = match event {
                    Some(HubMessage::State(a)) => {
                        let e = &a.event;
                        Message::Text(app.rendered_states.get_or_render(&e.video_id, e.seq, || {
                            render::state_event(app, &a.video, e).to_string().into()
                        }))
                    }
                    Some(HubMessage::Progress(p)) => text(&json!({
                        "type": "progress", "video_id": p.video_id, "seq": p.seq, "state": p.state,
                        "stage": p.stage, "percent": p.percent, "speed": p.speed, "eta_seconds": p.eta_seconds,
                    })),
                    None => {
                        close(&mut socket, 1013, "too slow: events were not read").await;
                        return "dropped by the hub";
                    }
                };
                match send(&mut socket, &mut budget, message).await {
                    Ok(()) => {}
                    Err("slow") => {
                        close(&mut socket, 1013, "too slow: events were not read").await;
                        return "slow";
                    }
                    Err(e) => return e,
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                Some(Ok(Message::Close(_))) | None => return "client closed",
                Some(Ok(_)) => {}
                Some(Err(_)) => {
                    close(&mut socket, 1009, "frame too large or malformed").await;
                    return "bad frame";
                }
            },
            _ = ping.tick() => {
                if last_pong.elapsed() > PONG_DEADLINE {
                    close(&mut socket, 1001, "no pong").await;
                    return "no pong";
                }
                match send(&mut socket, &mut budget, Message::Ping(Vec::new().into())).await {
                    Ok(()) => {}
                    Err("slow") => {
                        close(&mut socket, 1013, "too slow: events were not read").await;
                        return "slow";
                    }
                    Err(e) => return e,
                }
            }
        }
    }
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
