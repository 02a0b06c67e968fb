//! The video supervisor: routes each command to its video's actor,
//! starting one when the video has none, and stops an actor once it is
//! idle. It holds no video logic: a child that crashed is replaced by a
//! fresh actor that resumes the video from its last persisted state and
//! counts the crash against it (failing it `crashed-repeatedly` at
//! `max_crashes`). A death of the whole process counts against no video.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::admission::AdmissionMsg;
use crate::deps::Deps;
use crate::model::VideoId;
use crate::video::{VideoActor, VideoArgs, VideoCommand, VideoMsg};

/// How long a shutdown waits for the videos to suspend (pipelines stop
/// within 2 s of a cancel).
const SUSPEND_WAIT: Duration = Duration::from_secs(8);

pub enum SupervisorMsg {
    /// Deliver `command` to video `id`'s actor.
    Route { id: VideoId, command: VideoCommand },
    /// A child has nothing to wait for after taking `taken` commands.
    Idle {
        id: VideoId,
        actor: ActorId,
        taken: u64,
    },
    /// Suspends every video (shutdown); answers once all have stopped.
    SuspendAll(RpcReplyPort<()>),
    /// Admission was restarted: every child asks again.
    Reannounce,
    /// Ids of the videos with a live actor.
    Running(RpcReplyPort<Vec<VideoId>>),
}

impl std::fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Route { id, command } => write!(f, "Route({id}, {command:?})"),
            Self::Idle { id, taken, .. } => write!(f, "Idle({id}, {taken})"),
            Self::SuspendAll(_) => f.write_str("SuspendAll"),
            Self::Reannounce => f.write_str("Reannounce"),
            Self::Running(_) => f.write_str("Running"),
        }
    }
}

pub(crate) struct VideoSupervisor {
    pub deps: Arc<Deps>,
}

struct Child {
    actor: ActorRef<VideoMsg>,
    /// Commands sent to it (see [`SupervisorMsg::Idle`]).
    sent: u64,
}

#[derive(Default)]
pub(crate) struct Children {
    by_video: HashMap<VideoId, Child>,
    by_actor: HashMap<ActorId, VideoId>,
}

impl VideoSupervisor {
    async fn spawn_child(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        children: &mut Children,
        id: &str,
        after_crash: Option<String>,
    ) -> Result<(), ActorProcessingErr> {
        let actor = VideoActor {
            deps: self.deps.clone(),
        };
        let args = VideoArgs {
            id: id.to_string(),
            after_crash,
        };
        let (actor, _) = Actor::spawn_linked(None, actor, args, myself.get_cell()).await?;
        children.by_actor.insert(actor.get_id(), id.to_string());
        children
            .by_video
            .insert(id.to_string(), Child { actor, sent: 0 });
        Ok(())
    }

    async fn route(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        children: &mut Children,
        id: VideoId,
        command: VideoCommand,
    ) -> Result<(), ActorProcessingErr> {
        let mut message = VideoMsg::Command(command);
        // Twice at most: a child that died a moment ago (its event not yet
        // handled) hands the message back, and a fresh one takes it.
        for _ in 0..2 {
            if !children.by_video.contains_key(&id) {
                self.spawn_child(myself, children, &id, None).await?;
            }
            let Some(child) = children.by_video.get_mut(&id) else {
                break;
            };
            match child.actor.cast(message) {
                Ok(()) => {
                    child.sent += 1;
                    return Ok(());
                }
                Err(ractor::MessagingErr::SendErr(back)) => {
                    message = back;
                    if let Some(gone) = children.by_video.remove(&id) {
                        children.by_actor.remove(&gone.actor.get_id());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!(video = %id, "could not deliver a command to the video");
        Ok(())
    }

    fn forget(children: &mut Children, actor: &ActorId) -> Option<VideoId> {
        let id = children.by_actor.remove(actor)?;
        if children
            .by_video
            .get(&id)
            .is_some_and(|c| c.actor.get_id() == *actor)
        {
            children.by_video.remove(&id);
        }
        Some(id)
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
            SupervisorMsg::Route { id, command } => {
                self.route(&myself, children, id, command).await?
            }
            SupervisorMsg::Idle { id, actor, taken } => {
                let done = children
                    .by_video
                    .get(&id)
                    .is_some_and(|c| c.actor.get_id() == actor && c.sent == taken);
                if done {
                    if let Some(child) = children.by_video.remove(&id) {
                        children.by_actor.remove(&actor);
                        child.actor.stop(None);
                    }
                }
            }
            SupervisorMsg::SuspendAll(reply) => {
                let mut waits = Vec::new();
                for child in children.by_video.values_mut() {
                    let (tx, rx) = ractor::concurrency::oneshot();
                    let command = VideoCommand::Suspend { reply: tx.into() };
                    if child.actor.cast(VideoMsg::Command(command)).is_ok() {
                        child.sent += 1;
                        waits.push(rx);
                    }
                }
                tokio::spawn(async move {
                    let all = futures_join(waits);
                    let _ = tokio::time::timeout(SUSPEND_WAIT, all).await;
                    let _ = reply.send(());
                });
            }
            SupervisorMsg::Reannounce => {
                for child in children.by_video.values_mut() {
                    let command = VideoMsg::Command(VideoCommand::Reannounce);
                    if child.actor.cast(command).is_ok() {
                        child.sent += 1;
                    }
                }
            }
            SupervisorMsg::Running(reply) => {
                let _ = reply.send(children.by_video.keys().cloned().collect());
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
                Self::forget(children, &cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(id) = Self::forget(children, &cell.get_id()) else {
                    return Ok(());
                };
                // Its worker may still run, and its slot is still held: the
                // replacement waits for the one, and the other is freed now.
                self.deps.workers.cancel(&id);
                if let Ok(admission) = self.deps.services.admission() {
                    let _ = admission.cast(AdmissionMsg::Release { video: id.clone() });
                }
                // A failure here must not take the supervisor (and every
                // later upload) down with the one video.
                let restarted = self
                    .spawn_child(&myself, children, &id, Some(error.to_string()))
                    .await;
                match restarted {
                    Ok(()) => {
                        self.route(&myself, children, id, VideoCommand::Resume)
                            .await?
                    }
                    Err(e) => {
                        tracing::error!(video = %id, error = %e, "could not restart a crashed video; the next start retries it")
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Waits for every receiver (each answers or is dropped).
async fn futures_join(waits: Vec<ractor::concurrency::OneshotReceiver<()>>) {
    for rx in waits {
        let _ = rx.await;
    }
}
