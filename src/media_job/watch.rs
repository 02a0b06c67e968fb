//! The server side of one worker: spawns `vidmill media-job`, hands it its
//! request, and watches it until it is reaped. A watch thread owns the
//! child and every 50 ms checks cancel, resident memory (from
//! `/proc/PID/statm`, every 100 ms) and the wall clock, killing the worker
//! (SIGKILL: it holds nothing worth a clean exit; the caller removes the
//! work directory) and reaping it, so no zombie and no orphan is left. The
//! caller's thread reads the replies and runs their callbacks, which may
//! take a while (an output's verification is a worker of its own) without
//! delaying those checks. The last lines of the worker's stderr explain a
//! crash.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vidmill_actors::{CancelFlag, EngineError};

use super::protocol::{Reply, Request};
use super::SUBCOMMAND;

/// How often the watch thread looks at the worker (cancel, exit, clock).
const TICK: Duration = Duration::from_millis(50);
/// Resident memory is sampled every this many ticks (100 ms): often enough
/// that a decoder filling frames cannot run far past the limit, rarely
/// enough to cost nothing.
const RSS_EVERY_TICKS: u32 = 2;
/// Replies waiting for the caller. Progress comes at 4 Hz and outputs are
/// few, so 64 lines cover 16 s of a caller busy verifying an output; when
/// full, the reader (and so the worker, on its pipe) waits: memory stays
/// bounded and nothing is lost.
const REPLY_QUEUE: usize = 64;
/// stderr lines kept to explain a crash.
const LAST_WORDS: usize = 8;
/// After the worker is reaped, how long its stdout may stay open (held by
/// a grandchild such as GStreamer's plugin scanner) before it is given up.
const EOF_GRACE: Duration = Duration::from_secs(1);

/// What one worker may use.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Resident memory, in bytes.
    pub memory: u64,
    pub wall_clock: Duration,
    /// The largest file the worker may write (its `RLIMIT_FSIZE`), in bytes.
    pub output: u64,
}

/// Why a worker ended without its job's own answer.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot start a worker process: {0}")]
    Spawn(std::io::Error),
    #[error("cancelled")]
    Cancelled,
    #[error("the worker process {how}{}", said(.last_words))]
    Crashed { how: String, last_words: String },
    #[error("the job used {used_mib} MiB of memory, over the {limit_mib} MiB limit (limits.worker_memory_bytes)")]
    OverMemory { used_mib: u64, limit_mib: u64 },
    #[error("the job ran out of memory under its {limit_mib} MiB limit (limits.worker_memory_bytes){}", said(.last_words))]
    OutOfMemory { limit_mib: u64, last_words: String },
    #[error("the job took longer than its {0:?} wall-clock limit (limits.worker_timeout_floor_seconds, limits.worker_timeout_factor)")]
    OverTime(Duration),
    #[error("an output grew past the {limit_mib} MiB limit (limits.max_output_bytes)")]
    OverOutput { limit_mib: u64 },
}

/// The worker's last words, when it left any.
fn said(text: &str) -> String {
    match text {
        "" => String::new(),
        t => format!(": {t}"),
    }
}

impl WatchError {
    /// The worker died under the job: worth another attempt.
    pub fn is_crash(&self) -> bool {
        matches!(self, Self::Crashed { .. })
    }

    /// A configured limit stopped the job: the same input stops again.
    pub fn is_limit(&self) -> bool {
        self.limit().is_some()
    }

    /// The configuration key of the limit that stopped the job. The wall
    /// clock comes from two keys (the message names both); the factor is
    /// named, as the one that grows with a long source.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            Self::OverMemory { .. } | Self::OutOfMemory { .. } => {
                Some("limits.worker_memory_bytes")
            }
            Self::OverTime(_) => Some("limits.worker_timeout_factor"),
            Self::OverOutput { .. } => Some("limits.max_output_bytes"),
            Self::Spawn(_) | Self::Cancelled | Self::Crashed { .. } => None,
        }
    }
}

