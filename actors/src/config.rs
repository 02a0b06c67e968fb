//! The core's settings, filled by the root crate from `config.toml`.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Where runs keep their temporary files (`{work_dir}/{video id}/`).
    pub work_dir: PathBuf,
    /// Where unfinished resumable uploads keep their bytes (kept across
    /// restarts); by default `partial` beside `work_dir`.
    pub partial_dir: PathBuf,
    /// Unfinished uploads older than this are deleted.
    pub upload_expiry: Duration,
    /// Notifications not delivered within this long are dropped.
    pub notify_max_age: Duration,
    /// Cores given to encoding; one pipeline runs per core.
    pub cpu_budget: usize,
    /// Media time that may pass without progress before a run is stalled.
    pub stall_timeout: Duration,
    /// Refuse new work below this much free disk under `work_dir`.
    pub min_free_disk: u64,
    /// Memory a pipeline needs free before it starts.
    pub min_free_memory: u64,
    /// Processing crashes after which a video fails `crashed-repeatedly`.
    pub max_crashes: u32,
    /// Runs started again after the engine's worker process crashed under
    /// them; one more crash fails the video `pipeline-crashed`.
    pub worker_crash_retries: u32,
    /// Timeout of every call into an actor.
    pub call_timeout: Duration,
    /// This node's name in the shared catalog (leases, artefacts).
    pub node: String,
    /// How long a lease lives without a heartbeat; runs renew it every
    /// third of this.
    pub lease_ttl: Duration,
    /// Whether this node claims jobs (an API-only node does not).
    pub processes: bool,
}

impl CoreConfig {
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        let work_dir = work_dir.into();
        Self {
            partial_dir: work_dir.with_file_name("partial"),
            upload_expiry: crate::uploads::DEFAULT_UPLOAD_EXPIRY,
            notify_max_age: Duration::from_secs(24 * 3600),
            work_dir,
            cpu_budget: std::thread::available_parallelism().map_or(1, |n| n.get()),
            stall_timeout: Duration::from_secs(60),
            min_free_disk: 1 << 30,
            min_free_memory: 256 << 20,
            max_crashes: 3,
            worker_crash_retries: 1,
            call_timeout: Duration::from_secs(10),
            node: "local".into(),
            lease_ttl: Duration::from_secs(15),
            processes: true,
        }
    }
}
