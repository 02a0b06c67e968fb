//! What every actor of the core shares: the catalog, the service actors,
//! the ports and the settings.

use std::path::PathBuf;
use std::sync::Arc;

use ractor::ActorRef;

use crate::admission::AdmissionMsg;
use crate::catalog::{Catalog, Change, NewVideo};
use crate::config::CoreConfig;
use crate::error::CoreError;
use crate::hub::HubMsg;
use crate::model::Video;
use crate::ports::{BlobStore, MediaEngine};

pub(crate) struct Deps {
    pub catalog: Catalog,
    pub hub: ActorRef<HubMsg>,
    pub admission: ActorRef<AdmissionMsg>,
    pub engine: Arc<dyn MediaEngine>,
    pub store: Arc<dyn BlobStore>,
    pub config: CoreConfig,
    /// Wakes the notifier when a video's processing ends.
    pub notify: Arc<tokio::sync::Notify>,
}

impl Deps {
    /// Persists a change, then announces its event: never the other way.
    pub(crate) async fn persist(&self, id: &str, change: Change) -> Result<Video, CoreError> {
        let (video, event) = self.catalog.apply(id, change).await?;
        if event.as_ref().is_some_and(|e| e.state.is_terminal()) {
            self.notify.notify_one();
        }
        if let Some(event) = event {
            let _ = self.hub.cast(HubMsg::State(event));
        }
        Ok(video)
    }

    /// Stores a new video and announces its first state event.
    pub(crate) async fn insert_video(&self, new: NewVideo) -> Result<Video, CoreError> {
        let (video, event) = self.catalog.insert(new).await?;
        let _ = self.hub.cast(HubMsg::State(event));
        Ok(video)
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
