//! Admission: this node's share of the work. While it has a free slot
//! within its CPU budget and memory and disk have headroom, it claims the
//! next job from the shared [`JobLeases`] (fair between owners, across
//! every node) and hands the lease to the video's actor. It looks again
//! when told something may be claimable (a video was queued here or on
//! another node, a slot was freed) and every [`LOOK_EVERY`], which is how
//! a job whose node died is taken over once its lease expires.

mod queue;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::deps::Deps;
use crate::model::VideoId;
use crate::supervisor::SupervisorMsg;
use crate::video::VideoCommand;
use queue::FairQueue;

/// How long resource readings are trusted (sysinfo reads are not free).
const READING_TTL: Duration = Duration::from_secs(2);
/// Claims are tried at least this often while a slot is free.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

pub enum AdmissionMsg {
    /// Something may be claimable now.
    Kick,
    /// The video's run on this node ended: free its slot.
    Release {
        video: VideoId,
    },
    /// A video running here when admission was restarted holds a slot.
    Adopt {
        video: VideoId,
    },
    /// Forget every run (the supervisor was restarted: its runs are gone).
    Reset,
    Positions(RpcReplyPort<HashMap<VideoId, usize>>),
    Stats(RpcReplyPort<AdmissionStats>),
}

impl std::fmt::Debug for AdmissionMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kick => f.write_str("Kick"),
            Self::Release { video } => write!(f, "Release({video})"),
            Self::Adopt { video } => write!(f, "Adopt({video})"),
            Self::Reset => f.write_str("Reset"),
            Self::Positions(_) => f.write_str("Positions"),
            Self::Stats(_) => f.write_str("Stats"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Runs on this node.
    pub running: usize,
    /// Jobs waiting, cluster-wide.
    pub queued: usize,
    /// This node's slots.
    pub slots: usize,
}

/// Free resources, as last read.
#[derive(Debug, Clone, Copy)]
pub struct Headroom {
    pub free_memory: u64,
    pub free_disk: u64,
}

/// Reads free memory and disk; a function so tests can fix the numbers.
pub type HeadroomProbe = Arc<dyn Fn() -> Headroom + Send + Sync>;

/// Reads free memory (sysinfo) and the space an unprivileged process may
/// still use on the filesystem holding `dir` (statvfs: sysinfo's disk list
/// misses overlay and container mounts).
pub fn system_headroom(dir: PathBuf) -> HeadroomProbe {
    Arc::new(move || {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        let _ = std::fs::create_dir_all(&dir);
        let free_disk =
            rustix::fs::statvfs(&dir).map_or(u64::MAX, |s| s.f_bavail.saturating_mul(s.f_frsize));
        Headroom {
            free_memory: sys.available_memory(),
            free_disk,
        }
    })
}

pub(crate) struct Admission {
    pub deps: Arc<Deps>,
    pub headroom: HeadroomProbe,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").finish_non_exhaustive()
    }
}

pub struct AdmissionState {
    running: HashSet<VideoId>,
    reading: Option<(Instant, Headroom)>,
}

impl std::fmt::Debug for AdmissionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionState")
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl Admission {
    fn slots(&self) -> usize {
        self.deps.config.cpu_budget.max(1)
    }

    async fn headroom_ok(&self, state: &mut AdmissionState) -> bool {
        let fresh = state.reading.filter(|(at, _)| at.elapsed() < READING_TTL);
        let reading = match fresh {
            Some((_, r)) => r,
            None => {
                let probe = self.headroom.clone();
                // sysinfo reads /proc: off the executor.
                let Ok(r) = tokio::task::spawn_blocking(move || probe()).await else {
                    return false;
                };
                state.reading = Some((Instant::now(), r));
                r
            }
        };
        let config = &self.deps.config;
        reading.free_memory >= config.min_free_memory && reading.free_disk >= config.min_free_disk
    }

    /// Claims jobs while a slot is free and resources allow.
    async fn fill(&self, state: &mut AdmissionState) {
        if !self.deps.config.processes {
            return;
        }
        while state.running.len() < self.slots() {
            if !self.headroom_ok(state).await {
                tracing::debug!("waiting for memory or disk headroom");
                return;
            }
            let claimed = self
                .deps
                .leases
                .claim(&self.deps.config.node, self.deps.config.lease_ttl)
                .await;
            let lease = match claimed {
                Ok(Some(lease)) => lease,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim a job");
                    return;
                }
            };
            let Ok(supervisor) = self.deps.services.supervisor() else {
                // Restarting: the lease goes back until it can be run.
                let _ = self.deps.leases.release(&lease).await;
                return;
            };
            let id = lease.video.clone();
            let sent = supervisor.cast(SupervisorMsg::Route {
                id: id.clone(),
                command: VideoCommand::Run { lease },
            });
            if sent.is_ok() {
                state.running.insert(id);
            }
        }
    }
}

impl Actor for Admission {
    type Msg = AdmissionMsg;
    type State = AdmissionState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<AdmissionMsg>,
        _: (),
    ) -> Result<AdmissionState, ActorProcessingErr> {
        myself.send_interval(LOOK_EVERY, || AdmissionMsg::Kick);
        myself.cast(AdmissionMsg::Kick)?;
        Ok(AdmissionState {
            running: HashSet::new(),
            reading: None,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<AdmissionMsg>,
        message: AdmissionMsg,
        state: &mut AdmissionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AdmissionMsg::Kick => {}
            AdmissionMsg::Release { video } => {
                if state.running.remove(&video) {
                    // A slot freed: read the resources afresh.
                    state.reading = None;
                }
            }
            AdmissionMsg::Adopt { video } => {
                state.running.insert(video);
            }
            AdmissionMsg::Reset => state.running.clear(),
            AdmissionMsg::Positions(reply) => {
                let positions = match self.deps.leases.queue().await {
                    Ok(snapshot) => FairQueue::from_snapshot(&snapshot).positions(),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read the queue");
                        HashMap::new()
                    }
                };
                let _ = reply.send(positions);
                return Ok(());
            }
            AdmissionMsg::Stats(reply) => {
                let queued = self
                    .deps
                    .leases
                    .queue()
                    .await
                    .map_or(0, |s| s.waiting.len());
                let _ = reply.send(AdmissionStats {
                    running: state.running.len(),
                    queued,
                    slots: self.slots(),
                });
                return Ok(());
            }
        }
        self.fill(state).await;
        Ok(())
    }
}
