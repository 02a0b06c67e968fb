//! vidmill's stateful core: the supervisor tree of per-video actors, admission,
//! the progress hub and the SQLite catalog. It uses no HTTP, no GStreamer and
//! no S3; the root crate plugs those in through the ports declared here.
//!
//! The actor tree is built in a later step (see DESIGN.md, "The actor tree");
//! for now this crate holds the vocabulary the edges and the core share.

pub mod state;
