//! Steering a running operation: progress arrives at most 4 times a second
//! and ends at 100 %, cancel stops within 2 s, a stalled input fails with
//! `Stalled`, and none of them leaves a temp file.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use vidmill_pipelines::synth::{Container, SynthSpec, VideoCodec};
use vidmill_pipelines::{self as media, CancelToken, Control, ConvertSpec, MediaError};

fn slow_spec(dir: &std::path::Path) -> ConvertSpec {
    // veryslow x264 on 640x360 runs well below real time on two cores.
    ConvertSpec {
        preset: "veryslow".into(),
        allow_remux: false,
        ..ConvertSpec::new(dir.join("out.mp4"))
    }
}

fn source(dir: &std::path::Path, seconds: f64) -> std::path::PathBuf {
    let spec = SynthSpec {
        width: 640,
        height: 360,
        seconds,
        ..SynthSpec::new(VideoCodec::Vp8, Container::Webm)
    };
    make(dir, "in.webm", &spec)
}

#[test]
fn progress_is_reported_at_most_four_times_a_second_and_ends_complete() {
    let dir = tempdir();
    let src = source(dir.path(), 6.0);
    let facts = media::probe(&src).expect("probe");
    let (tx, mut rx) = media::progress_channel();
    let ctl = Control {
        progress: Some(tx),
        ..Control::default()
    };
    let spec = ConvertSpec {
        preset: "medium".into(),
        ..slow_spec(dir.path())
    };
    let reports = std::thread::scope(|s| {
        let watcher = s.spawn(move || {
            let mut seen = Vec::new();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            rt.block_on(async {
                while rx.changed().await.is_ok() {
                    seen.push((Instant::now(), *rx.borrow_and_update()));
                }
            });
            seen
        });
        let started = Instant::now();
        media::convert(&src, &facts, &spec, &ctl).expect("convert");
        let wall = started.elapsed();
        drop(ctl);
        (watcher.join().expect("watcher"), wall)
    });
    let (seen, wall) = reports;
    assert!(seen.len() >= 2, "some progress was reported: {seen:?}");
    let allowed = (wall.as_secs_f64() * 4.0).ceil() as usize + 2;
    assert!(seen.len() <= allowed, "{} reports in {wall:?}", seen.len());
    let last = seen.last().expect("last").1;
    assert_eq!(last.percent, 100.0);
    assert!(
        seen.windows(2).all(|w| w[0].1.position <= w[1].1.position),
        "position never goes back"
    );
}

#[test]
fn cancel_stops_a_transcode_within_two_seconds_and_leaves_nothing() {
    let dir = tempdir();
    let src = source(dir.path(), 30.0);
    let facts = media::probe(&src).expect("probe");
    let (tx, rx) = media::progress_channel();
    let cancel = CancelToken::new();
    let ctl = Control {
        progress: Some(tx),
        cancel: cancel.clone(),
        ..Control::default()
    };
    let spec = slow_spec(dir.path());
    let (result, stop_latency) = std::thread::scope(|s| {
        let canceller = s.spawn(move || {
            // Wait for real work to be under way, then cancel.
            while rx.borrow().position <= 0.0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            let at = Instant::now();
            cancel.cancel();
            at
        });
        let result = media::convert(&src, &facts, &spec, &ctl);
        let ended = Instant::now();
        (result, ended - canceller.join().expect("canceller"))
    });
    assert!(matches!(result, Err(MediaError::Cancelled)), "{result:?}");
    assert!(
        stop_latency < Duration::from_secs(2),
        "stopped after {stop_latency:?}"
    );
    assert_eq!(leftovers(dir.path(), &[&src]), Vec::<String>::new());
}

#[test]
fn an_input_that_stops_delivering_fails_as_stalled() {
    let dir = tempdir();
    let src = source(dir.path(), 4.0);
    let facts = media::probe(&src).expect("probe");
    let bytes = std::fs::read(&src).expect("read");
    let fifo = dir.path().join("stalling.webm");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let stall = Duration::from_secs(1);
    let ctl = Control {
        stall_timeout: stall,
        ..Control::default()
    };
    let out_dir = tempdir();
    let spec = ConvertSpec {
        preset: "ultrafast".into(),
        ..slow_spec(out_dir.path())
    };
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        // Delivers the first half, then holds the pipe open without writing:
        // the reader blocks the way a hung network mount would.
        s.spawn(|| {
            let mut pipe = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .expect("open fifo");
            let _ = pipe.write_all(&bytes[..bytes.len() / 2]);
            std::thread::sleep(stall * 4);
        });
        media::convert(&fifo, &facts, &spec, &ctl)
    });
    assert!(matches!(result, Err(MediaError::Stalled(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(leftovers(out_dir.path(), &[]), Vec::<String>::new());
}
