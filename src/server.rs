//! `vidmill serve`: builds the core and the API from the configuration,
//! accepts connections (caps and deadlines in `connections`) and shuts down
//! gracefully: on the shutdown signal it stops accepting, drains requests
//! until the grace period ends, and puts running pipelines back in the
//! queue so the next start resumes them.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use vidmill_actors::{self as core, Core, CoreConfig, HubMessage, MediaEngine, SqliteCatalog};

use crate::app::{self, App};
use crate::auth::Authenticator;
use crate::config::{Config, StorageKind};
use crate::connections::Connections;
use crate::engine::EngineSettings;
use crate::media_job::{ProcessEngine, WorkerLimits};
use crate::notify::{Attached, Channels};

/// How often the JWKS is re-read when no token asks for it.
const JWKS_REREAD_EVERY: Duration = Duration::from_secs(600);

/// Starts everything on `listener` and serves until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let _catalog_lock = match config.database.is_cluster() {
        true => None,
        false => Some(crate::catalog_lock::CatalogLock::take(
            &config.database.path,
        )?),
    };
    let app = build(config, addr).await?;
    let grace = Duration::from_secs(app.config.server.shutdown_grace_seconds);
    let permits = Arc::new(Semaphore::new(app.config.server.max_connections.max(1)));
    let handle = app.handle.clone();
    let connections = Connections::new(&app.config.server, crate::http::router(app.clone()));
    println!("listening on http://{addr}");
    tracing::info!(%addr, "listening");
    crate::systemd::ready();
    crate::systemd::spawn_watchdog();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.map_err(|e| e.to_string())?,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Every write vidmill makes is a whole answer or a whole event
        // frame: Nagle's algorithm would only hold the next one back until
        // the client acknowledges the last (up to its delayed-ACK timer).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        connections.serve(stream, peer, permit);
    }
    drop(listener);
    crate::systemd::stopping();
    tracing::info!("shutting down: draining connections and pipelines");
    let drained = tokio::time::timeout(grace, async {
        let (_, stopped) = tokio::join!(connections.drain(), handle.shutdown());
        stopped
    })
    .await;
    match drained {
        Ok(Ok(())) => tracing::info!("stopped cleanly"),
        Ok(Err(e)) => tracing::warn!(error = %e, "the core did not stop cleanly"),
        Err(_) => tracing::warn!("grace period over; stopping now"),
    }
    Ok(())
}

async fn build(config: Config, addr: SocketAddr) -> Result<App, String> {
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    if config.storage.kind == StorageKind::File {
        std::fs::create_dir_all(&config.storage.path)
            .map_err(|e| format!("storage.path {}: {e}", config.storage.path.display()))?;
    }
    let auth = app::authenticator(&config)?;
    let signer = app::signer(&config)?;
    let node = config.node_id();
    let shared = if config.database.is_cluster() {
        core::Shared::postgres(&config.database.url, &node)
            .await
            .map_err(|e| format!("database.url: {e}"))?
    } else {
        core::Shared::sqlite(
            SqliteCatalog::open(&config.database.path)
                .map_err(|e| format!("database.path: {e}"))?,
        )
    };
    let mut core_config = CoreConfig::new(data_dir.join("work"));
    if config.media.cpu_budget > 0 {
        core_config.cpu_budget = config.media.cpu_budget;
    }
    core_config.stall_timeout = Duration::from_secs(config.media.stall_timeout_seconds);
    core_config.min_free_disk = config.limits.min_free_disk_bytes;
    core_config.upload_expiry = Duration::from_secs(config.limits.upload_expiry_seconds);
    core_config.notify_max_age = Duration::from_secs(config.notify.max_age_seconds);
    core_config.node = node.clone();
    core_config.lease_ttl = Duration::from_secs(config.database.lease_ttl_seconds);
    core_config.processes = config.server.role.processes();
    let attached = Attached::default();
    let channels = Channels::new(&config, attached.clone())?;
    let settings = EngineSettings {
        preset: config.media.preset.clone(),
        crf: config.media.crf,
        max_height: config.media.max_height,
        jpeg_quality: config.media.jpeg_quality,
        limits: config.limits.media(),
        threads: u32::try_from(config.media.cpu_budget).unwrap_or(0),
    };
    let limits = WorkerLimits::from_config(&config.limits);
    let engine: Arc<dyn MediaEngine> = Arc::new(ProcessEngine::new(settings, limits)?);
    let store = app::store(&config).await?;
    let headroom = core::system_headroom(data_dir.clone());
    let (handle, recovery) = Core::start(
        core_config,
        shared,
        engine.clone(),
        store.clone(),
        Arc::new(channels),
        headroom.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(requeued = recovery.requeued, interrupted = recovery.interrupted, took = ?recovery.took, "recovered");
    let public_url = match config.server.public_url.trim_end_matches('/') {
        "" => format!("http://{addr}"),
        url => url.to_string(),
    };
    let app = App {
        quotas: crate::quotas::Quotas::new(&config.limits),
        handle: handle.clone(),
        auth: Arc::new(auth),
        signer,
        config: Arc::new(config),
        store,
        engine,
        headroom,
        public_url,
        metrics: crate::metrics::Metrics::new(&node),
        recent: app::RecentVideos::default(),
        rendered: Default::default(),
        uploads: Default::default(),
    };
    attached.attach(&app);
    app.metrics.reaped(recovery.swept_bytes);
    keep_keys_fresh(app.auth.clone());
    expire_uploads(&app);
    finish_complete_uploads(&app);
    track_progress(&app).await?;
    Ok(app)
}

/// Reads the JWKS now and then every [`JWKS_REREAD_EVERY`], in the
/// background: a URL is not fetched before the server is up, so an
/// unreachable identity provider cannot keep vidmill from starting (a token
/// arriving meanwhile waits for this read), and keys the provider removed
/// stop being accepted within the period.
fn keep_keys_fresh(auth: Arc<Authenticator>) {
    if auth.jwks().is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(JWKS_REREAD_EVERY);
        loop {
            every.tick().await;
            let Some(keys) = auth.jwks() else { return };
            match keys.refresh().await {
                Ok(n) => tracing::debug!(keys = n, "read the JWKS"),
                Err(e) => {
                    tracing::warn!(error = %e, held = keys.held(), "could not read the JWKS; keeping the keys held")
                }
            }
        }
    });
}