impl From<WatchError> for EngineError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::Cancelled => Self::Cancelled,
            e if e.is_crash() => Self::Crashed(e.to_string()),
            e => match e.limit() {
                Some(limit) => Self::LimitExceeded {
                    limit: limit.into(),
                    why: e.to_string(),
                },
                None => Self::Failed(e.to_string()),
            },
        }
    }
}

/// What the watch thread saw end.
#[derive(Debug)]
enum Ending {
    Exited(ExitStatus),
    Killed(Kill),
}

#[derive(Debug, Clone, Copy)]
enum Kill {
    Cancelled,
    Memory(u64),
    Clock,
}

enum Message {
    Reply(Reply),
    Eof,
    Ended(Ending),
}

/// Runs one job in a worker. Every reply except the final one goes to
/// `on_reply`; returns the final one (`done` or `failed`).
///
/// The worker is killed when the thread that spawned it ends
/// (PR_SET_PDEATHSIG follows the thread), so it is spawned on the calling
/// thread, which stays in here until the worker has been reaped.
pub fn run(
    exe: &Path,
    request: &Request,
    label: &[String],
    budget: Budget,
    cancel: &CancelFlag,
    on_reply: &mut dyn FnMut(Reply),
) -> Result<Reply, WatchError> {
    let (tx, rx) = sync_channel(REPLY_QUEUE);
    // The watch thread exists before the worker does, so every worker
    // spawned is handed to a thread that reaps it.
    let (hand_over, handed) = sync_channel::<Child>(1);
    let abort = CancelFlag::default();
    {
        let (tx, cancel, abort) = (tx.clone(), cancel.clone(), abort.clone());
        std::thread::Builder::new()
            .name("worker-watch".into())
            .spawn(move || {
                if let Ok(child) = handed.recv() {
                    let ending = watch(child, budget, &cancel, &abort);
                    let _ = tx.send(Message::Ended(ending));
                }
            })
            .map_err(WatchError::Spawn)?;
    }
    let mut child = Command::new(exe)
        .arg(SUBCOMMAND)
        .args(label)
        // systemd's notify socket and watchdog belong to the server alone.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(WatchError::Spawn)?;
    let pid = child.id();
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    if let Err(std::sync::mpsc::SendError(mut child)) = hand_over.send(child) {
        // The watch thread is gone (it cannot be, short of a panic): reap here.
        let _ = child.kill();
        let _ = child.wait();
        return Err(WatchError::Spawn(std::io::Error::other(
            "the watch thread ended",
        )));
    }
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(LAST_WORDS)));
    let readers = spawn_readers(pid, stdout, stderr, &tx, &tail);
    drop(tx);
    if readers.is_err() {
        abort.cancel();
    }
    if let Some(mut stdin) = stdin {
        // A worker that died at once shows as a crash below; its broken
        // pipe says nothing more.
        let line = serde_json::to_vec(request).unwrap_or_default();
        let _ = stdin.write_all(&line).and_then(|()| stdin.flush());
    }
    let (last, ending) = collect(&rx, on_reply);
    readers.map_err(WatchError::Spawn)?;
    let words = tail
        .lock()
        .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" / "))
        .unwrap_or_default();
    judge(last, ending, budget, &words)
}

fn spawn_readers(
    pid: u32,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    tx: &SyncSender<Message>,
    tail: &Arc<Mutex<VecDeque<String>>>,
) -> std::io::Result<()> {
    if let Some(stdout) = stdout {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("worker-{pid}-out"))
            .spawn(move || read_replies(pid, stdout, &tx))?;
    }
    if let Some(stderr) = stderr {
        let tail = tail.clone();
        std::thread::Builder::new()
            .name(format!("worker-{pid}-err"))
            .spawn(move || keep_last_words(pid, stderr, &tail))?;
    }
    Ok(())
}

