//! The typed handle the edges (HTTP, WebSocket, CLI) use to talk to the
//! core. It changes no video itself: every transition is a command to the
//! video's actor. Every call into an actor has a timeout; reads that need
//! no actor go straight to the catalog's read connections.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use ractor::ActorRef;

use crate::admission::{AdmissionMsg, AdmissionStats};
use crate::catalog::Page;
use crate::deps::Deps;
use crate::error::CoreError;
use crate::hub::{Announced, HubMessage, HubMsg, Outlet, Scope, Subscription};
use crate::model::{new_id, Options, ProgressEvent, StateEvent, Video, VideoId};
use crate::root::RootMsg;
use crate::state::VideoState;
use crate::supervisor::SupervisorMsg;
use crate::video::{Ingest, VideoCommand};

#[derive(Clone)]
pub struct Handle {
    pub(crate) deps: Arc<Deps>,
    pub(crate) root: ActorRef<RootMsg>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

/// Snapshot, replay, then live events of one video or one owner's videos.
#[derive(Debug)]
pub struct Feed {
    /// The subscribed videos as they are now (unfinished ones for an owner).
    pub snapshot: Vec<Video>,
    replay: VecDeque<Arc<Announced>>,
    live: Subscription,
    seen: Seen,
}

impl Feed {
    /// The next event; `None` once the hub closed the feed
    /// ([`Feed::close_reason`] says why).
    pub async fn next(&mut self) -> Option<HubMessage> {
        if let Some(announced) = self.replay.pop_front() {
            self.seen.state(&announced.event);
            return Some(HubMessage::State(announced));
        }
        loop {
            let message = self.live.next().await?;
            let new = match &message {
                HubMessage::State(a) => self.seen.live_state(&a.event),
                HubMessage::Progress(p) => self.seen.progress(p),
            };
            if new {
                return Some(message);
            }
        }
    }

    pub fn close_reason(&self) -> Option<String> {
        self.live.close_reason()
    }
}

/// What a subscription reads from the catalog once its live events are
/// flowing: the subscribed videos as they are now, then (one video, with
/// `since`) the state events after `since`, in order. Whoever delivers
/// the live events puts these first and drops the live events they
/// already show ([`Seen`]).
#[derive(Debug)]
pub struct Catchup {
    /// The subscribed videos as they are now (unfinished ones for an owner).
    pub snapshot: Vec<Video>,
    /// The state events after `since`, showing the video as it is now.
    pub replay: Vec<Arc<Announced>>,
    /// What the snapshot stands for (the replay is marked as it is sent).
    pub seen: Seen,
}

/// Highest state seq delivered per video the catch-up showed, to drop the
/// live events it already showed. Other videos need no record: the hub
/// sends each video's events once and in order.
#[derive(Debug, Clone, Default)]
pub struct Seen(HashMap<VideoId, u64>);

impl Seen {
    /// Whether live state event `e` is news; if so it counts as delivered.
    pub fn live_state(&mut self, e: &StateEvent) -> bool {
        match self.0.get_mut(&e.video_id) {
            Some(seen) if e.seq <= *seen => false,
            Some(seen) => {
                *seen = e.seq;
                true
            }
            None => true,
        }
    }

    /// Whether state event `e` of the catch-up is news; if so it counts as
    /// delivered.
    pub fn state(&mut self, e: &StateEvent) -> bool {
        match self.0.get_mut(&e.video_id) {
            Some(seen) if e.seq <= *seen => false,
            Some(seen) => {
                *seen = e.seq;
                true
            }
            None => {
                self.0.insert(e.video_id.clone(), e.seq);
                true
            }
        }
    }

    /// Whether progress `p` is not from before a state already delivered.
    pub fn progress(&self, p: &ProgressEvent) -> bool {
        self.0.get(&p.video_id).is_none_or(|s| p.seq >= *s)
    }
}

/// Numbers for `/metrics` and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub admission: AdmissionStats,
    pub by_state: Vec<(VideoState, u64)>,
    pub subscribers: usize,
}

impl Handle {
    async fn call<M, T>(
        &self,
        actor: &ActorRef<M>,
        msg: impl FnOnce(ractor::RpcReplyPort<T>) -> M,
    ) -> Result<T, CoreError>
    where
        M: ractor::Message,
        T: Send + 'static,
    {
        match actor.call(msg, Some(self.deps.config.call_timeout)).await? {
            ractor::rpc::CallResult::Success(v) => Ok(v),
            ractor::rpc::CallResult::Timeout => Err(CoreError::Unavailable(
                "the core did not answer in time".into(),
            )),
            ractor::rpc::CallResult::SenderError => Err(CoreError::Unavailable(
                "the core dropped the request".into(),
            )),
        }
    }

