//! `make bench-serve`: vidmill's range serving against nginx (sendfile) on
//! loopback, measured alternately in one run with wrk (64 connections,
//! random 1 MiB ranges), plus vidmill's idle memory, start-up time, and a
//! 2 GiB streamed upload's ingest rate and peak memory growth, as one plain
//! upload and as one tus PATCH.
//!
//! Needs `nginx` and `wrk` (Debian packages; `make bench-serve` installs
//! them) and a release build of `vidmill` (`make bench-serve` builds it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vidmill_pipelines::synth::{self, AudioCodec, Container, SynthSpec, VideoCodec};

mod server;

use server::{curl, publish, rss_kib, start_vidmill, token, Error, Vidmill};

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
}

fn wrk_seconds() -> u64 {
    std::env::var("BENCH_WRK_SECONDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20)
}

struct Nginx {
    child: Child,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_nginx(dir: &Path, root: &Path) -> Result<Nginx, Error> {
    let port = free_port()?;
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n sendfile on;\n tcp_nopush on;\n keepalive_requests 100000;\n\
             client_body_temp_path {d}/nginx-body;\n proxy_temp_path {d}/nginx-proxy;\n fastcgi_temp_path {d}/nginx-fcgi;\n\
             uwsgi_temp_path {d}/nginx-uwsgi;\n scgi_temp_path {d}/nginx-scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {};\n location / {{ types {{ video/mp4 mp4; }} }} }}\n}}\n",
            root.display()
        ),
    )?;
    let child = Command::new("nginx")
        .args(["-e", &format!("{d}/nginx-error.log"), "-c"])
        .arg(&conf)
        .spawn()?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Nginx { child, port });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("nginx did not start".into())
}

/// wrk's requests/s, transfer MB/s and p99 latency (ms).
fn wrk(url: &str, script: &Path) -> Result<(f64, f64, f64), Error> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c64",
            &format!("-d{}s", wrk_seconds()),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let num = |prefix: &str| -> Option<String> {
        let line = text.lines().find(|l| l.trim_start().starts_with(prefix))?;
        line.split_whitespace().nth(1).map(String::from)
    };
    let rps = num("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("wrk said: {text}"))?;
    let transfer = num("Transfer/sec:").map(|v| to_mb(&v)).unwrap_or(0.0);
    let p99 = num("99%").map(|v| to_ms(&v)).unwrap_or(0.0);
    if text.contains("Non-2xx") {
        return Err(format!("non-2xx answers: {text}").into());
    }
    Ok((rps, transfer, p99))
}

fn to_mb(v: &str) -> f64 {
    let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = n.parse().unwrap_or(0.0);
    match unit {
        "GB" => n * 1024.0,
        "KB" => n / 1024.0,
        _ => n,
    }
}

