//! What every actor of the core shares: the catalog, the service actors
//! (behind [`Services`], since a restarted actor has a new address), the
//! live workers, the ports and the settings.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use ractor::ActorRef;

use crate::admission::AdmissionMsg;
use crate::bus::{BusEvent, EventBus};
use crate::catalog::{Catalog, Change, NewVideo};
use crate::config::CoreConfig;
use crate::error::CoreError;
use crate::hub::{Announced, HubMsg, ProgressBoard};
use crate::leases::JobLeases;
use crate::model::Video;
use crate::notifier::NotifierMsg;
use crate::parts::UploadParts;
use crate::ports::{BlobStore, MediaEngine};
use crate::supervisor::SupervisorMsg;
use crate::workers::Workers;

/// The current address of each service actor. The root actor sets one when
/// it (re)starts the service and clears it when the service dies, so a
/// message sent meanwhile fails as `Unavailable` instead of going nowhere.
#[derive(Default)]
pub(crate) struct Services {
    hub: RwLock<Option<ActorRef<HubMsg>>>,
    admission: RwLock<Option<ActorRef<AdmissionMsg>>>,
    notifier: RwLock<Option<ActorRef<NotifierMsg>>>,
    supervisor: RwLock<Option<ActorRef<SupervisorMsg>>>,
}

fn current<M: ractor::Message>(
    slot: &RwLock<Option<ActorRef<M>>>,
    what: &str,
) -> Result<ActorRef<M>, CoreError> {
    slot.read()
        .ok()
        .and_then(|s| s.clone())
        .ok_or_else(|| CoreError::Unavailable(format!("the {what} is restarting")))
}

fn replace<M: ractor::Message>(slot: &RwLock<Option<ActorRef<M>>>, to: Option<ActorRef<M>>) {
    if let Ok(mut s) = slot.write() {
        *s = to;
    }
}

impl Services {
    pub fn hub(&self) -> Result<ActorRef<HubMsg>, CoreError> {
        current(&self.hub, "event hub")
    }
    pub fn admission(&self) -> Result<ActorRef<AdmissionMsg>, CoreError> {
        current(&self.admission, "admission")
    }
    pub fn notifier(&self) -> Result<ActorRef<NotifierMsg>, CoreError> {
        current(&self.notifier, "notifier")
    }
    pub fn supervisor(&self) -> Result<ActorRef<SupervisorMsg>, CoreError> {
        current(&self.supervisor, "video supervisor")
    }
    pub fn set_hub(&self, to: Option<ActorRef<HubMsg>>) {
        replace(&self.hub, to);
    }
    pub fn set_admission(&self, to: Option<ActorRef<AdmissionMsg>>) {
        replace(&self.admission, to);
    }
    pub fn set_notifier(&self, to: Option<ActorRef<NotifierMsg>>) {
        replace(&self.notifier, to);
    }
    pub fn set_supervisor(&self, to: Option<ActorRef<SupervisorMsg>>) {
        replace(&self.supervisor, to);
    }
}

pub(crate) struct Deps {
    pub catalog: Arc<dyn Catalog>,
    pub leases: Arc<dyn JobLeases>,
    pub bus: Arc<dyn EventBus>,
    /// Resumable uploads kept in the store (a cluster); `None`: local files.
    pub parts: Option<Arc<dyn UploadParts>>,
    pub services: Services,
    /// The latest progress of each processing video (the hub writes it).
    pub board: ProgressBoard,
    /// Pipelines running on worker threads, by video: outlives any actor.
    pub workers: Arc<Workers>,
    pub engine: Arc<dyn MediaEngine>,
    pub store: Arc<dyn BlobStore>,
    pub config: CoreConfig,
}

impl Deps {
    /// Persists a change, then announces its event: never the other way.
    pub(crate) async fn persist(&self, id: &str, change: Change) -> Result<Video, CoreError> {
        let (video, event) = self.catalog.apply(id, change).await?;
        if let Some(event) = event {
            if event.state.is_terminal() {
                // The outbox row was written with the change; wake its reader.
                if let Ok(n) = self.services.notifier() {
                    let _ = n.cast(NotifierMsg::Wake(std::time::Instant::now()));
                }
            }
            self.announce(Announced {
                event,
                video: Arc::new(video.clone()),
                remote: false,
            });
        }
        Ok(video)
    }

    /// Stores a new video and announces its first state event.
    pub(crate) async fn insert_video(&self, new: NewVideo) -> Result<Video, CoreError> {
        let (video, event) = self.catalog.insert(new).await?;
        self.announce(Announced {
            event,
            video: Arc::new(video.clone()),
            remote: false,
        });
        Ok(video)
    }

    /// Hands a stored event to the hub. A hub that is restarting misses it;
    /// its subscribers were closed with it and read the log when they
    /// come back (`since`).
    fn announce(&self, announced: Announced) {
        let (video, seq, state) = (
            announced.event.video_id.clone(),
            announced.event.seq,
            announced.event.state,
        );
        if let Ok(hub) = self.services.hub() {
            let _ = hub.cast(HubMsg::State(Arc::new(announced)));
        }
        if state == crate::state::VideoState::Queued {
            if let Ok(admission) = self.services.admission() {
                let _ = admission.cast(crate::admission::AdmissionMsg::Kick);
            }
        }
        self.tell_other_nodes(BusEvent::State { video, seq });
    }

    /// Publishes on a bus shared with other nodes (an in-process bus has
    /// no one else to tell). In the background: a slow database must not
    /// hold up the change that was already stored.
    pub(crate) fn tell_other_nodes(&self, event: BusEvent) {
        if self.bus.is_local() {
            return;
        }
        let bus = self.bus.clone();
        tokio::spawn(async move {
            if let Err(e) = bus.publish(event).await {
                tracing::debug!(error = %e, "could not publish a wake-up");
            }
        });
    }

    /// Removes every stored object of `id` after the record failed to be
    /// written or was deleted meanwhile: no object may outlive its record.
    pub(crate) async fn discard_objects(&self, id: &str) {
        if let Err(e) = self.store.delete_prefix(&format!("videos/{id}/")).await {
            tracing::warn!(video = id, error = %e, "could not remove the objects of a video without a record");
        }
    }

    /// The directory a run of `id` keeps its temporary files in.
    pub(crate) fn work_dir(&self, id: &str) -> PathBuf {
        self.config.work_dir.join(id)
    }

    /// Removes a run's temporary files and their record.
    pub(crate) async fn clean_work_dir(&self, id: &str) {
        let dir = self.work_dir(id);
        let removed = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
                Ok(()) => true,
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            })
            .await
            .unwrap_or(false)
        };
        if removed {
            if let Err(e) = self.catalog.forget_artefact(&dir.to_string_lossy()).await {
                tracing::warn!(video = id, error = %e, "could not forget work dir record");
            }
        } else {
            tracing::warn!(video = id, dir = %dir.display(), "could not remove work dir; the next start removes it");
        }
    }
}
