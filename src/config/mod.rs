//! vidmill's one typed configuration. Precedence: built-in defaults <
//! `config.toml` < environment `VIDMILL__SECTION__KEY` < command-line flags.
//! Unknown or malformed keys fail at start with the key's name; the
//! committed `config.toml` documents every key and equals the defaults (a
//! test holds it to that).

mod load;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::{load, load_text, ConfigError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub auth: Auth,
    pub storage: Storage,
    pub database: Database,
    pub media: Media,
    pub limits: Limits,
    pub signing: Signing,
    pub notify: Notify,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// Address and port to bind; port 0 picks a free one.
    pub listen: String,
    /// Base URL used in signed links; empty = derived from `listen`.
    pub public_url: String,
    /// `text` or `json` logs.
    pub log_format: String,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections served at once from one client address (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// Seconds a connection may wait for a request's headers: from its
    /// start (protocol detection included), and between requests.
    pub header_timeout_seconds: u64,
    /// Largest request head (request line and headers) in bytes; also the
    /// cap on what a multipart form may hold before its `file` part.
    pub max_header_bytes: usize,
    /// A request body must bring at least `min_body_bytes_per_second` times
    /// this many bytes in each period of this many seconds (and one byte at
    /// the least, so this is also the longest silence allowed).
    pub body_idle_timeout_seconds: u64,
    /// The slowest request body accepted, averaged over
    /// `body_idle_timeout_seconds`; slower bodies are cut off with 408.
    pub min_body_bytes_per_second: u64,
    /// Accept HTTP/2 over cleartext (prior knowledge) besides HTTP/1.1.
    pub h2c: bool,
    /// Origins (`https://app.example`) whose pages may open WebSockets
    /// besides the server's own; a client sending no `Origin` (not a
    /// browser) is always allowed.
    pub allowed_origins: Vec<String>,
    /// Seconds SIGTERM waits for requests and pipelines to stop.
    pub shutdown_grace_seconds: u64,
    /// This node's name among a cluster's (in leases, metrics and logs);
    /// empty: the host's name. Two running nodes must not share one.
    pub node_id: String,
    /// What this node does (`vidmill serve --role`).
    pub role: Role,
}

/// What a node does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Answers the API and processes videos.
    #[default]
    All,
    /// Answers the API; processes nothing.
    Api,
    /// Processes videos; serves only health and metrics.
    Worker,
}

impl Role {
    pub fn serves_api(self) -> bool {
        self != Self::Worker
    }
    pub fn processes(self) -> bool {
        self != Self::Api
    }
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: String::new(),
            log_format: "text".into(),
            max_connections: 1024,
            max_connections_per_ip: 64,
            header_timeout_seconds: 10,
            max_header_bytes: 32 << 10,
            body_idle_timeout_seconds: 60,
            min_body_bytes_per_second: 1024,
            h2c: false,
            allowed_origins: Vec::new(),
            shutdown_grace_seconds: 20,
            node_id: String::new(),
            role: Role::All,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// HS256 key. Empty with no `hs256_secret_file`: one is generated and
    /// kept in `<data dir>/hs256.secret` on first run.
    pub hs256_secret: String,
    pub hs256_secret_file: String,
    /// JWKS file with RS256/ES256 public keys (or `jwks_url`, not both).
    pub jwks_path: String,
    /// JWKS URL (https; http only to localhost), read in the background at
    /// start, every 10 minutes, and when a token names an unknown key (at
    /// most once per 30 s).
    pub jwks_url: String,
    /// Required `iss`, when set.
    pub issuer: String,
    /// Required `aud`, when set.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_seconds: u64,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            hs256_secret: String::new(),
            hs256_secret_file: String::new(),
            jwks_path: String::new(),
            jwks_url: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway_seconds: 30,
        }
    }
}

/// Where objects live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Files under `storage.path`.
    #[default]
    File,
    /// Objects in `storage.s3.bucket`.
    S3,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// `file` (objects under `path`) or `s3` (objects in `s3.bucket`).
    #[serde(rename = "type")]
    pub kind: StorageKind,
    /// Root of the file store.
    pub path: PathBuf,
    pub s3: S3,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            kind: StorageKind::File,
            path: "./data/objects".into(),
            s3: S3::default(),
        }
    }
}

