//! Progress of an offline command: a bar on a terminal, a plain line a
//! second otherwise, and Ctrl-C turned into a clean cancel.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use vidmill_pipelines as media;

/// Runs `op` on this thread while another thread shows its progress and
/// turns Ctrl-C into a cancel, so an interrupted command still removes its
/// temporary output and exits with "cancelled".
pub(super) fn with_progress<T>(
    label: &str,
    op: impl FnOnce(&media::Control) -> media::Result<T>,
) -> media::Result<T> {
    let (tx, rx) = media::progress_channel();
    let ctl = media::Control {
        progress: Some(tx),
        ..media::Control::default()
    };
    let cancel = ctl.cancel.clone();
    let label = label.to_string();
    let shower = std::thread::spawn(move || show_progress(&label, rx, cancel));
    let result = op(&ctl);
    // Dropping the sender ends the progress thread.
    drop(ctl);
    let _ = shower.join();
    result
}

fn show_progress(label: &str, mut rx: media::ProgressRx, cancel: media::CancelToken) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(1000);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{msg:>18} [{bar:40}] {percent:>3}% {prefix}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        bar
    });
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        // Plain lines go to logs: one a second is plenty there.
        let mut last_line: Option<Instant> = None;
        loop {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                _ = tokio::signal::ctrl_c() => {
                    cancel.cancel();
                    continue;
                }
            }
            let p = *rx.borrow_and_update();
            let eta = p.eta_seconds.map_or("-".into(), |e| format!("{e:.0}s"));
            match &bar {
                Some(bar) => {
                    bar.set_position((p.percent * 10.0) as u64);
                    bar.set_prefix(format!("{:.1}x eta {eta}", p.speed));
                }
                None if p.percent >= 100.0
                    || last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) =>
                {
                    last_line = Some(Instant::now());
                    eprintln!("{label}: {:.1}% at {:.1}x, eta {eta}", p.percent, p.speed);
                }
                None => {}
            }
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
