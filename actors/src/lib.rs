//! vidmill's stateful core: the supervisor tree of per-video actors,
//! admission, the progress hub and the SQLite catalog. It uses no HTTP, no
//! GStreamer and no S3; the root crate plugs those in through the ports in
//! [`ports`].
//!
//! ```text
//! Root               supervises the services below (see [`root`] for the policy)
//! ├── ProgressHub    fan-out of progress and state events, latest progress
//! ├── Admission      pipeline slots within the CPU budget, fair between owners
//! ├── Notifier       webhook / email outbox with retries
//! └── VideoSupervisor
//!     └── Video(id)  the one owner of a video's transitions, while it has work
//! Catalog            SQLite (WAL): one writer, read connections for queries
//! ```
//!
//! [`Core::start`] recovers what an earlier run left unfinished and returns
//! the [`Handle`] the edges use.

pub mod admission;
pub mod bus;
pub mod catalog;
pub mod config;
mod deps;
pub mod error;
pub mod handle;
pub mod hub;
pub mod leases;
pub mod model;
mod notifier;
pub mod parts;
pub mod ports;
pub mod root;
pub mod state;
mod supervisor;
mod uploads;
mod video;
mod workers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::Actor;

pub use admission::{system_headroom, Headroom, HeadroomProbe};
pub use bus::{BusEvent, EventBus, LocalBus};
pub use catalog::{Catalog, SqliteCatalog};
#[cfg(feature = "postgres")]
pub use catalog::{PgBus, PgCatalog};
pub use config::CoreConfig;
pub use error::CoreError;
pub use handle::{Catchup, Feed, Handle, Seen, Stats};
pub use hub::{Announced, HubMessage, Outlet};
pub use leases::{JobLeases, Lease, LeasedProgress, QueueSnapshot};
pub use model::*;
pub use parts::{StoredUpload, UploadParts};
pub use ports::*;
pub use state::{Stage, VideoState};
pub use uploads::{Assembled, PartialUpload, PartsWriter};
pub use video::Ingest;

use deps::{Deps, Services};
use root::Root;

/// What start-up found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovery {
    /// Videos re-queued (queued or processing when the last run stopped).
    pub requeued: usize,
    /// Of those, runs the last process did not finish (run again; a death
    /// of the whole process counts against no video).
    pub interrupted: usize,
    /// Temporary files and directories removed.
    pub swept: usize,
    /// Their size in bytes.
    pub swept_bytes: u64,
    pub took: Duration,
}

/// What the nodes of a cluster share: the catalog, the job leases, the
/// event bus and the stored uploads. One node keeps the first three in one
/// SQLite file and in process, and its partial uploads in local files.
#[derive(Debug, Clone)]
pub struct Shared {
    pub catalog: Arc<dyn Catalog>,
    pub leases: Arc<dyn JobLeases>,
    pub bus: Arc<dyn EventBus>,
    /// Where resumable uploads are recorded when their bytes wait in the
    /// object store; `None` keeps them in local files (one node).
    pub parts: Option<Arc<dyn UploadParts>>,
}

impl Shared {
    /// The embedded default: one SQLite file, an in-process bus.
    pub fn sqlite(catalog: SqliteCatalog) -> Self {
        let catalog = Arc::new(catalog);
        Self {
            catalog: catalog.clone(),
            leases: catalog,
            bus: Arc::new(LocalBus::default()),
            parts: None,
        }
    }

    /// A cluster member: node `node` on the PostgreSQL database at `url`
    /// (migrated if it is behind), with its `LISTEN/NOTIFY` bus.
    #[cfg(feature = "postgres")]
    pub async fn postgres(url: &str, node: &str) -> Result<Self, CoreError> {
        let catalog = Arc::new(PgCatalog::connect(url, node).await?);
        let bus = Arc::new(PgBus::connect(url, node).await?);
        Ok(Self {
            catalog: catalog.clone(),
            leases: catalog.clone(),
            bus,
            parts: Some(catalog),
        })
    }
}

/// The running core.
#[derive(Debug)]
pub struct Core;