/// An S3 bucket (AWS or any S3-compatible service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3 {
    pub bucket: String,
    pub region: String,
    /// The service's URL; empty for AWS.
    pub endpoint: String,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`
    /// (most self-hosted services want this).
    pub path_style: bool,
    /// Credentials; empty: the AWS default chain (environment, profile,
    /// instance role).
    pub access_key_id: String,
    pub secret_access_key: String,
    pub secret_access_key_file: String,
    /// Answer output downloads with a redirect to a presigned URL, so the
    /// bytes go from the bucket straight to the client.
    pub redirect: bool,
}

impl Default for S3 {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: String::new(),
            path_style: false,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            secret_access_key_file: String::new(),
            redirect: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// SQLite file; its directory also holds temp files and the generated key.
    pub path: PathBuf,
    /// `postgres://user:password@host/db`: this node is a cluster member
    /// sharing that database (and the S3 bucket) with the others. Empty:
    /// one node on the SQLite file at `path`.
    pub url: String,
    /// Seconds a node's hold on a video lives without a heartbeat; a node
    /// that dies loses its videos to the others this long after.
    pub lease_ttl_seconds: u64,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            path: "./data/vidmill.sqlite".into(),
            url: String::new(),
            lease_ttl_seconds: 15,
        }
    }
}

