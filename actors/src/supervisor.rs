//! The video supervisor: spawns a linked video actor per unfinished video,
//! restarts a crashed one from its last persisted state, and fails a video
//! with `crashed-repeatedly` once its actor has crashed `max_crashes` times
//! (counted in the catalog, so the count survives restarts). A death of the
//! whole process counts against no video: the pipelines run in worker
//! processes, whose own crashes the video actor counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::admission::AdmissionMsg;
use crate::catalog::Change;
use crate::deps::Deps;
use crate::model::{Video, VideoError, VideoId};
use crate::ports::CancelFlag;
use crate::state::VideoState;
use crate::video::{VideoActor, VideoArgs, VideoMsg};

pub enum SupervisorMsg {
    /// Start (or adopt) the actor of a queued or processing video.
    Spawn(Box<Video>),
    /// Stop a video's actor; replies `false` when it had none.
    Stop {
        id: VideoId,
        suspend: bool,
        reply: RpcReplyPort<bool>,
    },
    /// Ids of the videos with a live actor.
    Running(RpcReplyPort<Vec<VideoId>>),
}

impl std::fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spawn(v) => write!(f, "Spawn({})", v.id),
            Self::Stop { id, suspend, .. } => write!(f, "Stop({id}, suspend: {suspend})"),
            Self::Running(_) => f.write_str("Running"),
        }
    }
}

pub(crate) struct VideoSupervisor {
    pub deps: Arc<Deps>,
}

struct Child {
    id: VideoId,
    owner: String,
    actor: ActorRef<VideoMsg>,
    cancel: CancelFlag,
    worker_alive: Arc<AtomicBool>,
}

/// Longest wait for a crashed actor's cancelled worker to exit (pipelines
/// stop within 2 s of a cancel).
const ORPHAN_WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(crate) struct Children {
    by_actor: HashMap<ActorId, Child>,
    /// Videos stopped on purpose (delete, shutdown): not to be restarted.
    stopping: std::collections::HashSet<VideoId>,
}

impl Children {
    fn find(&self, id: &str) -> Option<&Child> {
        self.by_actor.values().find(|c| c.id == id)
    }
}

impl VideoSupervisor {
    async fn spawn_child(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        children: &mut Children,
        video: Video,
    ) -> Result<(), ActorProcessingErr> {
        if children.find(&video.id).is_some() {
            return Ok(());
        }
        let cancel = CancelFlag::default();
        let worker_alive = Arc::new(AtomicBool::new(false));
        let (id, owner) = (video.id.clone(), video.owner.clone());
        let actor = VideoActor {
            deps: self.deps.clone(),
        };
        let args = VideoArgs {
            video,
            cancel: cancel.clone(),
            worker_alive: worker_alive.clone(),
        };
        match Actor::spawn_linked(None, actor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                children.by_actor.insert(
                    actor.get_id(),
                    Child {
                        id,
                        owner,
                        actor,
                        cancel,
                        worker_alive,
                    },
                );
            }
            Err(e) => tracing::error!(video = %id, error = %e, "could not start the video's actor"),
        }
        Ok(())
    }

    /// A child crashed: count it, then restart it or give up on the video.
    async fn crashed(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        children: &mut Children,
        child: Child,
        reason: String,
    ) -> Result<(), ActorProcessingErr> {
        // Its worker may still run: stop it, and let it go, before the slot
        // or the work directory is given to anyone else.
        child.cancel.cancel();
        let waited = Instant::now();
        while child.worker_alive.load(Ordering::SeqCst) && waited.elapsed() < ORPHAN_WAIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.deps.admission.cast(AdmissionMsg::Release {
            owner: child.owner,
            video: child.id.clone(),
        });
        // The video may be gone (deleted while it crashed): nothing to redo.
        let Some(_) = self.deps.catalog.get(&child.id).await? else {
            return Ok(());
        };
        let crashes = self.deps.catalog.add_crash(&child.id).await?;
        tracing::warn!(video = %child.id, crashes, "video actor crashed: {reason}");
        let Some(video) = self.deps.catalog.get(&child.id).await? else {
            return Ok(());
        };
        if crashes >= self.deps.config.max_crashes {
            self.deps
                .persist(
                    &video.id,
                    Change {
                        state: Some(VideoState::Failed),
                        stage: Some(None),
                        error: Some(Some(VideoError::new(
                            "crashed-repeatedly",
                            format!("processing crashed {crashes} times; retry to try again"),
                        ))),
                        in_flight: Some(false),
                        ..Change::default()
                    },
                )
                .await?;
            self.deps.clean_work_dir(&video.id).await;
            return Ok(());
        }
        self.spawn_child(myself, children, video).await
    }
}

impl Actor for VideoSupervisor {
    type Msg = SupervisorMsg;
    type State = Children;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<SupervisorMsg>,
        _: (),
    ) -> Result<Children, ActorProcessingErr> {
        Ok(Children::default())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Spawn(video) => self.spawn_child(&myself, children, *video).await?,
            SupervisorMsg::Stop { id, suspend, reply } => match children.find(&id) {
                // The child answers once its pipeline has stopped.
                Some(child) => {
                    let (tx, rx) = ractor::concurrency::oneshot();
                    let sent = child.actor.cast(VideoMsg::Stop {
                        suspend,
                        reply: tx.into(),
                    });
                    if sent.is_err() {
                        // It ended a moment ago; its end event is on the way.
                        let _ = reply.send(false);
                        return Ok(());
                    }
                    children.stopping.insert(id);
                    tokio::spawn(async move {
                        let _ = rx.await;
                        let _ = reply.send(true);
                    });
                }
                None => {
                    let _ = reply.send(false);
                }
            },
            SupervisorMsg::Running(reply) => {
                let _ = reply.send(children.by_actor.values().map(|c| c.id.clone()).collect());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                // A retry that arrived while this actor was still ending
                // found it alive and was skipped: start the video now.
                let ended = children.by_actor.remove(&cell.get_id());
                if let Some(child) = ended.filter(|c| !children.stopping.remove(&c.id)) {
                    match self.deps.catalog.get(&child.id).await {
                        Ok(Some(video)) if video.state == VideoState::Queued => {
                            self.spawn_child(&myself, children, video).await?;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(video = %child.id, error = %e, "could not re-read an ended video")
                        }
                    }
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let failed = children.by_actor.remove(&cell.get_id());
                if let Some(child) = failed.filter(|c| !children.stopping.remove(&c.id)) {
                    let id = child.id.clone();
                    // A failure here must not take the supervisor (and every
                    // later upload) down with the one video.
                    if let Err(e) = self
                        .crashed(&myself, children, child, error.to_string())
                        .await
                    {
                        tracing::error!(video = %id, error = %e, "could not handle a crashed video; the next start retries it");
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
