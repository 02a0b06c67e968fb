//! The anchor of the fan-out figure: a process of the benchmark's own
//! (`bench-load --anchor N`) that takes `N` WebSocket upgrades, then, each
//! time it reads a line, writes one state event's frame to every socket
//! from two plain threads (`write`, nothing else: no runtime, no server).
//! The fan-out client times it as it times vidmill, so the anchor is what
//! the kernel alone costs on this machine, measured in the same run: no
//! server on loopback can deliver faster with the same two cores.

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};

use super::Error;

/// Threads writing, one per core of the machine the figures are for.
const WRITERS: usize = 2;

/// The anchor's side: serves `count` subscribers until stdin ends.
pub fn serve(count: usize) -> Result<(), Error> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte)? == 0 {
                return Err("closed during the upgrade".into());
            }
            head.push(byte[0]);
        }
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")?;
        sockets.push(s);
    }
    let mut shares: Vec<Vec<TcpStream>> = (0..WRITERS).map(|_| Vec::new()).collect();
    for (i, s) in sockets.into_iter().enumerate() {
        shares[i % WRITERS].push(s);
    }
    let mut n = 0;
    for line in std::io::stdin().lock().lines() {
        line?;
        n += 1;
        let text = format!(
            "{{\"type\":\"state\",\"video_id\":\"anchor-{n}\",\"seq\":1,\"state\":\"uploading\",\
             \"stage\":null,\"error\":null,\"outputs\":{{}}}}"
        );
        let mut frame = vec![0x81];
        match u8::try_from(text.len()) {
            Ok(n) if n < 126 => frame.push(n),
            _ => {
                frame.push(126);
                frame.extend_from_slice(&u16::try_from(text.len())?.to_be_bytes());
            }
        }
        frame.extend_from_slice(text.as_bytes());
        std::thread::scope(|scope| {
            for share in &mut shares {
                let frame = &frame;
                scope.spawn(move || {
                    for s in share.iter_mut() {
                        let _ = s.write_all(frame);
                    }
                });
            }
        });
    }
    Ok(())
}

/// The anchor process, serving on `addr`; killed when dropped.
#[derive(Debug)]
pub struct Anchor {
    child: Child,
    go: ChildStdin,
    pub addr: String,
    pub pid: u32,
}

impl Anchor {
    pub fn start(count: usize) -> Result<Self, Error> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--anchor", &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let go = child.stdin.take().ok_or("no stdin")?;
        let mut addr = String::new();
        std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut addr)?;
        let pid = child.id();
        Ok(Self {
            child,
            go,
            addr: addr.trim().to_string(),
            pid,
        })
    }

    /// Writes event `n` (video `anchor-n`) to every subscriber.
    pub fn send(&mut self) -> Result<(), Error> {
        self.go.write_all(b"go\n")?;
        self.go.flush()?;
        Ok(())
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