fn to_ms(v: &str) -> f64 {
    let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = n.parse().unwrap_or(0.0);
    match unit {
        "us" => n / 1000.0,
        "s" => n * 1000.0,
        _ => n,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A wrk script asking for a random 1 MiB range of a `len`-byte object.
fn range_script(dir: &Path, len: u64) -> Result<PathBuf, Error> {
    let path = dir.join("range.lua");
    let max = len.saturating_sub(1 << 20);
    std::fs::write(
        &path,
        format!(
            "math.randomseed(os.time())\nrequest = function()\n  local a = math.random(0, {max})\n  \
             return wrk.format(nil, nil, {{Range = \"bytes=\" .. a .. \"-\" .. (a + 1048575)}})\nend\n"
        ),
    )?;
    Ok(path)
}

/// Writes the 2 GiB of pseudo-random bytes both uploads send.
fn two_gib(dir: &Path) -> Result<PathBuf, Error> {
    let file = dir.join("2g.bin");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
    let block: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    for _ in 0..2048 {
        f.write_all(&block)?;
    }
    Ok(file)
}

/// Streams `file` with curl (`-T`: with its length, never read into
/// memory) and samples vidmill's memory while it arrives. Returns MiB/s,
/// peak RSS growth (KiB) and the status vidmill answered.
fn stream(
    v: &Vidmill,
    file: &Path,
    method: &str,
    url: &str,
    headers: &[String],
) -> Result<(f64, u64, String), Error> {
    let pid = v.child.id();
    let before = rss_kib(pid);
    let started = Instant::now();
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Expect:",
    ]);
    for h in headers {
        command.args(["-H", h]);
    }
    let mut upload = command
        .args(["-X", method, "-T"])
        .arg(file)
        .arg(url)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut peak = before;
    while upload.try_wait()?.is_none() {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut status = String::new();
    if let Some(mut out) = upload.stdout.take() {
        std::io::Read::read_to_string(&mut out, &mut status)?;
    }
    let size_mib = std::fs::metadata(file)?.len() as f64 / (1 << 20) as f64;
    Ok((
        size_mib / seconds,
        peak.saturating_sub(before),
        status.trim().to_string(),
    ))
}

/// 2 GiB as one plain upload, then as one tus PATCH: ingest rates and peak
/// memory growth. Random bytes are received whole, then refused as not a
/// video (415), so nothing stays.
fn big_uploads(v: &Vidmill, token: &str, dir: &Path) -> Result<[(f64, u64); 2], Error> {
    let file = two_gib(dir)?;
    let auth = format!("Authorization: Bearer {token}");
    let (rate, peak, status) = stream(
        v,
        &file,
        "POST",
        &format!("http://{}/v1/videos?filename=big.mp4", v.addr),
        &[auth.clone(), "Content-Type: video/mp4".into()],
    )?;
    if status != "415" {
        return Err(
            format!("2 GiB upload answered {status}, expected 415 after receiving it").into(),
        );
    }
    let created = curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        "-H",
        &auth,
        "-H",
        "Tus-Resumable: 1.0.0",
        "-H",
        "Upload-Length: 2147483648",
        &format!("http://{}/v1/uploads", v.addr),
    ])?;
    let location = created
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .ok_or_else(|| format!("no Location in {created}"))?
        .trim()
        .to_string();
    let (tus_rate, tus_peak, status) = stream(
        v,
        &file,
        "PATCH",
        &format!("http://{}{location}", v.addr),
        &[
            auth,
            "Tus-Resumable: 1.0.0".into(),
            "Upload-Offset: 0".into(),
            "Content-Type: application/offset+octet-stream".into(),
        ],
    )?;
    if status != "415" {
        return Err(
            format!("2 GiB tus PATCH answered {status}, expected 415 after receiving it").into(),
        );
    }
    std::fs::remove_file(&file)?;
    Ok([(rate, peak), (tus_rate, tus_peak)])
}

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source.mp4");
    let spec = SynthSpec {
        width: 1920,
        height: 1080,
        seconds: 30.0,
        keyframe_every: 60,
        audio: Some(AudioCodec::Aac),
        x264_preset: "veryfast",
        ..SynthSpec::new(VideoCodec::H264, Container::Mp4)
    };
    eprintln!("generating a 1080p 30 s source ...");
    synth::generate(&spec, &source)?;

    let v = start_vidmill(&dir.path().join("vidmill"), "")?;
    let idle = rss_kib(v.child.id());
    let token = token(&dir.path().join("vidmill"))?;
    let path = publish(&v, &token, &source)?;
    let (id, _) = path
        .trim_start_matches("/v1/videos/")
        .split_once('/')
        .ok_or("bad path")?;
    let mp4 = dir
        .path()
        .join("vidmill/data/objects/videos")
        .join(id)
        .join("video.mp4");
    let len = std::fs::metadata(&mp4)?.len();
    let nginx = start_nginx(dir.path(), mp4.parent().ok_or("no dir")?)?;
    let script = range_script(dir.path(), len)?;
    let vidmill_url = format!("http://{}{path}", v.addr);
    let nginx_url = format!("http://127.0.0.1:{}/video.mp4", nginx.port);

    let (mut vm, mut ng) = (Vec::new(), Vec::new());
    for round in 0..rounds() {
        eprintln!("round {} ...", round + 1);
        let order: [(&str, bool); 2] = if round % 2 == 0 {
            [(&vidmill_url, true), (&nginx_url, false)]
        } else {
            [(&nginx_url, false), (&vidmill_url, true)]
        };
        for (url, is_vidmill) in order {
            let r = wrk(url, &script)?;
            if is_vidmill {
                vm.push(r)
            } else {
                ng.push(r)
            }
        }
    }
    let [(big_rate, big_peak), (tus_rate, tus_peak)] = big_uploads(&v, &token, dir.path())?;

    let col =
        |v: &[(f64, f64, f64)], i: usize| median(v.iter().map(|r| [r.0, r.1, r.2][i]).collect());
    let (vm_mb, ng_mb) = (col(&vm, 1), col(&ng, 1));
    let (vm_p99, ng_p99) = (col(&vm, 2), col(&ng, 2));
    let ok = |b: bool| if b { "met" } else { "MISSED" };
    println!("\nvidmill serve vs nginx, {} rounds of wrk -t2 -c64 -d{}s, random 1 MiB ranges of a {:.1} MB MP4, loopback\n", rounds(), wrk_seconds(), len as f64 / 1e6);
    println!("| measure | vidmill | nginx | ratio | target | |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| throughput (MB/s, median) | {vm_mb:.0} | {ng_mb:.0} | {:.2} | ≥ 0.8 | {} |",
        vm_mb / ng_mb,
        ok(vm_mb / ng_mb >= 0.8)
    );
    println!(
        "| requests/s (median) | {:.0} | {:.0} | {:.2} | | |",
        col(&vm, 0),
        col(&ng, 0),
        col(&vm, 0) / col(&ng, 0)
    );
    println!(
        "| p99 latency (ms, median) | {vm_p99:.1} | {ng_p99:.1} | {:.2} | ≤ 1.5 | {} |",
        vm_p99 / ng_p99,
        ok(vm_p99 / ng_p99 <= 1.5)
    );
    println!("\n| vidmill measure | value | target | |");
    println!("|---|---|---|---|");
    println!(
        "| idle RSS | {:.1} MiB | ≤ 40 MiB | {} |",
        idle as f64 / 1024.0,
        ok(idle <= 40 * 1024)
    );
    println!(
        "| start to listening | {:.0} ms | | |",
        v.started_to_listening.as_secs_f64() * 1000.0
    );
    println!(
        "| start to ready (/readyz 200) | {:.0} ms | ≤ 300 ms | {} |",
        v.started_to_ready.as_secs_f64() * 1000.0,
        ok(v.started_to_ready <= Duration::from_millis(300))
    );
    println!(
        "| 2 GiB streamed upload: peak RSS growth | {:.1} MiB | ≤ 32 MiB | {} |",
        big_peak as f64 / 1024.0,
        ok(big_peak <= 32 * 1024)
    );
    println!("| 2 GiB streamed upload: ingest rate | {big_rate:.0} MiB/s | | |");
    println!(
        "| 2 GiB tus PATCH: peak RSS growth | {:.1} MiB | ≤ 32 MiB | {} |",
        tus_peak as f64 / 1024.0,
        ok(tus_peak <= 32 * 1024)
    );
    println!("| 2 GiB tus PATCH: ingest rate (synced to disk) | {tus_rate:.0} MiB/s | | |");
    drop(nginx);
    Ok(())
}
