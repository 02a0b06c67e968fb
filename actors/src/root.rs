//! The root actor: starts and supervises the core's services. Its restart
//! policy, written out:
//!
//! | child | on failure | what the restart restores |
//! |---|---|---|
//! | ProgressHub | restarted | subscribers were closed with it (their streams end; clients reconnect with `since`, the event log has every state event); the latest progress of each video is kept beside it |
//! | Admission | restarted | every video asks again: waiting ones queue, running ones claim their slot |
//! | Notifier | restarted | nothing to restore: the outbox is in the catalog |
//! | VideoSupervisor | restarted | its video actors went down with it and their workers are cancelled; every unfinished video is resumed from the catalog (not counted as a crash) |
//!
//! Restarts back off: 100 ms doubling for each restart of the same child
//! within the last minute, at most 30 s. While a service is down, calls to
//! it answer `Unavailable`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::admission::{Admission, AdmissionMsg, HeadroomProbe};
use crate::deps::Deps;
use crate::hub::{ProgressHub, Remote};
use crate::notifier::NotifierActor;
use crate::ports::Notifier;
use crate::state::VideoState;
use crate::supervisor::{SupervisorMsg, VideoSupervisor};
use crate::video::VideoCommand;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Restarts further apart than this do not add up.
const CALM: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Service {
    Hub,
    Admission,
    Notifier,
    Supervisor,
}

pub(crate) enum RootMsg {
    Restart(Service),
}

impl std::fmt::Debug for RootMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Restart(s) => write!(f, "Restart({s:?})"),
        }
    }
}

pub(crate) struct Root {
    pub deps: Arc<Deps>,
    pub notifier: Arc<dyn Notifier>,
    pub headroom: HeadroomProbe,
}

#[derive(Default)]
pub(crate) struct RootState {
    children: HashMap<ActorId, (Service, ActorCell)>,
    /// Restarts per child: how many in a row, and when the last was.
    restarts: HashMap<Service, (u32, Instant)>,
}

impl Root {
    async fn start(
        &self,
        myself: &ActorRef<RootMsg>,
        state: &mut RootState,
        service: Service,
    ) -> Result<(), ActorProcessingErr> {
        let deps = &self.deps;
        let cell = myself.get_cell();
        let started: ActorCell = match service {
            Service::Hub => {
                let remote = (!deps.bus.is_local()).then(|| Remote {
                    catalog: deps.catalog.clone(),
                    bus: deps.bus.clone(),
                    node: deps.config.node.clone(),
                });
                let hub = ProgressHub {
                    board: deps.board.clone(),
                    remote,
                };
                let (r, _) = Actor::spawn_linked(None, hub, (), cell).await?;
                deps.services.set_hub(Some(r.clone()));
                r.get_cell()
            }
            Service::Admission => {
                let admission = Admission {
                    deps: deps.clone(),
                    headroom: self.headroom.clone(),
                };
                let (r, _) = Actor::spawn_linked(None, admission, (), cell).await?;
                deps.services.set_admission(Some(r.clone()));
                r.get_cell()
            }
            Service::Notifier => {
                let actor = NotifierActor {
                    deps: deps.clone(),
                    port: self.notifier.clone(),
                };
                let (r, _) = Actor::spawn_linked(None, actor, (), cell).await?;
                deps.services.set_notifier(Some(r.clone()));
                r.get_cell()
            }
            Service::Supervisor => {
                let actor = VideoSupervisor { deps: deps.clone() };
                let (r, _) = Actor::spawn_linked(None, actor, (), cell).await?;
                deps.services.set_supervisor(Some(r.clone()));
                r.get_cell()
            }
        };
        state.children.insert(started.get_id(), (service, started));
        Ok(())
    }