impl Database {
    /// Whether this node shares PostgreSQL with others.
    pub fn is_cluster(&self) -> bool {
        !self.url.trim().is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Media {
    /// Cores given to encoding (one pipeline per core); 0 = all cores.
    pub cpu_budget: usize,
    /// Cap on the output's shorter side (so a 1080×1920 portrait video is
    /// within 1080); larger videos are scaled down, never up.
    pub max_height: u32,
    /// x264 speed preset for transcodes.
    pub preset: String,
    /// x264 constant rate factor (0-51).
    pub crf: u32,
    /// JPEG quality of frames and posters (1-100).
    pub jpeg_quality: u32,
    /// Seconds between frames when an upload does not say.
    pub frames_every: f64,
    /// A pipeline whose media time stops for this long fails as stalled.
    pub stall_timeout_seconds: u64,
}

impl Default for Media {
    fn default() -> Self {
        Self {
            cpu_budget: 0,
            max_height: 1080,
            preset: "veryfast".into(),
            crf: 23,
            jpeg_quality: 85,
            frames_every: 10.0,
            stall_timeout_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest upload accepted (plain or tus), in bytes.
    pub max_upload_bytes: u64,
    /// Uploads and new work are refused below this much free disk.
    pub min_free_disk_bytes: u64,
    /// Unfinished resumable uploads are removed this long after they were
    /// created (tus `Upload-Expires`).
    pub upload_expiry_seconds: u64,
    /// Resident memory one media worker process (a probe, a run, a
    /// verification) may use, in bytes; over it the job fails
    /// `limit-exceeded`. One worker runs per `media.cpu_budget` core.
    pub worker_memory_bytes: u64,
    /// Least wall-clock time a worker is given, in seconds (probes and
    /// verifications get exactly this).
    pub worker_timeout_floor_seconds: u64,
    /// Wall-clock seconds a run may take per second of source, when that
    /// is more than the floor; past it the run fails `limit-exceeded`.
    pub worker_timeout_factor: f64,
    /// Longest source accepted, in seconds: what the file declares at
    /// upload, and media time reached while decoding.
    pub max_duration_seconds: f64,
    /// Most pixels in one picture (width × height), declared or decoded.
    pub max_pixels: u64,
    /// Highest frame rate a source may declare.
    pub max_frame_rate: f64,
    /// Most images in one frames archive (duration / `frames_every`).
    pub max_frames: u64,
    /// Largest single file a job may write (the MP4, the ZIP), in bytes.
    pub max_output_bytes: u64,
    /// Uploads one user may be sending at the same time (plain, tus
    /// requests carrying bytes, direct completions).
    pub quota_uploads_in_progress: usize,
    /// Uploads one user may hold open: resumable (tus) or direct uploads
    /// created and not yet complete.
    pub quota_open_uploads: u64,
    /// Bytes one user may upload in any 24 hours (rolling), deleted videos
    /// included.
    pub quota_upload_bytes_per_day: u64,
    /// Bytes one user may have stored: sources and outputs of their videos.
    pub quota_stored_bytes: u64,
    /// WebSocket event streams one user may have open at the same time.
    pub quota_websocket_connections: usize,
    /// Requests per second one user may make, on average.
    pub rate_requests_per_second: u32,
    /// Requests one user may make at once above the average rate.
    pub rate_request_burst: u32,
    /// Requests with a missing or bad token one client address (IPv6: one
    /// /64) may make per minute; past it, its requests are refused 429
    /// before their token is checked.
    pub rate_auth_failures_per_minute: u32,
}

impl Limits {
    /// The limits on media themselves, as the pipelines take them.
    pub fn media(&self) -> vidmill_pipelines::MediaLimits {
        vidmill_pipelines::MediaLimits {
            max_duration: self.max_duration_seconds,
            max_pixels: self.max_pixels,
            max_frame_rate: self.max_frame_rate,
            max_frames: self.max_frames,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        let media_limits = vidmill_pipelines::MediaLimits::default();
        Self {
            max_upload_bytes: 10 << 30,
            min_free_disk_bytes: 1 << 30,
            upload_expiry_seconds: 86_400,
            worker_memory_bytes: 4 << 30,
            worker_timeout_floor_seconds: 600,
            worker_timeout_factor: 10.0,
            max_duration_seconds: media_limits.max_duration,
            max_pixels: media_limits.max_pixels,
            max_frame_rate: media_limits.max_frame_rate,
            max_frames: media_limits.max_frames,
            max_output_bytes: 20 << 30,
            quota_uploads_in_progress: 4,
            quota_open_uploads: 20,
            quota_upload_bytes_per_day: 50 << 30,
            quota_stored_bytes: 100 << 30,
            quota_websocket_connections: 32,
            rate_requests_per_second: 20,
            rate_request_burst: 100,
            rate_auth_failures_per_minute: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Signing {
    /// Base lifetime of signed output URLs (the video's duration is added).
    pub ttl_seconds: u64,
    /// Longest lifetime of any signed URL, whatever duration the video
    /// declares (the uploader controls that).
    pub max_ttl_seconds: u64,
    /// HMAC key for signed URLs; empty = derived from the HS256 secret.
    pub key: String,
    pub key_file: String,
}

impl Default for Signing {
    fn default() -> Self {
        Self {
            ttl_seconds: 3600,
            max_ttl_seconds: 3 * 86_400,
            key: String::new(),
            key_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Notify {
    /// POST `video.ready` / `video.failed` events here (http or https).
    pub webhook_url: String,
    /// Key of the `Vidmill-Signature` HMAC (value; or `webhook_secret_file`).
    pub webhook_secret: String,
    pub webhook_secret_file: String,
    /// Undelivered notifications are retried with backoff for this long.
    pub max_age_seconds: u64,
    /// Mail server for owner emails: `smtp://host:25`,
    /// `smtp://host:587?tls=required` or `smtps://user:pass@host:465`.
    pub smtp_url: String,
    /// Sender of owner emails, e.g. `vidmill <video@example.org>`.
    pub from: String,
}

impl Default for Notify {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            webhook_secret: String::new(),
            webhook_secret_file: String::new(),
            max_age_seconds: 86_400,
            smtp_url: String::new(),
            from: String::new(),
        }
    }
}

impl Config {
    /// The directory of the database: home of temp files and generated keys.
    pub fn data_dir(&self) -> PathBuf {
        match self.database.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The configuration with every secret replaced by `***`.
    pub fn masked(&self) -> Self {
        let mask = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                "***".into()
            }
        };
        let mut c = self.clone();
        c.auth.hs256_secret = mask(&c.auth.hs256_secret);
        c.signing.key = mask(&c.signing.key);
        c.notify.webhook_secret = mask(&c.notify.webhook_secret);
        c.storage.s3.secret_access_key = mask(&c.storage.s3.secret_access_key);
        c.database.url = masked_url(&c.database.url);
        c.notify.smtp_url = masked_url(&c.notify.smtp_url);
        c
    }

    /// This node's name: `server.node_id`, or the host's name.
    pub fn node_id(&self) -> String {
        match self.server.node_id.trim() {
            "" => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "vidmill".into()),
            id => id.to_string(),
        }
    }
}

/// A URL with its credentials replaced by `***`.
fn masked_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}
