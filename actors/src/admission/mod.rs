//! Admission: grants pipeline slots within the CPU budget while memory and
//! disk have headroom, in the fair order of [`queue::FairQueue`], and tells
//! each waiting video its queue position.

mod queue;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::model::VideoId;
use queue::FairQueue;

/// How long resource readings are trusted (sysinfo reads are not free).
const READING_TTL: Duration = Duration::from_secs(2);
/// When a slot is free but resources are short, look again after this.
const RECHECK: Duration = Duration::from_secs(1);

/// Where to deliver a granted slot.
pub type Grant = Box<dyn FnOnce() + Send>;

pub enum AdmissionMsg {
    /// Queue `video` of `owner`; `grant` runs when its slot is granted.
    Request {
        owner: String,
        video: VideoId,
        grant: Grant,
    },
    /// The video's pipeline ended (or it stopped waiting): free its slot.
    Release {
        video: VideoId,
    },
    /// A video already running when admission was restarted holds a slot.
    Adopt {
        owner: String,
        video: VideoId,
    },
    Positions(RpcReplyPort<HashMap<VideoId, usize>>),
    Stats(RpcReplyPort<AdmissionStats>),
    Recheck,
}

impl std::fmt::Debug for AdmissionMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Request { video, .. } => write!(f, "Request({video})"),
            Self::Release { video } => write!(f, "Release({video})"),
            Self::Adopt { video, .. } => write!(f, "Adopt({video})"),
            Self::Positions(_) => f.write_str("Positions"),
            Self::Stats(_) => f.write_str("Stats"),
            Self::Recheck => f.write_str("Recheck"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    pub running: usize,
    pub queued: usize,
    pub slots: usize,
}

/// Free resources, as last read.
#[derive(Debug, Clone, Copy)]
pub struct Headroom {
    pub free_memory: u64,
    pub free_disk: u64,
}

/// Reads free memory and disk; a function so tests can fix the numbers.
pub type HeadroomProbe = std::sync::Arc<dyn Fn() -> Headroom + Send + Sync>;

/// Reads free memory (sysinfo) and the space an unprivileged process may
/// still use on the filesystem holding `dir` (statvfs: sysinfo's disk list
/// misses overlay and container mounts).
pub fn system_headroom(dir: PathBuf) -> HeadroomProbe {
    std::sync::Arc::new(move || {
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

#[derive(Debug)]
pub struct Admission;

impl std::fmt::Debug for AdmissionArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionArgs")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AdmissionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionState")
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

pub struct AdmissionArgs {
    pub slots: usize,
    pub min_free_memory: u64,
    pub min_free_disk: u64,
    pub headroom: HeadroomProbe,
}

pub struct AdmissionState {
    args: AdmissionArgs,
    queue: FairQueue,
    grants: HashMap<VideoId, Grant>,
    running: HashMap<VideoId, String>,
    reading: Option<(Instant, Headroom)>,
    recheck_pending: bool,
}

impl AdmissionState {
    async fn headroom_ok(&mut self) -> bool {
        let fresh = self.reading.filter(|(at, _)| at.elapsed() < READING_TTL);
        let reading = match fresh {
            Some((_, r)) => r,
            None => {
                let probe = self.args.headroom.clone();
                // sysinfo reads /proc: off the executor.
                let Ok(r) = tokio::task::spawn_blocking(move || probe()).await else {
                    return false;
                };
                self.reading = Some((Instant::now(), r));
                r
            }
        };
        reading.free_memory >= self.args.min_free_memory
            && reading.free_disk >= self.args.min_free_disk
    }

    async fn dispatch(&mut self, myself: &ActorRef<AdmissionMsg>) {
        while self.running.len() < self.args.slots.max(1) && self.queue.len() > 0 {
            if !self.headroom_ok().await {
                if !self.recheck_pending {
                    self.recheck_pending = true;
                    tracing::info!(
                        queued = self.queue.len(),
                        "waiting for memory or disk headroom"
                    );
                    myself.send_after(RECHECK, || AdmissionMsg::Recheck);
                }
                return;
            }
            let Some((owner, video)) = self.queue.grant() else {
                return;
            };
            self.running.insert(video.clone(), owner);
            if let Some(grant) = self.grants.remove(&video) {
                grant();
            }
        }
    }
}

impl Actor for Admission {
    type Msg = AdmissionMsg;
    type State = AdmissionState;
    type Arguments = AdmissionArgs;

    async fn pre_start(
        &self,
        _: ActorRef<AdmissionMsg>,
        args: AdmissionArgs,
    ) -> Result<AdmissionState, ActorProcessingErr> {
        Ok(AdmissionState {
            args,
            queue: FairQueue::default(),
            grants: HashMap::new(),
            running: HashMap::new(),
            reading: None,
            recheck_pending: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AdmissionMsg>,
        message: AdmissionMsg,
        state: &mut AdmissionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AdmissionMsg::Request {
                owner,
                video,
                grant,
            } => {
                if !state.running.contains_key(&video) {
                    state.queue.push(&owner, video.clone());
                    state.grants.insert(video, grant);
                }
            }
            AdmissionMsg::Release { video } => {
                state.grants.remove(&video);
                match state.running.remove(&video) {
                    Some(owner) => state.queue.finished(&owner),
                    None => {
                        state.queue.remove(&video);
                    }
                }
            }
            AdmissionMsg::Adopt { owner, video } => {
                if !state.running.contains_key(&video) {
                    state.queue.adopt(&owner);
                    state.running.insert(video, owner);
                }
            }
            AdmissionMsg::Positions(reply) => {
                let _ = reply.send(state.queue.positions());
            }
            AdmissionMsg::Stats(reply) => {
                let _ = reply.send(AdmissionStats {
                    running: state.running.len(),
                    queued: state.queue.len(),
                    slots: state.args.slots.max(1),
                });
            }
            AdmissionMsg::Recheck => {
                state.recheck_pending = false;
                state.reading = None;
            }
        }
        state.dispatch(&myself).await;
        Ok(())
    }
}
