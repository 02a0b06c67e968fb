//! [`ProcessEngine`]: the core's `MediaEngine` port with every call (probe,
//! process, verify) run in a worker process of its own, so the server
//! process never demuxes or decodes. A probe's facts are kept until the
//! run that asked for them starts, so a file is probed once per run.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vidmill_actors::{
    CancelFlag, EngineError, EngineEvent, EngineJob, MediaEngine, Produced, SourceInfo,
};

use super::limits::WorkerLimits;
use super::protocol::{Job, ProcessJob, Reply, Request};
use super::watch;
use crate::engine::EngineSettings;

/// Probes whose run has not started yet. Uploads are probed too and never
/// run under the path they were probed at, so the oldest entries go.
const FACTS_KEPT: usize = 32;

#[derive(Debug)]
pub struct ProcessEngine {
    exe: PathBuf,
    settings: EngineSettings,
    limits: WorkerLimits,
    facts: Mutex<VecDeque<(PathBuf, serde_json::Value)>>,
}

impl ProcessEngine {
    /// Workers run this very binary (`vidmill media-job`).
    pub fn new(settings: EngineSettings, limits: WorkerLimits) -> Result<Self, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the vidmill binary for worker processes: {e}"))?;
        Ok(Self {
            exe,
            settings,
            limits,
            facts: Mutex::default(),
        })
    }

    /// Starts a worker that does nothing and waits for its answer: the
    /// fixed cost every job pays for its isolation.
    pub fn ping(&self) -> Result<Duration, EngineError> {
        let started = Instant::now();
        self.call(
            Job::Ping,
            &["ping".into()],
            None,
            &CancelFlag::default(),
            &mut |_| {},
        )?;
        Ok(started.elapsed())
    }

    fn call(
        &self,
        job: Job,
        label: &[String],
        media_seconds: Option<f64>,
        cancel: &CancelFlag,
        on_reply: &mut dyn FnMut(Reply),
    ) -> Result<(), EngineError> {
        let request = Request {
            parent: std::process::id(),
            data_limit: self.limits.data_limit(),
            file_size_limit: self.limits.output_bytes,
            job,
        };
        let budget = self.limits.budget(media_seconds);
        match watch::run(&self.exe, &request, label, budget, cancel, on_reply)? {
            Reply::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    fn remember(&self, source: &Path, facts: serde_json::Value) {
        if let Ok(mut kept) = self.facts.lock() {
            kept.retain(|(p, _)| p != source);
            if kept.len() == FACTS_KEPT {
                kept.pop_front();
            }
            kept.push_back((source.to_path_buf(), facts));
        }
    }

    fn take_facts(&self, source: &Path) -> Option<serde_json::Value> {
        let mut kept = self.facts.lock().ok()?;
        let at = kept.iter().position(|(p, _)| p == source)?;
        kept.remove(at).map(|(_, f)| f)
    }
}

/// What `ps` shows for a worker: what it does and on which file.
fn label(op: &str, path: &Path) -> Vec<String> {
    vec![op.into(), path.to_string_lossy().into_owned()]
}

impl MediaEngine for ProcessEngine {
    fn probe(&self, source: &Path) -> Result<SourceInfo, EngineError> {
        let mut probed = None;
        self.call(
            Job::Probe {
                source: source.to_path_buf(),
                limits: self.settings.limits,
            },
            &label("probe", source),
            None,
            &CancelFlag::default(),
            &mut |reply| {
                if let Reply::Probed { info, facts } = reply {
                    probed = Some((info, facts));
                }
            },
        )?;
        let (info, facts) = probed.ok_or_else(|| {
            EngineError::Failed("the probe's worker answered without the facts".into())
        })?;
        self.remember(source, facts);
        Ok(info)
    }

    fn process(
        &self,
        job: &EngineJob,
        cancel: &CancelFlag,
        events: &(dyn Fn(EngineEvent) + Send + Sync),
    ) -> Result<(), EngineError> {
        let request = Job::Process {
            job: ProcessJob::from(job),
            settings: self.settings.clone(),
            facts: self.take_facts(&job.source),
        };
        self.call(
            request,
            &label("process", &job.work_dir),
            job.info.duration,
            cancel,
            &mut |reply| {
                if let Reply::Event(event) = reply {
                    events(event);
                }
            },
        )
    }

    fn verify(&self, output: &Produced, source: &SourceInfo) -> Result<(), EngineError> {
        let request = Job::Verify {
            output: output.clone(),
            source: source.clone(),
        };
        self.call(
            request,
            &label("verify", output.path()),
            None,
            &CancelFlag::default(),
            &mut |_| {},
        )
    }
}
