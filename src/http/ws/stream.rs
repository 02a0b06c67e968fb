//! One event stream after the upgrade: what goes out on its socket, in
//! order, and who writes it.
//!
//! The hub's shards hand every live event to the stream's [`Outlet`],
//! which writes the event's frame (rendered once for all subscribers) to
//! the socket on the spot when nothing waits before it: one event reaches
//! thousands of streams without a wake-up, a task or a copy per stream.
//! Whatever cannot go out at once (the socket is full, or the catch-up is
//! still being sent) waits in the stream's queue, in order, and the
//! stream's own task writes it as the socket drains; that task also reads
//! the client's frames and sends the pings.
//!
//! Order: a frame is written directly only when the queue is empty, and
//! queued otherwise, so frames leave in the order they were given. State
//! events are never dropped: a stream with more than [`STATE_QUEUE`] of
//! them waiting is ended as too slow. Progress is kept as the latest per
//! video and sent after the queued frames, as the hub's own subscriptions
//! do.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use axum::body::Bytes;
use serde_json::json;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;
use vidmill_actors::hub::STATE_QUEUE;
use vidmill_actors::{Announced, Outlet, ProgressEvent, Seen, VideoId};

use super::frame;
use crate::app::App;
use crate::http::render;

/// The socket's writing half.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Why a stream ends from the server's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Too many state events waited (or the hub let it go).
    Dropped,
    /// Writing to the socket failed.
    Gone,
    /// Its task has ended.
    Closed,
}

/// A frame waiting, and whether it is a state event (those are counted).
#[derive(Debug)]
struct Queued {
    frame: Bytes,
    state: bool,
}

