//! The video actor: the one owner of a video's life. Every transition
//! (upload finished, queued, started, progress, output published, failed,
//! retry, delete, suspend) is made here, persisted before it is announced;
//! the edges only send commands, which the supervisor routes to the
//! video's actor (starting one when the video has none).
//!
//! A queued video waits as a job in the shared job leases, not as an
//! actor: admission claims it and hands the lease to the video's actor
//! ([`VideoCommand::Run`]), which runs it while it holds the lease
//! (renewed by heartbeats) and fences every change by it. The actor holds
//! the video only while something is to be done: once it has nothing to
//! wait for (no worker running) it tells the supervisor, which stops it.
//! Pipelines run on a worker thread, never on the executor, and talk back
//! with messages, so the actor stays free to take a delete or a suspend.

mod commands;
mod run;

use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;

use crate::deps::Deps;
use crate::error::CoreError;
use crate::leases::Lease;
use crate::model::{Options, SourceInfo, Video, VideoError, VideoId};
use crate::ports::{CancelFlag, EngineError, EngineEvent, EngineProgress};
use crate::supervisor::SupervisorMsg;

/// How the bytes of an upload arrived; all three protocols end here.
#[derive(Debug, Clone)]
pub enum Ingest {
    /// A plain upload: a new video from a complete local file, which is
    /// moved into the store.
    File {
        owner: String,
        filename: String,
        options: Options,
        path: std::path::PathBuf,
    },
    /// A resumable (tus) upload whose last byte arrived in its partial file.
    Resumable { owner: String },
    /// A direct upload: the client put `size` bytes into the store itself.
    Direct { owner: String, size: u64 },
    /// A resumable upload whose bytes were moved into the store (and
    /// charged) when the last run stopped before queueing it.
    Moved { owner: String },
}

/// What the edges ask of a video.
pub enum VideoCommand {
    /// The upload is complete (and checked to be media): store the bytes
    /// and queue the video.
    Ingest {
        ingest: Ingest,
        reply: RpcReplyPort<Result<Video, CoreError>>,
    },
    /// Queue a failed video again from its stored source.
    Retry {
        owner: String,
        reply: RpcReplyPort<Result<Video, CoreError>>,
    },
    /// Stop any work (its pipeline within 2 s) and remove the video, its
    /// objects and files.
    Delete {
        owner: String,
        reply: RpcReplyPort<Result<(), CoreError>>,
    },
    /// Shutdown: stop any work and leave the video queued for the next
    /// start (not counted as a crash).
    Suspend { reply: RpcReplyPort<()> },
    /// Run the video under `lease` (admission claimed its job).
    Run { lease: Lease },
    /// Take up a video found in the catalog (start-up, or this video's
    /// previous actor crashed): a processing video nobody holds goes back
    /// to the queue.
    Resume,
    /// Admission was restarted: claim the slot held.
    Reannounce,
}

impl std::fmt::Debug for VideoCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ingest { ingest, .. } => write!(f, "Ingest({ingest:?})"),
            Self::Retry { .. } => f.write_str("Retry"),
            Self::Delete { .. } => f.write_str("Delete"),
            Self::Suspend { .. } => f.write_str("Suspend"),
            Self::Run { lease } => write!(f, "Run(token {})", lease.token),
            Self::Resume => f.write_str("Resume"),
            Self::Reannounce => f.write_str("Reannounce"),
        }
    }
}

pub enum VideoMsg {
    /// From the supervisor.
    Command(VideoCommand),
    /// Time to renew the lease of the run.
    Heartbeat,
    Probed(SourceInfo),
    Engine(EngineEvent),
    WorkerDone(Result<(), EngineError>),
    WorkerPanicked(String),
}

impl std::fmt::Debug for VideoMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Command(c) => write!(f, "Command({c:?})"),
            Self::Heartbeat => f.write_str("Heartbeat"),
            Self::Probed(_) => f.write_str("Probed"),
            Self::Engine(e) => write!(f, "Engine({e:?})"),
            Self::WorkerDone(r) => write!(f, "WorkerDone({r:?})"),
            Self::WorkerPanicked(m) => write!(f, "WorkerPanicked({m})"),
        }
    }
}

pub(crate) struct VideoActor {
    pub deps: Arc<Deps>,
}

pub(crate) struct VideoArgs {
    pub id: VideoId,
    /// Why the video's previous actor died, when it crashed: the new one
    /// counts it against the video.
    pub after_crash: Option<String>,
}

/// Where the video's processing is, as far as this actor knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nothing to wait for: the actor may be stopped.
    Idle,
    /// A worker runs its pipelines, under a lease.
    Running,
}

/// A stop asked for while the worker ran; answered once it has ended.
pub(crate) enum Stopping {
    Delete(RpcReplyPort<Result<(), CoreError>>),
    Suspend(RpcReplyPort<()>),
}

pub(crate) struct VideoRun {
    id: VideoId,
    /// The record as last stored; `None` until first read, and after delete.
    video: Option<Video>,
    phase: Phase,
    /// Commands taken from the supervisor: it stops an idle actor only when
    /// this matches what it sent, so no command is lost to the stop.
    taken: u64,
    after_crash: Option<String>,
    cancel: CancelFlag,
    /// The lease of the run, while one runs.
    lease: Option<Lease>,
    /// The lease was lost: the run ends without publishing anything.
    lost: bool,
    /// A worker thread runs for this actor.
    working: bool,
    /// The latest progress, sent with the next heartbeat.
    progress: Option<EngineProgress>,
    last_progress: Option<Instant>,
    stopping: Option<Stopping>,
    /// Set when publishing an output failed: the run ends with it.
    failure: Option<VideoError>,
}

impl Actor for VideoActor {
    type Msg = VideoMsg;
    type State = VideoRun;
    type Arguments = VideoArgs;

    async fn pre_start(
        &self,
        _: ActorRef<VideoMsg>,
        args: VideoArgs,
    ) -> Result<VideoRun, ActorProcessingErr> {
        Ok(VideoRun {
            id: args.id,
            video: None,
            phase: Phase::Idle,
            taken: 0,
            after_crash: args.after_crash,
            cancel: CancelFlag::default(),
            lease: None,
            lost: false,
            working: false,
            progress: None,
            last_progress: None,
            stopping: None,
            failure: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<VideoMsg>,
        message: VideoMsg,
        run: &mut VideoRun,
    ) -> Result<(), ActorProcessingErr> {
        let handled = match message {
            VideoMsg::Command(command) => {
                run.taken += 1;
                self.command(&myself, run, command).await
            }
            other => self.progress_of_run(&myself, run, other).await,
        };
        if let Err(e) = handled {
            // A lost lease is no failure of this video: another node has
            // it (or will). Anything else is.
            if !matches!(e.downcast_ref::<CoreError>(), Some(CoreError::LeaseLost(_))) {
                return Err(e);
            }
            self.lose(run);
            if !run.working {
                self.end_lost(run).await;
            }
        }
        if run.phase == Phase::Idle && run.stopping.is_none() {
            if let Ok(supervisor) = self.deps.services.supervisor() {
                let _ = supervisor.cast(SupervisorMsg::Idle {
                    id: run.id.clone(),
                    actor: myself.get_id(),
                    taken: run.taken,
                });
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<VideoMsg>,
        run: &mut VideoRun,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped with a worker still running (the supervisor went down):
        // nobody is left to hear from it.
        if run.phase == Phase::Running {
            self.deps.workers.cancel(&run.id);
        }
        Ok(())
    }
}
