//! The worker side (`vidmill media-job`, hidden): reads one request from
//! stdin, ties its life to the server's (`PR_SET_PDEATHSIG`), sets its
//! memory backstop, runs the job with the in-process GStreamer engine and
//! writes the replies to stdout. It never outlives the job: one process,
//! one job, so whatever a hostile file does to the decoder dies with it.

use std::io::{Read, Write};
use std::process::ExitCode;

use vidmill_actors::{CancelFlag, EngineError, EngineEvent, MediaEngine};
use vidmill_pipelines as media;

use super::protocol::{Job, Reply, Request};
use super::sandbox;
use crate::engine::{engine_error, source_info, GstEngine};

/// Why the worker could not even start its job (reported on stderr; the
/// server then sees a worker that ended without a result).
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot read the request: {0}")]
    Request(String),
    #[error("the server (pid {expected}) is gone; parent is now {actual:?}")]
    Orphaned { expected: u32, actual: Option<u32> },
    #[error("cannot set up the worker: {0}")]
    Setup(std::io::Error),
}

impl ChildError {
    /// The server went away: nobody is waiting for an answer.
    pub fn is_orphaned(&self) -> bool {
        matches!(self, Self::Orphaned { .. })
    }
}

/// Runs one job; the exit code is 0 whenever a final reply was written.
pub fn run() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_orphaned() {
                tracing::error!(error = %e, "media job could not start");
            }
            ExitCode::from(2)
        }
    }
}

fn serve() -> Result<(), ChildError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| ChildError::Request(e.to_string()))?;
    let request: Request =
        serde_json::from_str(&text).map_err(|e| ChildError::Request(e.to_string()))?;
    tie_to_parent(request.parent)?;
    limit_memory(request.data_limit)?;
    limit_file_size(request.file_size_limit)?;
    sandbox::deny_network().map_err(ChildError::Setup)?;
    send(&Reply::Started {
        pid: std::process::id(),
    });
    let outcome = match request.job {
        Job::Ping => Ok(()),
        // Not every pipeline initialises GStreamer itself (a probe in the
        // same process used to do it first).
        job => media::init()
            .map_err(engine_error)
            .and_then(|()| run_job(job)),
    };
    let outcome = outcome.map_err(|e| starved(e, request.data_limit));
    send(&match outcome {
        Ok(()) => Reply::Done,
        Err(e) => Reply::Failed(e),
    });
    Ok(())
}

fn run_job(job: Job) -> Result<(), EngineError> {
    match job {
        Job::Ping => Ok(()),
        Job::Probe { source, limits } => probe(&source, &limits),
        Job::Process {
            job,
            settings,
            facts,
        } => {
            let engine = GstEngine::new(settings);
            let job = vidmill_actors::EngineJob::from(job);
            if let Some(facts) = facts.and_then(|f| serde_json::from_value(f).ok()) {
                engine.remember(&job.source, facts);
            }
            // Nothing here cancels: the server stops a worker by killing it.
            let on_event = |event: EngineEvent| send(&Reply::Event(event));
            engine.process(&job, &CancelFlag::default(), &on_event)
        }
        Job::Verify { output, source } => {
            GstEngine::new(Default::default()).verify(&output, &source)
        }
    }
}

/// Under its `RLIMIT_DATA` an allocation fails and most elements fail
/// gracefully (x264, libav) rather than abort: that is the memory limit
/// speaking, not a broken pipeline or file.
fn starved(e: EngineError, data_limit: u64) -> EngineError {
    let text = e.to_string().to_lowercase();
    let allocation = ["malloc", "alloc", "out of memory", "cannot allocate"]
        .iter()
        .any(|w| text.contains(w));
    match e {
        EngineError::Failed(_) | EngineError::Corrupt(_) | EngineError::Stalled(_)
            if data_limit > 0 && allocation =>
        {
            EngineError::LimitExceeded {
                limit: "limits.worker_memory_bytes".into(),
                why: format!(
                    "the job ran out of memory under its {} MiB data limit \
                     (from limits.worker_memory_bytes): {e}",
                    data_limit >> 20
                ),
            }
        }
        e => e,
    }
}

fn probe(source: &std::path::Path, limits: &media::MediaLimits) -> Result<(), EngineError> {
    let facts = media::probe_within(source, limits).map_err(engine_error)?;
    let info = source_info(&facts);
    let facts = serde_json::to_value(&facts).map_err(|e| EngineError::Failed(e.to_string()))?;
    send(&Reply::Probed { info, facts });
    Ok(())
}

/// Asks for SIGKILL when the server dies, then makes sure it has not died
/// already (the signal only covers deaths after the request).
fn tie_to_parent(expected: u32) -> Result<(), ChildError> {
    use rustix::process::{getppid, set_parent_process_death_signal, Signal};
    set_parent_process_death_signal(Some(Signal::KILL)).map_err(|e| ChildError::Setup(e.into()))?;
    let actual = getppid().map(|p| p.as_raw_nonzero().get() as u32);
    if actual != Some(expected) {
        return Err(ChildError::Orphaned { expected, actual });
    }
    Ok(())
}

/// `RLIMIT_DATA` rather than `RLIMIT_AS`: GStreamer's threads each reserve
/// stacks and malloc arenas that count as address space long before they
/// are used (a 320x240 transcode maps 1.4 GiB for 105 MiB resident), so
/// an address-space cap fails healthy jobs; the data limit counts what is
/// made writable.
fn limit_memory(bytes: u64) -> Result<(), ChildError> {
    set_limit(rustix::process::Resource::Data, bytes)
}

/// A write past `bytes` raises SIGXFSZ, whose default kills the worker;
/// the server names the signal as the output limit.
fn limit_file_size(bytes: u64) -> Result<(), ChildError> {
    set_limit(rustix::process::Resource::Fsize, bytes)
}

/// Sets both the soft and the hard `resource` limit to `bytes` (0: none).
fn set_limit(resource: rustix::process::Resource, bytes: u64) -> Result<(), ChildError> {
    use rustix::process::{setrlimit, Rlimit};
    if bytes == 0 {
        return Ok(());
    }
    let limit = Rlimit {
        current: Some(bytes),
        maximum: Some(bytes),
    };
    setrlimit(resource, limit).map_err(|e| ChildError::Setup(e.into()))
}

/// Writes one reply line. A server that stopped reading is gone or has
/// killed us: there is nothing left to do but end.
fn send(reply: &Reply) {
    // Held for the whole line, so lines from the engine's progress thread
    // and the job's own never interleave.
    let mut out = std::io::stdout().lock();
    let line = serde_json::to_string(reply).unwrap_or_else(|e| {
        serde_json::to_string(&Reply::Failed(EngineError::Failed(e.to_string())))
            .unwrap_or_default()
    });
    let written = out
        .write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if written.is_err() {
        std::process::exit(3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_allocation_under_the_limit_is_the_limit() {
        let e =
            EngineError::Failed("Encode x264 frame failed: malloc of size 7332480 failed".into());
        let limited = starved(e.clone(), 600 << 20);
        assert_eq!(limited.code(), "limit-exceeded");
        assert!(limited.to_string().contains("600 MiB"), "{limited}");
        assert!(
            matches!(&limited, EngineError::LimitExceeded { limit, .. } if limit == "limits.worker_memory_bytes"),
            "{limited:?}"
        );
        assert_eq!(starved(e.clone(), 0), e, "no limit, no verdict");
        let corrupt = EngineError::Corrupt("no frames".into());
        assert_eq!(starved(corrupt.clone(), 600 << 20), corrupt);
    }
}
