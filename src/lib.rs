//! vidmill: a self-hosted video processing and streaming server in one
//! binary. This crate is the edges and the wiring: the command line, the
//! HTTP and WebSocket server, configuration, auth, storage, the media engine
//! and notifications, plugged into the core's ports.

pub mod app;
pub mod auth;
pub mod catalog_lock;
pub mod cli;
pub mod config;
pub mod connections;
pub mod doctor;
pub mod engine;
pub mod http;
pub mod media_job;
pub mod metrics;
pub mod notify;
pub mod quotas;
pub mod server;
pub mod signing;
pub mod slots;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod worker;

/// What the fuzz targets in `fuzz/` call (cargo-fuzz, `make fuzz`), in
/// one place so that the modules they live in need not be opened wider;
/// not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::auth::jwks::parse as parse_jwks;
    pub use crate::auth::token_header;
    pub use crate::http::identity::bearer;
    pub use crate::http::multipart_cap::{form_error, FormPrefixCap};
    pub use crate::http::range::decide;
    pub use crate::http::tus::headers::{byte_count, metadata};
    pub use crate::http::upload::{filename, parse_options, MAX_FILENAME_BYTES};
}