/// Polls the worker until it exits or must be killed; always reaps it.
fn watch(mut child: Child, budget: Budget, cancel: &CancelFlag, abort: &CancelFlag) -> Ending {
    let started = Instant::now();
    let page = rustix::param::page_size() as u64;
    let mut tick = 0u32;
    let kill = loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ending::Exited(status),
            Ok(None) => {}
            // Not ours to wait for any more (cannot happen with a live
            // Child); kill below reaps what can be reaped.
            Err(_) => break Kill::Cancelled,
        }
        if cancel.is_cancelled() || abort.is_cancelled() {
            break Kill::Cancelled;
        }
        if started.elapsed() > budget.wall_clock {
            break Kill::Clock;
        }
        tick += 1;
        if tick.is_multiple_of(RSS_EVERY_TICKS) {
            if let Some(rss) = resident_bytes(child.id(), page) {
                if rss > budget.memory {
                    break Kill::Memory(rss);
                }
            }
        }
        std::thread::sleep(TICK);
    };
    let _ = child.kill();
    let _ = child.wait();
    Ending::Killed(kill)
}

/// Resident set size from `/proc/PID/statm` (its second field, in pages).
fn resident_bytes(pid: u32, page: u64) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page)
}

fn read_replies(pid: u32, stdout: ChildStdout, tx: &SyncSender<Message>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<Reply>(&line) {
            Ok(reply) => {
                if tx.send(Message::Reply(reply)).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(worker = pid, error = %e, "unreadable line from a worker: {line}")
            }
        }
    }
    let _ = tx.send(Message::Eof);
}