struct Out {
    /// `None` until the upgrade, and again once the stream has ended.
    writer: Option<Writer>,
    queue: VecDeque<Queued>,
    /// How much of the first queued frame is written.
    written: usize,
    /// State events in `queue`.
    states: usize,
    /// Latest progress per video, sent after the queue (oldest id first).
    progress: BTreeMap<VideoId, Arc<ProgressEvent>>,
    /// Live events held back while the catch-up is sent.
    held: Option<Vec<Arc<Announced>>>,
    seen: Seen,
    end: Option<End>,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out")
            .field("upgraded", &self.writer.is_some())
            .field("queued", &self.queue.len())
            .field("states", &self.states)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// What a stream's outlet and its task share.
#[derive(Debug)]
pub struct Shared {
    out: Mutex<Out>,
    /// Rings when the task has something to do: frames left waiting, live
    /// events let through after the catch-up, the end.
    wake: Notify,
    app: App,
}

impl Shared {
    /// A stream that holds live events back until its catch-up is sent.
    pub fn new(app: App) -> Arc<Self> {
        Arc::new(Self {
            out: Mutex::new(Out {
                writer: None,
                queue: VecDeque::new(),
                written: 0,
                states: 0,
                progress: BTreeMap::new(),
                held: Some(Vec::new()),
                seen: Seen::default(),
                end: None,
            }),
            wake: Notify::new(),
            app,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Out> {
        // A panic while holding the lock left a queue that is still a
        // queue: carry on with it.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// Rings when there may be something to do.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    fn state_frame(&self, a: &Announced) -> Bytes {
        let e = &a.event;
        self.app.rendered.state(&e.video_id, e.seq, || {
            frame::text(&render::state_event(&self.app, &a.video, e).to_string())
        })
    }

    fn progress_frame(&self, p: &Arc<ProgressEvent>) -> Bytes {
        self.app.rendered.progress(p, || {
            frame::text(
                &json!({
                    "type": "progress", "video_id": p.video_id, "seq": p.seq, "state": p.state,
                    "stage": p.stage, "percent": p.percent, "speed": p.speed,
                    "eta_seconds": p.eta_seconds,
                })
                .to_string(),
            )
        })
    }

    /// The socket is there: catch-up frames can go.
    pub fn upgraded(&self, writer: Writer) {
        self.lock().writer = Some(writer);
    }

    /// Sends the catch-up (`first`: the snapshot; then `replay`, state
    /// events after `since`), then the live events held meanwhile that it
    /// does not already show, and lets live events through from now on.
    pub fn caught_up(&self, first: Vec<Bytes>, replay: &[Arc<Announced>], seen: Seen) {
        let mut out = self.lock();
        out.seen = seen;
        for f in first {
            out.queue(f, false);
        }
        for a in replay {
            if out.seen.state(&a.event) {
                let f = self.state_frame(a);
                out.queue(f, true);
            }
        }
        for a in out.held.take().unwrap_or_default() {
            if out.seen.live_state(&a.event) {
                out.progress.remove(&a.event.video_id);
                let f = self.state_frame(&a);
                out.queue(f, true);
            }
        }
        drop(out);
        self.wake.notify_one();
    }

    /// Queues a frame of the stream's own (ping, close).
    pub fn send(&self, f: Bytes) {
        self.lock().queue(f, false);
    }

    /// Queues the answer to the client's ping, or has the answer still
    /// waiting answer this one instead (RFC 6455 section 5.5.3 allows
    /// answering only the latest): a client that pings a stream it does not
    /// read cannot make the queue grow.
    pub fn send_pong(&self, f: Bytes) {
        self.lock().queue_pong(f);
    }

    /// Whether frames wait to be written; why the stream ended, if it has.
    pub fn status(&self) -> (bool, Option<End>) {
        let out = self.lock();
        let waiting = out.writer.is_some() && (!out.queue.is_empty() || !out.progress.is_empty());
        (waiting, out.end)
    }

    /// Writes what waits until none does, the socket is full (`Pending`) or
    /// writing fails.
    pub fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock().poll_drain(cx, |p| self.progress_frame(p))
    }

    /// The stream's task has ended: the socket goes now (not when a shard
    /// next looks at the outlet).
    pub fn closed(&self) {
        let mut out = self.lock();
        out.writer = None;
        out.queue.clear();
        out.progress.clear();
        out.held = None;
        out.end.get_or_insert(End::Closed);
    }

    fn end(&self, out: &mut Out, why: End) {
        out.end.get_or_insert(why);
        self.wake.notify_one();
    }
}

impl Out {
    /// Puts `f` after what waits.
    fn queue(&mut self, f: Bytes, state: bool) {
        self.queue.push_back(Queued { frame: f, state });
        if state {
            self.states += 1;
        }
    }

    /// [`Shared::send_pong`].
    fn queue_pong(&mut self, f: Bytes) {
        let started = usize::from(self.written > 0);
        match self
            .queue
            .iter_mut()
            .skip(started)
            .find(|q| q.frame.first() == Some(&(0x80 | frame::PONG)))
        {
            Some(waiting) => waiting.frame = f,
            None => self.queue(f, false),
        }
    }

    /// Writes `f` now if nothing waits before it and the socket takes it
    /// (all or part; the rest waits); queues it otherwise. Whether the
    /// stream's task must now write what waits (it already knows when
    /// something waited before); `Err` when writing failed.
    fn write_or_queue(&mut self, f: Bytes, state: bool) -> io::Result<bool> {
        let writer = match &mut self.writer {
            Some(writer) if self.queue.is_empty() => writer,
            _ => {
                self.queue(f, state);
                return Ok(false);
            }
        };
        let written = write_now(writer, &f)?;
        if written == f.len() {
            return Ok(false);
        }
        self.queue(f, state);
        self.written = written;
        Ok(true)
    }

    /// [`Shared::poll_drain`]; `render` makes a progress event's frame.
    fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        render: impl Fn(&Arc<ProgressEvent>) -> Bytes,
    ) -> Poll<io::Result<()>> {
        loop {
            let Some(writer) = self.writer.as_mut() else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            if let Some(first) = self.queue.front() {
                match Pin::new(writer).poll_write(cx, &first.frame[self.written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        if self.written == first.frame.len() {
                            self.written = 0;
                            if self.queue.pop_front().is_some_and(|q| q.state) {
                                self.states -= 1;
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            if let Some((_, p)) = self.progress.pop_first() {
                if self.seen.progress(&p) {
                    self.queue(render(&p), false);
                }
                continue;
            }
            return Pin::new(writer).poll_flush(cx);
        }
    }
}

/// Writes as much of `frame` as the socket takes without waiting. The
/// waker is a no-op: when the socket is full, the stream's task takes
/// over and waits with its own (it alone writes while anything waits).
fn write_now(writer: &mut Writer, frame: &[u8]) -> io::Result<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut at = 0;
    while at < frame.len() {
        match Pin::new(&mut *writer).poll_write(&mut cx, &frame[at..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => at += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    if at == frame.len() {
        // The socket writes through; this is for a writer that buffers.
        if let Poll::Ready(Err(e)) = Pin::new(&mut *writer).poll_flush(&mut cx) {
            return Err(e);
        }
    }
    Ok(at)
}

/// The hub's end of a stream.
#[derive(Debug)]
pub struct StreamOutlet(pub Arc<Shared>);

impl Outlet for StreamOutlet {
    fn state(&self, a: &Arc<Announced>) -> bool {
        let shared = &self.0;
        let mut out = shared.lock();
        if out.end.is_some() {
            return false;
        }
        if let Some(held) = &mut out.held {
            held.push(a.clone());
            if held.len() > STATE_QUEUE {
                shared.end(&mut out, End::Dropped);
                return false;
            }
            return true;
        }
        if !out.seen.live_state(&a.event) {
            return true;
        }
        // Progress from before this change is stale now.
        out.progress.remove(&a.event.video_id);
        let f = shared.state_frame(a);
        match out.write_or_queue(f, true) {
            Ok(wake) => {
                if out.states > STATE_QUEUE {
                    shared.end(&mut out, End::Dropped);
                    return false;
                }
                if wake {
                    shared.wake.notify_one();
                }
                true
            }
            Err(_) => {
                shared.end(&mut out, End::Gone);
                false
            }
        }
    }

    fn progress(&self, p: &Arc<ProgressEvent>) -> bool {
        let shared = &self.0;
        let mut out = shared.lock();
        if out.end.is_some() {
            return false;
        }
        if out.held.is_some() || !out.queue.is_empty() || out.writer.is_none() {
            // Sent after what waits; a newer one replaces it meanwhile.
            out.progress.insert(p.video_id.clone(), p.clone());
            return true;
        }
        if !out.seen.progress(p) {
            return true;
        }
        let f = shared.progress_frame(p);
        match out.write_or_queue(f, false) {
            Ok(wake) => {
                if wake {
                    shared.wake.notify_one();
                }
                true
            }
            Err(_) => {
                shared.end(&mut out, End::Gone);
                false
            }
        }
    }

    fn is_open(&self) -> bool {
        self.0.lock().end.is_none()
    }
}

impl Drop for StreamOutlet {
    fn drop(&mut self) {
        // The hub let the stream go (it was too slow, or the hub stopped):
        // its task closes it.
        let shared = &self.0;
        let mut out = shared.lock();
        shared.end(&mut out, End::Dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn out(writer: tokio::io::DuplexStream) -> Out {
        Out {
            writer: Some(Box::new(writer)),
            queue: VecDeque::new(),
            written: 0,
            states: 0,
            progress: BTreeMap::new(),
            held: None,
            seen: Seen::default(),
            end: None,
        }
    }

    #[tokio::test]
    async fn a_waiting_pong_answers_the_latest_ping() {
        let (writer, _reader) = tokio::io::duplex(8);
        let mut out = out(writer);
        // A frame the socket cannot take whole: everything after it waits.
        assert!(out
            .write_or_queue(frame::text(&"stuck".repeat(4)), true)
            .expect("write"));
        for n in 0..1000u32 {
            out.queue_pong(frame::encode(frame::PONG, &n.to_be_bytes()));
        }
        assert_eq!(out.queue.len(), 2);
        assert_eq!(&out.queue[1].frame[2..], &999u32.to_be_bytes());
    }

    #[tokio::test]
    async fn a_direct_write_goes_out_whole_and_a_full_socket_queues_in_order() {
        // A pipe of 64 bytes: the second frame fills it.
        let (writer, mut reader) = tokio::io::duplex(64);
        let mut out = out(writer);
        let a = frame::text(&"a".repeat(40));
        let b = frame::text(&"b".repeat(40));
        let c = frame::text("c");
        assert!(
            !out.write_or_queue(a.clone(), true).expect("a"),
            "written whole"
        );
        assert!(
            out.write_or_queue(b.clone(), true).expect("b"),
            "partly: the task takes over"
        );
        assert!(out.written > 0 && out.written < b.len());
        assert!(
            !out.write_or_queue(c.clone(), false).expect("c"),
            "queued behind b"
        );
        assert_eq!((out.queue.len(), out.states), (2, 1));
        let mut got = vec![0u8; a.len()];
        reader.read_exact(&mut got).await.expect("a");
        assert_eq!(got, a);
        // The task drains the rest, in order.
        let drained = tokio::spawn(async move {
            std::future::poll_fn(|cx| out.poll_drain(cx, |_| Bytes::new()))
                .await
                .expect("drain");
            out.states
        });
        let mut rest = vec![0u8; b.len() + c.len()];
        reader.read_exact(&mut rest).await.expect("rest");
        assert_eq!(rest, [b, c].concat());
        assert_eq!(drained.await.expect("task"), 0);
    }
}