    /// What a restarted service needs from the others.
    async fn restored(&self, service: Service) {
        match service {
            Service::Admission => {
                if let Ok(s) = self.deps.services.supervisor() {
                    let _ = s.cast(SupervisorMsg::Reannounce);
                }
            }
            Service::Supervisor => {
                // Its runs died with it: their slots and leases are free.
                if let Ok(a) = self.deps.services.admission() {
                    let _ = a.cast(AdmissionMsg::Reset);
                }
                let node = &self.deps.config.node;
                if let Err(e) = self.deps.leases.release_node(node).await {
                    tracing::error!(error = %e, "could not release this node's leases");
                }
                let resumed = match unheld(self.deps.leases.as_ref()).await {
                    Ok(waiting) => resume_unfinished(&self.deps, &waiting).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = resumed {
                    tracing::error!(error = %e, "could not resume the videos after restarting the supervisor");
                }
            }
            Service::Hub | Service::Notifier => {}
        }
    }

    fn clear(&self, service: Service) {
        let services = &self.deps.services;
        match service {
            Service::Hub => services.set_hub(None),
            Service::Admission => services.set_admission(None),
            Service::Notifier => services.set_notifier(None),
            Service::Supervisor => {
                services.set_supervisor(None);
                // Its video actors went with it; nobody hears their workers.
                self.deps.workers.cancel_all();
            }
        }
    }
}

/// The videos whose jobs nobody holds.
pub(crate) async fn unheld(
    leases: &dyn crate::leases::JobLeases,
) -> Result<std::collections::HashSet<crate::model::VideoId>, crate::CoreError> {
    Ok(leases
        .queue()
        .await?
        .waiting
        .into_iter()
        .map(|(_, video)| video)
        .collect())
}

/// Puts back in the queue every processing video whose job nobody holds
/// (its node stopped), and wakes admission for the queued ones; returns
/// how many videos wait to run. `waiting` is what [`unheld`] read, before
/// admission could claim any.
pub(crate) async fn resume_unfinished(
    deps: &Deps,
    waiting: &std::collections::HashSet<crate::model::VideoId>,
) -> Result<usize, crate::CoreError> {
    let supervisor = deps.services.supervisor()?;
    let mut resumed = 0;
    for video in deps.catalog.unfinished().await? {
        if video.state == VideoState::Uploading || !waiting.contains(&video.id) {
            continue;
        }
        if video.state == VideoState::Processing {
            supervisor.cast(SupervisorMsg::Route {
                id: video.id,
                command: VideoCommand::Resume,
            })?;
        }
        resumed += 1;
    }
    if let Ok(a) = deps.services.admission() {
        let _ = a.cast(AdmissionMsg::Kick);
    }
    Ok(resumed)
}

impl Actor for Root {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<RootMsg>,
        _: (),
    ) -> Result<RootState, ActorProcessingErr> {
        let mut state = RootState::default();
        for service in [
            Service::Hub,
            Service::Admission,
            Service::Notifier,
            Service::Supervisor,
        ] {
            self.start(&myself, &mut state, service).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        message: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::Restart(service) => {
                if let Err(e) = self.start(&myself, state, service).await {
                    tracing::error!(?service, error = %e, "could not restart a service; trying again");
                    myself.send_after(MAX_BACKOFF, move || RootMsg::Restart(service));
                    return Ok(());
                }
                tracing::info!(?service, "service restarted");
                self.restored(service).await;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let Some((service, _)) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        self.clear(service);
        let now = Instant::now();
        let (count, _) = state
            .restarts
            .get(&service)
            .copied()
            .filter(|(_, at)| now.duration_since(*at) < CALM)
            .unwrap_or((0, now));
        let delay = FIRST_BACKOFF
            .saturating_mul(1u32.checked_shl(count).unwrap_or(u32::MAX))
            .min(MAX_BACKOFF);
        state.restarts.insert(service, (count + 1, now));
        tracing::error!(?service, restart_in = ?delay, "a core service ended: {why}");
        myself.send_after(delay, move || RootMsg::Restart(service));
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<RootMsg>,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        for (service, cell) in state.children.values() {
            self.clear(*service);
            cell.stop(None);
        }
        Ok(())
    }
}
