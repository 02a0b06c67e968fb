//! The fan-out phase's client: every subscriber held by one thread of its
//! own (a current-thread runtime), so the client takes at most one of the
//! two cores and the server always has the other. The WebSocket is spoken
//! by hand (the upgrade, unmasked server frames, a pong), which costs a
//! read and a scan per event instead of a task of a WebSocket library.
//!
//! When an event reached a subscriber is taken from the kernel: every
//! socket asks for receive timestamps (`SO_TIMESTAMPNS`), which loopback
//! stamps as the server's write hands the bytes over, so the figure is the
//! server's delivery whether or not this thread was quick to read it. The
//! time this thread read it is kept beside it, to show what the client's
//! own lateness would have added.

use std::collections::{BTreeMap, HashMap};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::Error;

/// Nanoseconds since the Unix epoch (what the kernel's stamps count).
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// One state event as one subscriber got it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// When the kernel received it on the subscriber's socket.
    pub kernel_ns: i128,
    /// When the client thread read it.
    pub read_ns: i128,
}

/// What every subscriber reports: the state events it got, per video and
/// seq.
#[derive(Debug, Default)]
struct Log {
    states: HashMap<String, BTreeMap<u64, Vec<Arrival>>>,
    /// Subscribers closed or cut off before the end.
    lost: usize,
}

/// 10,000 subscribers (or however many) on one thread.
#[derive(Debug)]
pub struct Subscribers {
    log: Arc<Mutex<Log>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscribers {
    /// Connects `count` subscribers to `path` (e.g. `/v1/events?access_token=…`)
    /// one after another and returns once all are connected.
    pub fn connect(addr: &str, path: &str, count: usize) -> Result<Self, Error> {
        let log: Arc<Mutex<Log>> = Arc::default();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, path, thread_log) = (addr.to_string(), path.to_string(), log.clone());
        let thread = std::thread::Builder::new()
            .name("fan-out-client".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    for _ in 0..count {
                        match upgrade(&addr, &path).await {
                            Ok((stream, early)) => {
                                tokio::task::spawn_local(read(stream, early, thread_log.clone()));
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e.to_string()));
                                return;
                            }
                        }
                    }
                    let _ = ready_tx.send(Ok(()));
                    let _ = stopped.await;
                });
            })?;
        ready_rx.recv()??;
        Ok(Self {
            log,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// What `f` makes of the arrivals of the first state event of `video`
    /// (its lowest seq).
    fn first<T>(&self, video: &str, f: impl FnOnce(&[Arrival]) -> T) -> T {
        let log = self.log.lock().ok();
        let arrivals = log
            .as_ref()
            .and_then(|l| l.states.get(video))
            .and_then(|s| s.first_key_value())
            .map_or(&[][..], |(_, a)| a.as_slice());
        f(arrivals)
    }

    /// Waits until `count` subscribers hold the first state event of
    /// `video`, or `within` has passed; returns what arrived.
    pub async fn wait(&self, video: &str, count: usize, within: Duration) -> Vec<Arrival> {
        let deadline = tokio::time::Instant::now() + within;
        while self.first(video, <[Arrival]>::len) < count && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.first(video, <[Arrival]>::to_vec)
    }

    /// Subscribers that were closed or cut off.
    pub fn lost(&self) -> usize {
        self.log.lock().map_or(0, |l| l.lost)
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens a WebSocket at `path`; the stream, with the receive timestamps
/// on, and whatever came after the server's answer.
async fn upgrade(addr: &str, path: &str) -> Result<(TcpStream, Vec<u8>), Error> {
    let mut stream = TcpStream::connect(addr).await?.into_std()?;
    stream.set_nonblocking(false)?;
    setsockopt(&stream, sockopt::ReceiveTimestampns, &true)?;
    // The key is any 16 bytes in base64; the answer's accept is not checked.
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err("closed during the upgrade".into());
        }
        answer.extend_from_slice(&chunk[..n]);
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    if !answer.starts_with(b"HTTP/1.1 101") {
        return Err(format!(
            "upgrade answered {}",
            String::from_utf8_lossy(&answer[..end])
        )
        .into());
    }
    stream.set_nonblocking(true)?;
    Ok((TcpStream::from_std(stream)?, answer[end..].to_vec()))
}

thread_local! {
    /// One read buffer for every subscriber: they take turns on this thread.
    static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 << 10]);
}