    /// Sends `command` to video `id`'s actor and waits for its answer.
    async fn command<T: Send + 'static>(
        &self,
        id: &str,
        command: impl FnOnce(ractor::RpcReplyPort<Result<T, CoreError>>) -> VideoCommand,
    ) -> Result<T, CoreError> {
        let supervisor = self.deps.services.supervisor()?;
        let id = id.to_string();
        self.call(&supervisor, |reply| SupervisorMsg::Route {
            id,
            command: command(reply),
        })
        .await?
    }

    /// Creates a video from a complete local source file (a plain upload),
    /// which is moved into the store, and queues it.
    pub async fn create(
        &self,
        owner: &str,
        filename: &str,
        options: Options,
        source: &Path,
    ) -> Result<Video, CoreError> {
        let ingest = Ingest::File {
            owner: owner.into(),
            filename: filename.into(),
            options,
            path: source.to_path_buf(),
        };
        self.ingest(&new_id(), ingest).await
    }

    /// The one way an upload's bytes become a queued video, whatever the
    /// protocol.
    pub async fn ingest(&self, id: &str, ingest: Ingest) -> Result<Video, CoreError> {
        self.command(id, |reply| VideoCommand::Ingest { ingest, reply })
            .await
    }

    /// Remembers the address to mail `owner`'s results to.
    pub async fn set_contact(&self, owner: &str, email: &str) -> Result<(), CoreError> {
        self.deps.catalog.set_contact(owner, email).await
    }

    /// A video whoever owns it: only for requests that prove their right by
    /// other means (a signed link).
    pub async fn get_any(&self, id: &str) -> Result<Option<Video>, CoreError> {
        self.deps.catalog.get(id).await
    }

    /// A video of `owner`; another owner's reads as missing.
    pub async fn get(&self, owner: &str, id: &str) -> Result<Video, CoreError> {
        self.deps
            .catalog
            .get_owned(owner, id)
            .await?
            .ok_or_else(|| CoreError::NotFound(id.into()))
    }

    pub async fn list(
        &self,
        owner: &str,
        state: Option<VideoState>,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<Page, CoreError> {
        self.deps.catalog.list(owner, state, limit, cursor).await
    }

    /// What `owner` uses of the quotas the catalog counts.
    pub async fn usage(&self, owner: &str) -> Result<crate::catalog::Usage, CoreError> {
        self.deps.catalog.usage(owner).await
    }

    /// Stops any running work (its pipeline within 2 s), then removes the
    /// record and every object of the video.
    pub async fn delete(&self, owner: &str, id: &str) -> Result<(), CoreError> {
        let owner = owner.to_string();
        self.command(id, |reply| VideoCommand::Delete { owner, reply })
            .await
    }

    /// Queues a failed video again from its stored source; `attempts` + 1.
    pub async fn retry(&self, owner: &str, id: &str) -> Result<Video, CoreError> {
        let owner = owner.to_string();
        self.command(id, |reply| VideoCommand::Retry { owner, reply })
            .await
    }

    /// The latest progress of a processing video.
    pub fn progress(&self, id: &str) -> Option<Arc<ProgressEvent>> {
        self.deps.board.get(id)
    }

    /// The progress the node processing `id` last renewed its lease with:
    /// for a node that has not heard it on the bus (it started after the
    /// run's last report, or its listener was reconnecting).
    pub async fn leased_progress(
        &self,
        id: &str,
    ) -> Result<Option<crate::leases::LeasedProgress>, CoreError> {
        self.deps.leases.progress(id).await
    }

    /// Events of one video (`Some(id)`) or all of `owner`'s: a snapshot, the
    /// state events after `since` (one video only), then live events.
    pub async fn subscribe(
        &self,
        owner: &str,
        video: Option<&str>,
        since: Option<u64>,
    ) -> Result<Feed, CoreError> {
        let scope = self.scope(owner, video).await?;
        // Subscribe first, read second: nothing falls between the two.
        let hub = self.deps.services.hub()?;
        let live = self
            .call(&hub, |reply| HubMsg::Subscribe(scope, reply))
            .await?;
        let Catchup {
            snapshot,
            replay,
            seen,
        } = self.catch_up(owner, video, since).await?;
        Ok(Feed {
            snapshot,
            replay: replay.into(),
            live,
            seen,
        })
    }

    /// [`Handle::subscribe`] for an edge that delivers the events itself:
    /// the live events go to `outlet` from before the catch-up returned
    /// here is read, so the edge sends the catch-up first and holds back
    /// the live events until it has.
    pub async fn attach(
        &self,
        owner: &str,
        video: Option<&str>,
        since: Option<u64>,
        outlet: Box<dyn Outlet>,
    ) -> Result<Catchup, CoreError> {
        let scope = self.scope(owner, video).await?;
        let hub = self.deps.services.hub()?;
        self.call(&hub, |reply| HubMsg::Attach(scope, outlet, reply))
            .await?;
        self.catch_up(owner, video, since).await
    }

    /// One video of `owner`'s (checked) or all of them.
    async fn scope(&self, owner: &str, video: Option<&str>) -> Result<Scope, CoreError> {
        Ok(match video {
            Some(id) => {
                self.get(owner, id).await?;
                Scope::Video(id.into())
            }
            None => Scope::Owner(owner.into()),
        })
    }

    /// What a subscription reads once its live events flow.
    async fn catch_up(
        &self,
        owner: &str,
        video: Option<&str>,
        since: Option<u64>,
    ) -> Result<Catchup, CoreError> {
        let (snapshot, replay) = match video {
            Some(id) => {
                let v = self.get(owner, id).await?;
                let replay = match since {
                    Some(seq) => {
                        // Replayed events show the video as it is now.
                        let video = Arc::new(v.clone());
                        self.deps
                            .catalog
                            .events_after(id, seq)
                            .await?
                            .into_iter()
                            .map(|event| {
                                Arc::new(Announced {
                                    event,
                                    video: video.clone(),
                                    remote: false,
                                })
                            })
                            .collect()
                    }
                    None => Vec::new(),
                };
                (vec![v], replay)
            }
            None => {
                let mut all = Vec::new();
                let mut cursor = None;
                loop {
                    let page = self.deps.catalog.list(owner, None, 500, cursor).await?;
                    all.extend(page.videos.into_iter().filter(|v| !v.state.is_terminal()));
                    match page.next_cursor {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                (all, Vec::new())
            }
        };
        let mut seen: HashMap<VideoId, u64> = snapshot
            .iter()
            .map(|v| (v.id.clone(), v.last_seq))
            .collect();
        if since.is_some() {
            // Replayed events are delivered; the snapshot stands before them.
            for v in &snapshot {
                seen.insert(v.id.clone(), since.unwrap_or(0));
            }
        }
        Ok(Catchup {
            snapshot,
            replay,
            seen: Seen(seen),
        })
    }

    /// Records a temporary file (e.g. an upload being received) so that a
    /// crash cannot leak it: the next start removes it.
    pub async fn track_temp(&self, path: &Path, kind: &str) -> Result<(), CoreError> {
        self.deps
            .catalog
            .record_artefact(crate::catalog::Artefact {
                location: path.to_string_lossy().into_owned(),
                kind: kind.into(),
                video_id: None,
            })
            .await
    }

    /// The temporary file is gone (removed, or moved into the store).
    pub async fn untrack_temp(&self, path: &Path) -> Result<(), CoreError> {
        self.deps
            .catalog
            .forget_artefact(&path.to_string_lossy())
            .await
    }

    /// Every video's live events, for the server's own bookkeeping (the
    /// latest progress of each video, metrics).
    pub async fn subscribe_all(&self) -> Result<Subscription, CoreError> {
        let hub = self.deps.services.hub()?;
        self.call(&hub, |reply| HubMsg::Subscribe(Scope::All, reply))
            .await
    }

    /// How many videos start before each queued one.
    pub async fn queue_positions(&self) -> Result<HashMap<VideoId, usize>, CoreError> {
        let admission = self.deps.services.admission()?;
        self.call(&admission, AdmissionMsg::Positions).await
    }

    pub async fn stats(&self) -> Result<Stats, CoreError> {
        let (admission, hub) = (self.deps.services.admission()?, self.deps.services.hub()?);
        Ok(Stats {
            admission: self.call(&admission, AdmissionMsg::Stats).await?,
            by_state: self.deps.catalog.count_by_state().await?,
            subscribers: self.call(&hub, HubMsg::Count).await?,
        })
    }

    /// Ids of videos whose actor is alive.
    pub async fn active(&self) -> Result<Vec<VideoId>, CoreError> {
        let supervisor = self.deps.services.supervisor()?;
        self.call(&supervisor, SupervisorMsg::Running).await
    }

    /// Graceful stop: every running pipeline is cancelled and its video put
    /// back in the queue (not counted as a crash), so the next start resumes
    /// it; then the actors stop.
    pub async fn shutdown(&self) -> Result<(), CoreError> {
        if let Ok(supervisor) = self.deps.services.supervisor() {
            let suspended = supervisor
                .call(
                    SupervisorMsg::SuspendAll,
                    Some(self.deps.config.call_timeout),
                )
                .await;
            if !matches!(suspended, Ok(ractor::rpc::CallResult::Success(()))) {
                tracing::warn!("not every video suspended in time");
            }
        }
        self.root.stop(None);
        Ok(())
    }
}