impl Core {
    /// Starts the actors, sweeps leftovers of an earlier run, and re-queues
    /// every video it left queued or processing. `headroom` reads free
    /// memory and disk (see [`system_headroom`]).
    pub async fn start(
        config: CoreConfig,
        shared: Shared,
        engine: Arc<dyn MediaEngine>,
        store: Arc<dyn BlobStore>,
        notifier: Arc<dyn Notifier>,
        headroom: HeadroomProbe,
    ) -> Result<(Handle, Recovery), CoreError> {
        let started = Instant::now();
        let Shared {
            catalog,
            leases,
            bus,
            parts,
        } = shared;
        let (swept, swept_bytes) = sweep(catalog.as_ref(), &config).await?;
        let uploading: Vec<VideoId> = catalog
            .unfinished()
            .await?
            .into_iter()
            .filter(|v| v.state == VideoState::Uploading)
            .map(|v| v.id)
            .collect();
        let partial_dir = config.partial_dir.clone();
        let kept = uploading.clone();
        let (swept_partials, swept_partial_bytes) =
            tokio::task::spawn_blocking(move || uploads::sweep_partials(&partial_dir, &kept))
                .await
                .map_err(|e| CoreError::Internal(format!("sweep: {e}")))?;
        let (swept, swept_bytes) = (swept + swept_partials, swept_bytes + swept_partial_bytes);
        let interrupted = catalog.clear_interrupted_runs().await?;
        // This node's runs died with its last process: their jobs go back
        // to the queue now rather than when their leases expire.
        leases.release_node(&config.node).await?;
        let waiting = root::unheld(leases.as_ref()).await?;

        let deps = Arc::new(Deps {
            catalog,
            leases,
            bus,
            parts,
            services: Services::default(),
            board: Default::default(),
            workers: Default::default(),
            engine,
            store,
            config,
        });
        let root = Root {
            deps: deps.clone(),
            notifier,
            headroom,
        };
        let (root, _) = Actor::spawn(None, root, ())
            .await
            .map_err(|e| CoreError::Internal(format!("start the core: {e}")))?;
        let handle = Handle { deps, root };

        let uploading: Vec<Video> = handle
            .deps
            .catalog
            .unfinished()
            .await?
            .into_iter()
            .filter(|v| v.state == VideoState::Uploading)
            .collect();
        let moved = uploads::requeue_moved(&handle, &uploading).await?;
        if moved > 0 {
            tracing::info!(
                count = moved,
                "queued uploads finished just before the stop"
            );
        }
        let requeued = root::resume_unfinished(&handle.deps, &waiting).await?;
        let recovery = Recovery {
            requeued: requeued + moved,
            interrupted,
            swept,
            swept_bytes,
            took: started.elapsed(),
        };
        tracing::info!(requeued, interrupted, swept, took = ?recovery.took, "core started");
        Ok((handle, recovery))
    }
}

/// Removes every recorded artefact and anything left in the work directory
/// (each run's files live there and none survives a restart).
async fn sweep(catalog: &dyn Catalog, config: &CoreConfig) -> Result<(usize, u64), CoreError> {
    let recorded = catalog.artefacts().await?;
    let work_dir = config.work_dir.clone();
    let locations: Vec<String> = recorded.iter().map(|a| a.location.clone()).collect();
    let removed = tokio::task::spawn_blocking(move || {
        let (mut count, mut bytes) = (0, 0);
        let mut remove = |path: &std::path::Path| {
            let size = tree_size(path);
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            if gone.is_ok() {
                count += 1;
                bytes += size;
            }
        };
        for location in &locations {
            remove(std::path::Path::new(location));
        }
        if let Ok(entries) = std::fs::read_dir(&work_dir) {
            for entry in entries.flatten() {
                remove(&entry.path());
            }
        }
        let _ = std::fs::create_dir_all(&work_dir);
        (count, bytes)
    })
    .await
    .map_err(|e| CoreError::Internal(format!("sweep: {e}")))?;
    for a in recorded {
        catalog.forget_artefact(&a.location).await?;
    }
    Ok(removed)
}

/// Bytes under `path` (a file, or a directory walked without following links).
fn tree_size(path: &std::path::Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| tree_size(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}
