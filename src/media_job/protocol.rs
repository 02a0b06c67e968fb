//! What the server and a worker process say to each other: one JSON
//! [`Request`] on the worker's stdin, then JSON lines ([`Reply`]) on its
//! stdout: `started`, events (stage, progress, output) as they happen, and
//! one final `done` or `failed`. A worker that ends without a final line
//! has crashed, whatever its exit status. Logs go to stderr.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vidmill_actors::{EngineError, EngineEvent, EngineJob, Options, Produced, SourceInfo};

use crate::engine::EngineSettings;

/// One job for one worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The server's pid. The worker asks the kernel to kill it when its
    /// parent dies, then checks its parent is still this one: had the
    /// server died in between, no signal would ever come.
    pub parent: u32,
    /// `RLIMIT_DATA` for the worker, in bytes (0: none): a backstop under
    /// the server's sampling of its resident memory.
    pub data_limit: u64,
    /// `RLIMIT_FSIZE` for the worker, in bytes (0: none): no file it
    /// writes, an output above all, may grow past it.
    pub file_size_limit: u64,
    pub job: Job,
}

/// What the worker does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Job {
    /// Nothing: answers at once (the cost of a worker itself).
    Ping,
    /// What the file is, held to the media limits; answers `probed`.
    Probe {
        source: PathBuf,
        limits: vidmill_pipelines::MediaLimits,
    },
    /// Makes the outputs, reporting events.
    Process {
        job: ProcessJob,
        settings: EngineSettings,
        /// What an earlier probe of the same file learned
        /// (`vidmill_pipelines::MediaFacts`), so it is not probed twice.
        facts: Option<serde_json::Value>,
    },
    /// Holds an output to what the source promised.
    Verify {
        output: Produced,
        source: SourceInfo,
    },
}

/// [`EngineJob`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessJob {
    pub source: PathBuf,
    pub info: SourceInfo,
    pub options: Options,
    pub work_dir: PathBuf,
    pub stall_timeout_ms: u64,
}

impl From<&EngineJob> for ProcessJob {
    fn from(job: &EngineJob) -> Self {
        Self {
            source: job.source.clone(),
            info: job.info.clone(),
            options: job.options.clone(),
            work_dir: job.work_dir.clone(),
            stall_timeout_ms: u64::try_from(job.stall_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl From<ProcessJob> for EngineJob {
    fn from(job: ProcessJob) -> Self {
        Self {
            source: job.source,
            info: job.info,
            options: job.options,
            work_dir: job.work_dir,
            stall_timeout: Duration::from_millis(job.stall_timeout_ms),
        }
    }
}

/// One line from the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// The worker is set up (death signal, limits) and starts the job.
    Started {
        pid: u32,
    },
    Event(EngineEvent),
    /// A probe's answer: the source as the API shows it, and the facts the
    /// pipelines need (passed back with `process`).
    Probed {
        info: SourceInfo,
        facts: serde_json::Value,
    },
    /// The job succeeded.
    Done,
    /// The job failed; the kind is the video's error code.
    Failed(EngineError),
}

impl Reply {
    /// Whether this line ends the job.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Done | Self::Failed(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vidmill_actors::{EngineProgress, Mp4Output, Stage};

    fn round_trip(reply: Reply) {
        let line = serde_json::to_string(&reply).expect("serialize");
        assert!(!line.contains('\n'), "one line: {line}");
        let back: Reply = serde_json::from_str(&line).expect("deserialize");
        assert_eq!(back, reply, "{line}");
    }

    #[test]
    fn every_reply_is_one_json_line_that_reads_back() {
        round_trip(Reply::Started { pid: 7 });
        round_trip(Reply::Event(EngineEvent::Stage(Stage::Converting)));
        round_trip(Reply::Event(EngineEvent::Progress(EngineProgress {
            percent: 12.5,
            speed: 3.0,
            eta_seconds: Some(4.0),
        })));
        round_trip(Reply::Event(EngineEvent::Output(Produced::Mp4 {
            path: "/w/video.mp4".into(),
            report: Mp4Output {
                size_bytes: 1,
                duration: Some(2.0),
                width: 640,
                height: 360,
                method: "remux".into(),
            },
        })));
        round_trip(Reply::Probed {
            info: SourceInfo::default(),
            facts: serde_json::json!({"container": "mp4"}),
        });
        round_trip(Reply::Done);
        round_trip(Reply::Failed(EngineError::Cancelled));
        round_trip(Reply::Failed(EngineError::Corrupt("bad \"box\"\n".into())));
    }

    #[test]
    fn an_error_carries_its_kind_and_message() {
        let line = serde_json::to_string(&Reply::Failed(EngineError::LimitExceeded {
            limit: "limits.worker_memory_bytes".into(),
            why: "memory".into(),
        }))
        .expect("serialize");
        assert_eq!(
            line,
            r#"{"failed":{"kind":"limit-exceeded","message":{"limit":"limits.worker_memory_bytes","why":"memory"}}}"#
        );
    }
}