/// Reads one subscriber's frames until it ends, logging state events.
async fn read(stream: TcpStream, mut pending: Vec<u8>, log: Arc<Mutex<Log>>) {
    let fd = stream.as_raw_fd();
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut pongs = 0usize;
    loop {
        if stream.readable().await.is_err() {
            break;
        }
        let got = BUFFER.with_borrow_mut(|buffer| {
            let received = stream.try_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(buffer)];
                let msg = recvmsg::<UnixAddr>(
                    fd,
                    &mut iov,
                    Some(cmsg.as_mut_slice()),
                    MsgFlags::empty(),
                )?;
                let kernel_ns = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|c| match c {
                        ControlMessageOwned::ScmTimestampns(t) => {
                            Some(t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
                        }
                        _ => None,
                    })
                });
                Ok((msg.bytes, kernel_ns))
            });
            match received {
                Ok((0, _)) => Some(false),
                Ok((n, kernel_ns)) => {
                    let read_ns = now_ns();
                    pending.extend_from_slice(&buffer[..n]);
                    let arrival = Arrival {
                        kernel_ns: kernel_ns.unwrap_or(read_ns),
                        read_ns,
                    };
                    Some(frames(&mut pending, arrival, &log, &mut pongs))
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                Err(_) => Some(false),
            }
        });
        if got == Some(false) {
            break;
        }
        while pongs > 0 {
            // Unmasked by a zero key: a valid masked frame of no payload.
            match stream.try_write(&[0x8A, 0x80, 0, 0, 0, 0]) {
                Ok(_) => pongs -= 1,
                Err(_) => break,
            }
        }
    }
    if let Ok(mut l) = log.lock() {
        l.lost += 1;
    }
}

/// Takes the whole frames off `pending`; false once the server closed.
fn frames(pending: &mut Vec<u8>, at: Arrival, log: &Mutex<Log>, pongs: &mut usize) -> bool {
    let mut used = 0;
    let mut open = true;
    while let Some((opcode, body, len)) = frame(&pending[used..]) {
        match opcode {
            0x1 => {
                if let Some((video, seq)) = std::str::from_utf8(body)
                    .ok()
                    .and_then(super::http::state_event)
                {
                    if let Ok(mut l) = log.lock() {
                        l.states
                            .entry(video)
                            .or_default()
                            .entry(seq)
                            .or_default()
                            .push(at);
                    }
                }
            }
            0x8 => open = false,
            0x9 => *pongs += 1,
            _ => {}
        }
        used += len;
    }
    pending.drain(..used);
    open
}

/// The first whole frame of `bytes`: opcode, payload and its whole length.
fn frame(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (b0, b1) = (*bytes.first()?, *bytes.get(1)?);
    let (len, mut at): (usize, usize) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (n as usize, 2),
    };
    if b1 & 0x80 != 0 {
        at += 4;
    }
    let body = bytes.get(at..at.checked_add(len)?)?;
    Some((b0 & 0x0f, body, at + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_where_their_lengths_say() {
        let mut bytes = vec![0x81, 3, b'a', b'b', b'c', 0x89, 0];
        let long = vec![b'x'; 300];
        bytes.extend_from_slice(&[0x81, 126, 1, 44]);
        bytes.extend_from_slice(&long);
        let (op, body, len) = frame(&bytes).expect("first");
        assert_eq!((op, body, len), (1, &b"abc"[..], 5));
        let (op, body, len) = frame(&bytes[5..]).expect("ping");
        assert_eq!((op, body.len(), len), (9, 0, 2));
        let (op, body, len) = frame(&bytes[7..]).expect("long");
        assert_eq!((op, body.len(), len), (1, 300, 304));
        assert!(frame(&bytes[7..300]).is_none(), "a cut frame waits");
    }
}
