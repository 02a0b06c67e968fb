//! The real `vidmill serve` on 127.0.0.1:0 with a temp config, and a small
//! HTTP/1.1 client over a plain TCP socket, so tests control every byte
//! (cut bodies, odd headers) and see every byte of the answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SECRET: &str = "integration-test-secret-0123456789";

/// Writes `dir/config.toml` for a server on a free loopback port with its
/// data under `dir`: `auth` is the body of `[auth]`, `rest` what follows.
pub fn write_config(dir: &Path, auth: &str, rest: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let config = dir.join("config.toml");
    let d = dir.display();
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\n{auth}\n\
             [database]\npath = \"{d}/data/vidmill.sqlite\"\n[storage]\npath = \"{d}/data/objects\"\n{rest}"
        ),
    )
    .expect("config");
    config
}

pub struct Server {
    pub dir: PathBuf,
    pub addr: String,
    child: Child,
}

impl Server {
    /// Starts a server on `dir` with `extra` TOML appended to the config.
    pub fn start(dir: &Path, extra: &str) -> Self {
        Self::start_with_env(dir, extra, &[])
    }

    /// Like [`Server::start`], with `VIDMILL__…` overrides in the environment.
    pub fn start_with_env(dir: &Path, extra: &str, env: &[(&str, &str)]) -> Self {
        let config = write_config(
            dir,
            &format!("hs256_secret = \"{SECRET}\""),
            &format!("[limits]\nmax_upload_bytes = 20000000\nmin_free_disk_bytes = 0\n{extra}\n"),
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_vidmill"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("VIDMILL_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        Self {
            dir: dir.to_path_buf(),
            addr,
            child,
        }
    }

    pub fn token(&self, sub: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_vidmill"))
            .args(["token", "--sub", sub, "--config"])
            .arg(self.dir.join("config.toml"))
            .output()
            .expect("token");
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL (a power cut, an OOM kill) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "server exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn objects(&self, id: &str) -> PathBuf {
        self.dir.join("data/objects/videos").join(id)
    }

    /// Files in the upload spool and the work directory.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        ["data/uploads", "data/work"]
            .iter()
            .flat_map(|d| {
                std::fs::read_dir(self.dir.join(d))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|e| e.path())
            .collect()
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Response {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        let mut has_length = false;
        for (k, v) in headers {
            has_length |= k.eq_ignore_ascii_case("content-length")
                || k.eq_ignore_ascii_case("transfer-encoding");
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !has_length && (method == "POST" || method == "PUT" || !body.is_empty()) {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("write head");
        stream.write_all(body).expect("write body");
        read_response(stream, method == "HEAD")
    }

    /// Sends `head` and then `body` from another thread, reading the answer
    /// meanwhile: for requests the server answers (and stops reading)
    /// before the body is through.
    pub fn request_while_sending(&self, head: String, body: Vec<u8>) -> Response {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        stream.write_all(head.as_bytes()).expect("write head");
        let mut writer = stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            for chunk in body.chunks(64 << 10) {
                if writer.write_all(chunk).is_err() {
                    return;
                }
            }
        });
        read_response(stream, false)
    }

    pub fn get(&self, path: &str, token: &str) -> Response {
        self.request(
            "GET",
            path,
            &[("Authorization", format!("Bearer {token}"))],
            b"",
        )
    }

    pub fn upload(&self, token: &str, query: &str, body: &[u8]) -> Response {
        self.request(
            "POST",
            &format!("/v1/videos?{query}"),
            &[
                ("Authorization", format!("Bearer {token}")),
                ("Content-Type", "video/mp4".into()),
            ],
            body,
        )
    }

    /// Polls the video until `done` holds (never a fixed sleep).
    pub fn wait_for(
        &self,
        token: &str,
        id: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let v = self.get(&format!("/v1/videos/{id}"), token).json();
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let preview = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned();
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &format!("{} bytes: {preview}", self.body.len()))
            .finish()
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The problem `code`, checking the problem+json shape on the way.
    pub fn code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let p = self.json();
        assert_eq!(p["status"], self.status, "{p}");
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
        p["code"].as_str().expect("code").to_string()
    }
}

pub fn read_response(stream: TcpStream, head_only: bool) -> Response {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).expect("header");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    // 1xx, 204 and 304 answers have no body (RFC 9110 section 6.4.1).
    if !head_only && status >= 200 && status != 204 && status != 304 {
        if let Some(len) = find("content-length").and_then(|l| l.parse::<usize>().ok()) {
            body.resize(len, 0);
            reader.read_exact(&mut body).expect("body");
        } else if find("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).expect("chunk size");
                let n = usize::from_str_radix(size.trim(), 16).expect("hex size");
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk).expect("chunk");
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            let _ = reader.read_to_end(&mut body);
        }
    }
    Response {
        status,
        headers,
        body,
    }
}

/// A short VP8/Vorbis WebM (transcoded, so every stage runs).
pub fn webm(dir: &Path, seconds: f64) -> Vec<u8> {
    use vidmill_pipelines::synth::{self, AudioCodec, Container, SynthSpec, VideoCodec};
    let path = dir.join(format!("src-{seconds}.webm"));
    let spec = SynthSpec {
        seconds,
        audio: Some(AudioCodec::Vorbis),
        ..SynthSpec::new(VideoCodec::Vp8, Container::Webm)
    };
    synth::generate(&spec, &path).expect("generate");
    std::fs::read(path).expect("read source")
}

/// Asks `/healthz` every 100 ms until stopped, from its own thread;
/// counts answers that were not 200 or took longer than a second, and
/// keeps the slowest.
pub struct HealthWatch {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    slowest_ms: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthWatch {
    pub fn start(addr: &str) -> Self {
        let (stop, failures, slowest_ms) = (
            Arc::<AtomicBool>::default(),
            Arc::<AtomicU64>::default(),
            Arc::<AtomicU64>::default(),
        );
        let (s, f, w, addr) = (
            stop.clone(),
            failures.clone(),
            slowest_ms.clone(),
            addr.to_string(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let started = Instant::now();
                let ok = healthz(&addr);
                let ms = started.elapsed().as_millis() as u64;
                w.fetch_max(ms, Ordering::SeqCst);
                if !ok || ms > 1000 {
                    f.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            stop,
            failures,
            slowest_ms,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.failures.load(Ordering::SeqCst),
            self.slowest_ms.load(Ordering::SeqCst),
        )
    }
}

fn healthz(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// The server's peak resident memory (`VmHWM`), in MiB.
pub fn peak_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}
