//! `vidmill worker`: the core without the network. It runs the actor tree
//! with the GStreamer engine (each job in a worker process, as the server
//! does) and the file store on a data directory, adds
//! the given files as videos, prints every state event as a JSON line, and
//! exits once nothing is left to do. The crash-recovery tests kill it in
//! each stage and start it again; it is also a batch tool in its own right.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vidmill_actors::{self as core, Core, CoreConfig, HubMessage, Options, SqliteCatalog};

use crate::engine::EngineSettings;
use crate::media_job::{ProcessEngine, WorkerLimits};
use crate::store::FileStore;

#[derive(Debug, Clone)]
pub struct WorkerArgs {
    pub data: PathBuf,
    pub add: Vec<PathBuf>,
    pub owner: String,
    pub cpu_budget: Option<usize>,
    pub frames_every: f64,
}

fn line(value: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn core_error(e: core::CoreError) -> String {
    e.to_string()
}

/// Copies `file` into the data directory, since creating a video moves its
/// source into the store and the caller's file must stay where it is.
fn stage_upload(data: &Path, file: &Path) -> Result<PathBuf, String> {
    let uploads = data.join("uploads");
    std::fs::create_dir_all(&uploads).map_err(|e| format!("{}: {e}", uploads.display()))?;
    let target = uploads.join(core::new_id());
    std::fs::copy(file, &target).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(target)
}

pub async fn run(args: WorkerArgs) -> Result<(), String> {
    let shared = core::Shared::sqlite(
        SqliteCatalog::open(&args.data.join("vidmill.sqlite")).map_err(core_error)?,
    );
    let catalog = shared.catalog.clone();
    let mut config = CoreConfig::new(args.data.join("work"));
    if let Some(n) = args.cpu_budget {
        config.cpu_budget = n;
    }
    let engine = Arc::new(ProcessEngine::new(
        EngineSettings::default(),
        WorkerLimits::default(),
    )?);
    let store = Arc::new(FileStore::new(args.data.join("objects")));
    let headroom = core::system_headroom(args.data.clone());
    let notifier = Arc::new(core::NoNotifier);
    let (handle, recovery) = Core::start(config, shared, engine, store, notifier, headroom)
        .await
        .map_err(core_error)?;
    line(serde_json::json!({
        "event": "recovered",
        "requeued": recovery.requeued,
        "interrupted": recovery.interrupted,
        "swept": recovery.swept,
        "took_ms": recovery.took.as_secs_f64() * 1000.0,
    }));
    let mut feed = handle
        .subscribe(&args.owner, None, None)
        .await
        .map_err(core_error)?;
    for file in &args.add {
        let staged = stage_upload(&args.data, file)?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let options = Options {
            frames_every: args.frames_every,
            ..Options::default()
        };
        let video = handle
            .create(&args.owner, &name, options, &staged)
            .await
            .map_err(core_error)?;
        line(serde_json::json!({"event": "created", "video_id": video.id}));
    }
    loop {
        if catalog
            .unfinished()
            .await
            .map_err(core_error)?
            .iter()
            .all(|v| v.state == core::VideoState::Uploading)
        {
            break;
        }
        tokio::select! {
            message = feed.next() => match message {
                Some(HubMessage::State(a)) => line(serde_json::json!({
                    "event": "state", "video_id": a.event.video_id, "seq": a.event.seq,
                    "state": a.event.state, "stage": a.event.stage, "error": a.event.error,
                })),
                Some(HubMessage::Progress(_)) => {}
                None => return Err(format!("event feed closed: {:?}", feed.close_reason())),
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    handle.shutdown().await.map_err(core_error)?;
    line(serde_json::json!({"event": "idle"}));
    Ok(())
}