/// The worker's logs go to the server's log and the last few are kept.
fn keep_last_words(pid: u32, stderr: ChildStderr, tail: &Mutex<VecDeque<String>>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        tracing::warn!(worker = pid, "{line}");
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == LAST_WORDS {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

/// Hands replies to `on_reply` until the worker has ended and its stdout
/// is drained; returns its final reply, if any, and how it ended.
fn collect(
    rx: &Receiver<Message>,
    on_reply: &mut dyn FnMut(Reply),
) -> (Option<Reply>, Option<Ending>) {
    let (mut last, mut ending, mut eof) = (None, None, false);
    let mut ended_at: Option<Instant> = None;
    while !(eof && ending.is_some()) {
        let wait = match ended_at {
            Some(at) => match EOF_GRACE.checked_sub(at.elapsed()) {
                Some(left) => left,
                None => break,
            },
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(Message::Reply(reply)) if reply.is_final() => last = Some(reply),
            Ok(Message::Reply(reply)) => on_reply(reply),
            Ok(Message::Eof) => eof = true,
            Ok(Message::Ended(e)) => {
                ending = Some(e);
                ended_at = Some(Instant::now());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    (last, ending)
}

/// The job's answer, or why there is none.
fn judge(
    last: Option<Reply>,
    ending: Option<Ending>,
    budget: Budget,
    words: &str,
) -> Result<Reply, WatchError> {
    let mib = |b: u64| b >> 20;
    let status = match ending {
        Some(Ending::Killed(Kill::Cancelled)) => return Err(WatchError::Cancelled),
        Some(Ending::Killed(Kill::Memory(used))) => {
            return Err(WatchError::OverMemory {
                used_mib: mib(used),
                limit_mib: mib(budget.memory),
            })
        }
        Some(Ending::Killed(Kill::Clock)) => return Err(WatchError::OverTime(budget.wall_clock)),
        Some(Ending::Exited(status)) if over_file_size(status) => {
            return Err(WatchError::OverOutput {
                limit_mib: mib(budget.output),
            })
        }
        Some(Ending::Exited(status)) => Some(status),
        None => None,
    };
    // An answer given stands, even if the worker then died on its way out.
    if let Some(reply) = last {
        return Ok(reply);
    }
    let words = words.to_string();
    if out_of_memory(&words) {
        return Err(WatchError::OutOfMemory {
            limit_mib: mib(budget.memory),
            last_words: words,
        });
    }
    Err(WatchError::Crashed {
        how: describe(status),
        last_words: words,
    })
}

/// An allocation refused under the worker's `RLIMIT_DATA` aborts it; its
/// last words say so (Rust's and GLib's allocators).
fn out_of_memory(words: &str) -> bool {
    words.contains("memory allocation of") || words.contains("failed to allocate")
}

/// Killed by SIGXFSZ: a write went past the worker's `RLIMIT_FSIZE`.
fn over_file_size(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(rustix::process::Signal::XFSZ.as_raw())
}

fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    let Some(status) = status else {
        return "vanished".into();
    };
    match (status.signal(), status.code()) {
        (Some(signal), _) => format!("was killed by {}", signal_name(signal)),
        (None, Some(code)) => format!("exited with status {code} without a result"),
        (None, None) => format!("ended ({status}) without a result"),
    }
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        _ => return format!("signal {signal}"),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const BUDGET: Budget = Budget {
        memory: 512 << 20,
        wall_clock: Duration::from_secs(60),
        output: 1 << 30,
    };

    #[test]
    fn a_worker_killed_by_a_signal_is_a_crash_named_by_it() {
        let e = judge(
            None,
            Some(Ending::Exited(ExitStatus::from_raw(11))),
            BUDGET,
            "last line",
        )
        .expect_err("crash");
        assert!(e.is_crash());
        assert_eq!(
            e.to_string(),
            "the worker process was killed by SIGSEGV: last line"
        );
        assert_eq!(EngineError::from(e).code(), "pipeline-crashed");
    }

    #[test]
    fn an_exit_without_a_result_is_a_crash_too() {
        let e = judge(
            None,
            Some(Ending::Exited(ExitStatus::from_raw(2 << 8))),
            BUDGET,
            "",
        )
        .expect_err("crash");
        assert_eq!(
            e.to_string(),
            "the worker process exited with status 2 without a result"
        );
    }

    #[test]
    fn a_final_answer_stands_whatever_the_exit() {
        let r = judge(
            Some(Reply::Done),
            Some(Ending::Exited(ExitStatus::from_raw(6))),
            BUDGET,
            "",
        );
        assert_eq!(r.expect("answer"), Reply::Done);
    }

    #[test]
    fn limits_name_their_keys_and_are_not_crashes() {
        let over = judge(
            None,
            Some(Ending::Killed(Kill::Memory(600 << 20))),
            BUDGET,
            "",
        )
        .expect_err("limit");
        assert!(over.is_limit() && !over.is_crash());
        assert!(over.to_string().contains("600 MiB"), "{over}");
        assert!(over.to_string().contains("limits.worker_memory_bytes"));
        let engine = EngineError::from(over);
        assert_eq!(engine.code(), "limit-exceeded");
        assert!(
            matches!(&engine, EngineError::LimitExceeded { limit, .. } if limit == "limits.worker_memory_bytes"),
            "{engine:?}"
        );
        let slow = judge(None, Some(Ending::Killed(Kill::Clock)), BUDGET, "").expect_err("limit");
        assert!(slow.to_string().contains("wall-clock"), "{slow}");
        assert_eq!(slow.limit(), Some("limits.worker_timeout_factor"));
        let aborted = judge(
            None,
            Some(Ending::Exited(ExitStatus::from_raw(6))),
            BUDGET,
            "memory allocation of 33554432 bytes failed",
        )
        .expect_err("limit");
        assert!(aborted.is_limit(), "{aborted}");
    }

    #[test]
    fn a_cancel_is_a_cancel() {
        let e = judge(
            Some(Reply::Done),
            Some(Ending::Killed(Kill::Cancelled)),
            BUDGET,
            "",
        )
        .expect_err("cancelled");
        assert_eq!(EngineError::from(e), EngineError::Cancelled);
    }
}
