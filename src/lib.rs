//! vidmill: a self-hosted video processing and streaming server in one
//! binary. This crate is the edges and the wiring: the command line, the
//! HTTP and WebSocket server, configuration, auth, storage, the media engine
//! and notifications, plugged into the core's ports.

pub mod app;
pub mod auth;
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
