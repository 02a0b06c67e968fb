//! The typed handle the edges (HTTP, WebSocket, CLI) use to talk to the
//! core. Every call into an actor has a timeout; reads that need no actor go
//! straight to the catalog's read connections.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use ractor::ActorRef;

use crate::admission::{AdmissionMsg, AdmissionStats};
use crate::catalog::{Change, NewVideo, Page};
use crate::deps::Deps;
use crate::error::CoreError;
use crate::hub::{HubMessage, HubMsg, Scope, Subscription};
use crate::model::{new_id, Options, StateEvent, Video, VideoId};
use crate::ports::object_key;
use crate::state::VideoState;
use crate::supervisor::SupervisorMsg;

#[derive(Clone)]
pub struct Handle {
    pub(crate) deps: Arc<Deps>,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
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
    replay: VecDeque<StateEvent>,
    live: Subscription,
    /// Highest state seq delivered per video, to drop live duplicates of
    /// what the snapshot or replay already showed.
    seen: HashMap<VideoId, u64>,
}

impl Feed {
    /// The next event; `None` once the hub closed the feed
    /// ([`Feed::close_reason`] says why).
    pub async fn next(&mut self) -> Option<HubMessage> {
        if let Some(event) = self.replay.pop_front() {
            self.seen.insert(event.video_id.clone(), event.seq);
            return Some(HubMessage::State(event));
        }
        loop {
            let message = self.live.next().await?;
            match &message {
                HubMessage::State(e) => {
                    let seen = self.seen.entry(e.video_id.clone()).or_default();
                    if e.seq <= *seen {
                        continue;
                    }
                    *seen = e.seq;
                }
                HubMessage::Progress(p) => {
                    if self.seen.get(&p.video_id).is_some_and(|s| p.seq < *s) {
                        continue;
                    }
                }
            }
            return Some(message);
        }
    }

    pub fn close_reason(&self) -> Option<String> {
        self.live.close_reason()
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

    /// Creates a video from a complete local source file, which is moved
    /// into the store, and queues it.
    pub async fn create(
        &self,
        owner: &str,
        filename: &str,
        options: Options,
        source: &Path,
    ) -> Result<Video, CoreError> {
        let id = new_id();
        let source_bytes = self
            .deps
            .store
            .put_file(&object_key(&id, "source"), source)
            .await
            .map_err(|e| CoreError::Storage(e.to_string()))?;
        let inserted = self
            .deps
            .insert_video(NewVideo {
                id: id.clone(),
                owner: owner.into(),
                filename: filename.into(),
                options,
                state: VideoState::Queued,
                source_bytes,
            })
            .await;
        let video = match inserted {
            Ok(video) => video,
            Err(e) => {
                self.deps.discard_objects(&id).await;
                return Err(e);
            }
        };
        self.supervisor
            .cast(SupervisorMsg::Spawn(Box::new(video.clone())))?;
        Ok(video)
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
        self.get(owner, id).await?;
        let id_owned = id.to_string();
        self.call(&self.supervisor, |reply| SupervisorMsg::Stop {
            id: id_owned,
            suspend: false,
            reply,
        })
        .await?;
        self.deps
            .store
            .delete_prefix(&format!("videos/{id}/"))
            .await
            .map_err(|e| CoreError::Storage(e.to_string()))?;
        self.deps.clean_work_dir(id).await;
        self.deps.remove_partial(id).await;
        self.deps.catalog.delete(id).await?;
        Ok(())
    }

    /// Queues a failed video again from its stored source; `attempts` + 1.
    pub async fn retry(&self, owner: &str, id: &str) -> Result<Video, CoreError> {
        let video = self.get(owner, id).await?;
        if video.state != VideoState::Failed {
            return Err(CoreError::Conflict(format!(
                "video {id} is {}, not failed",
                video.state
            )));
        }
        self.deps.catalog.reset_crashes(id).await?;
        let video = self
            .deps
            .persist(
                id,
                Change {
                    state: Some(VideoState::Queued),
                    stage: Some(None),
                    error: Some(None),
                    add_attempt: true,
                    ..Change::default()
                },
            )
            .await?;
        self.supervisor
            .cast(SupervisorMsg::Spawn(Box::new(video.clone())))?;
        Ok(video)
    }

    /// Events of one video (`Some(id)`) or all of `owner`'s: a snapshot, the
    /// state events after `since` (one video only), then live events.
    pub async fn subscribe(
        &self,
        owner: &str,
        video: Option<&str>,
        since: Option<u64>,
    ) -> Result<Feed, CoreError> {
        let scope = match video {
            Some(id) => {
                self.get(owner, id).await?;
                Scope::Video(id.into())
            }
            None => Scope::Owner(owner.into()),
        };
        // Subscribe first, read second: nothing falls between the two.
        let live = self
            .call(&self.deps.hub, |reply| HubMsg::Subscribe(scope, reply))
            .await?;
        let (snapshot, replay) = match video {
            Some(id) => {
                let v = self.get(owner, id).await?;
                let replay = match since {
                    Some(seq) => self.deps.catalog.events_after(id, seq).await?,
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
        Ok(Feed {
            snapshot,
            replay: replay.into(),
            live,
            seen,
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
        self.call(&self.deps.hub, |reply| HubMsg::Subscribe(Scope::All, reply))
            .await
    }

    /// How many videos start before each queued one.
    pub async fn queue_positions(&self) -> Result<HashMap<VideoId, usize>, CoreError> {
        self.call(&self.deps.admission, AdmissionMsg::Positions)
            .await
    }

    pub async fn stats(&self) -> Result<Stats, CoreError> {
        Ok(Stats {
            admission: self.call(&self.deps.admission, AdmissionMsg::Stats).await?,
            by_state: self.deps.catalog.count_by_state().await?,
            subscribers: self.call(&self.deps.hub, HubMsg::Count).await?,
        })
    }

    /// Ids of videos whose actor is alive.
    pub async fn active(&self) -> Result<Vec<VideoId>, CoreError> {
        self.call(&self.supervisor, SupervisorMsg::Running).await
    }

    /// Graceful stop: every running pipeline is cancelled and its video put
    /// back in the queue (not counted as a crash), so the next start resumes
    /// it; then the actors stop.
    pub async fn shutdown(&self) -> Result<(), CoreError> {
        for id in self.active().await? {
            let _ = self
                .call(&self.supervisor, |reply| SupervisorMsg::Stop {
                    id,
                    suspend: true,
                    reply,
                })
                .await;
        }
        self.supervisor.stop(None);
        self.deps.admission.stop(None);
        self.deps.hub.stop(None);
        Ok(())
    }
}
