//! Every GStreamer job runs in a worker process: a child of the vidmill
//! binary started as `vidmill media-job` (hidden), one per probe, run or
//! verification. The server process never demuxes or decodes, so a file
//! that crashes a decoder, eats memory or hangs costs only its own job
//! (`pipeline-crashed`, `limit-exceeded`), never the server, its other
//! videos or its connections.
//!
//! - [`protocol`]: the request on the worker's stdin and the JSON lines it
//!   answers with;
//! - [`child`]: the worker itself;
//! - [`watch`]: the server side of one worker (spawn, limits, cancel, reap);
//! - [`limits`]: memory and wall clock from `[limits]`;
//! - [`engine`]: [`ProcessEngine`], the core's `MediaEngine` port on top.

pub mod child;
pub mod engine;
pub mod limits;
pub mod protocol;
pub mod sandbox;
pub mod watch;

pub use engine::ProcessEngine;
pub use limits::WorkerLimits;

/// The hidden subcommand a worker runs.
pub const SUBCOMMAND: &str = "media-job";