/// Deletes unfinished uploads past `limits.upload_expiry_seconds`, checking
/// a few times per expiry period (at most once a minute).
fn expire_uploads(app: &App) {
    let (handle, uploads) = (app.handle.clone(), app.uploads.clone());
    let expiry = Duration::from_secs(app.config.limits.upload_expiry_seconds);
    let every = (expiry / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match handle.expire_uploads().await {
                Ok(ids) => {
                    for id in &ids {
                        uploads.forget(id);
                    }
                    if !ids.is_empty() {
                        tracing::info!(count = ids.len(), "expired unfinished uploads");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not expire uploads"),
            }
        }
    });
}

/// Finishes uploads that hold every byte but were not probed and queued
/// when the last run stopped.
fn finish_complete_uploads(app: &App) {
    let app = app.clone();
    tokio::spawn(async move {
        let complete = match app.handle.complete_uploads().await {
            Ok(c) => c,
            Err(e) => return tracing::warn!(error = %e, "could not list complete uploads"),
        };
        for (owner, upload) in complete {
            let Ok(_writing) = app.uploads.claim(&upload.id).await else {
                continue;
            };
            // Kept in the store, the upload is held as a request would
            // hold it: another node may be finishing it too.
            let held = match upload.file {
                Some(_) => None,
                None => match app.handle.write_upload(&owner, &upload.id).await {
                    Ok(held) => Some(held),
                    Err(_) => continue,
                },
            };
            match crate::http::tus::complete(&app, &owner, &upload.id).await {
                Ok(()) => tracing::info!(video = %upload.id, "finished an upload left complete"),
                Err(e) => {
                    tracing::warn!(video = %upload.id, error = %e, "could not finish a complete upload")
                }
            }
            if let Some(held) = held {
                held.release().await;
            }
        }
    });
}

/// Turns the event stream into metrics: time queued before a slot, time
/// per stage, speed, stalls.
async fn track_progress(app: &App) -> Result<(), String> {
    let mut events = app
        .handle
        .subscribe_all()
        .await
        .map_err(|e| e.to_string())?;
    let metrics = app.metrics.clone();
    tokio::spawn(async move {
        // When each unfinished video entered its current state and stage.
        let mut since: HashMap<String, (core::VideoState, Option<core::Stage>, Instant)> =
            HashMap::new();
        while let Some(message) = events.next().await {
            match message {
                HubMessage::Progress(p) => metrics.speed(p.speed),
                HubMessage::State(a) => {
                    let e = &a.event;
                    let now = Instant::now();
                    if let Some((state, stage, at)) = since.get(&e.video_id).copied() {
                        let took = now.duration_since(at).as_secs_f64();
                        if state == core::VideoState::Queued
                            && e.state == core::VideoState::Processing
                        {
                            metrics.admission_waited(took);
                        }
                        if let Some(stage) = stage.filter(|s| Some(*s) != e.stage) {
                            metrics.stage_took(stage.as_str(), took);
                        }
                    }
                    if e.error
                        .as_ref()
                        .is_some_and(|err| err.code == "pipeline-stalled")
                    {
                        metrics.stalled();
                    }
                    let changed = since
                        .get(&e.video_id)
                        .is_none_or(|(s, st, _)| *s != e.state || *st != e.stage);
                    if e.state.is_terminal() {
                        since.remove(&e.video_id);
                    } else if changed {
                        since.insert(e.video_id.clone(), (e.state, e.stage, now));
                    }
                }
            }
        }
    });
    Ok(())
}
