//! A vidmill server for the benchmarks: the release binary started on a
//! loopback port with a temporary config, a token for it, uploads through
//! curl and waits for a video to be ready, and what /proc says of its
//! memory and CPU.

// Shared by two benchmark binaries, each of which uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) type Error = Box<dyn std::error::Error>;

const SECRET: &str = "bench-secret-0123456789abcdef-0123";

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// A running `vidmill serve` (the release build), killed when dropped.
pub(crate) struct Vidmill {
    pub(crate) child: Child,
    pub(crate) addr: String,
    pub(crate) started_to_listening: Duration,
    pub(crate) started_to_ready: Duration,
}

impl Drop for Vidmill {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release build, or the binary `VIDMILL_BIN` names (to compare two
/// builds with one benchmark).
pub(crate) fn vidmill_bin() -> PathBuf {
    std::env::var_os("VIDMILL_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/vidmill"),
        PathBuf::from,
    )
}

/// Starts vidmill on a loopback port with its data under `dir`; `extra`
/// is appended to the generated config (whole TOML sections).
pub(crate) fn start_vidmill(dir: &Path, extra: &str) -> Result<Vidmill, Error> {
    start_vidmill_with(dir, extra, &[], None)
}

/// [`start_vidmill`] with `VIDMILL__…` overrides in the environment, and
/// pinned (with its worker processes) to the CPUs `cpus` (`taskset -c`)
/// when given: a node of a simulated cluster gets cores of its own.
pub(crate) fn start_vidmill_with(
    dir: &Path,
    extra: &str,
    env: &[(&str, &str)],
    cpus: Option<&str>,
) -> Result<Vidmill, Error> {
    std::fs::create_dir_all(dir)?;
    let d = dir.display();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\nhs256_secret = \"{SECRET}\"\n[database]\npath = \"{d}/data/vidmill.sqlite\"\n\
             [storage]\npath = \"{d}/data/objects\"\n[limits]\nmin_free_disk_bytes = 0\nmax_upload_bytes = 4294967296\n{extra}"
        ),
    )?;
    let started = Instant::now();
    let mut command = match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(vidmill_bin());
            c
        }
        None => Command::new(vidmill_bin()),
    };
    let mut child = command
        .args(["serve", "--config"])
        .arg(&config)
        .env("VIDMILL_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let started_to_listening = started.elapsed();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .ok_or("no listening line")?
        .to_string();
    while curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{addr}/readyz"),
    ])? != "200"
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Vidmill {
        child,
        addr,
        started_to_listening,
        started_to_ready: started.elapsed(),
    })
}

pub(crate) fn curl(args: &[&str]) -> Result<String, Error> {
    let out = Command::new("curl").args(args).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) fn token(dir: &Path) -> Result<String, Error> {
    let out = Command::new(vidmill_bin())
        .args(["token", "--sub", "bench", "--config"])
        .arg(dir.join("config.toml"))
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Uploads `file` raw with the given query options; returns the video id.
pub(crate) fn upload(v: &Vidmill, token: &str, file: &Path, query: &str) -> Result<String, Error> {
    let auth = format!("Authorization: Bearer {token}");
    let created = curl(&[
        "-s",
        "-H",
        &auth,
        "-H",
        "Content-Type: video/mp4",
        "-H",
        "Expect:",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{}/v1/videos?filename=bench.mp4&{query}", v.addr),
    ])?;
    Ok(json_field(&created, "\"id\":\"").ok_or_else(|| format!("upload failed: {created}"))?)
}

/// Polls the video every 20 ms until it is ready; returns its JSON.
pub(crate) fn wait_ready(v: &Vidmill, token: &str, id: &str) -> Result<String, Error> {
    wait_ready_every(v, token, id, Duration::from_millis(20))
}

/// [`wait_ready`], polling every `every` (a curl process each time: at
/// 20 ms the polling alone takes a large part of a core).
pub(crate) fn wait_ready_every(
    v: &Vidmill,
    token: &str,
    id: &str,
    every: Duration,
) -> Result<String, Error> {
    let auth = format!("Authorization: Bearer {token}");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let video = curl(&[
            "-s",
            "-H",
            &auth,
            &format!("http://{}/v1/videos/{id}", v.addr),
        ])?;
        if video.contains("\"state\":\"ready\"") {
            return Ok(video);
        }
        if video.contains("\"state\":\"failed\"") || Instant::now() > deadline {
            return Err(format!("processing failed: {video}").into());
        }
        std::thread::sleep(every);
    }
}

/// Uploads `file` for its MP4 alone, waits for it; returns its signed path.
pub(crate) fn publish(v: &Vidmill, token: &str, file: &Path) -> Result<String, Error> {
    let id = upload(v, token, file, "outputs=mp4")?;
    let video = wait_ready(v, token, &id)?;
    let url = json_field(&video, "\"url\":\"").ok_or("no url")?;
    Ok(url
        .splitn(4, '/')
        .nth(3)
        .map(|p| format!("/{p}"))
        .ok_or("bad url")?)
}

pub(crate) fn json_field(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)? + prefix.len();
    let end = text[start..].find('"')? + start;
    Some(text[start..end].to_string())
}

/// CPU seconds used by process `pid` and its reaped children (vidmill's
/// worker processes), from `/proc/PID/stat`.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised name: utime, stime, cutime, cstime are fields
    // 14-17 of the whole line, so 11-14 here.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = (11..15)
        .map(|i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum::<Option<f64>>()?;
    Some(ticks / 100.0)
}
