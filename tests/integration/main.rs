//! vidmill's integration tests, one binary (one link): the command line,
//! crash recovery with the core in a child process, the real server on
//! 127.0.0.1:0 over HTTP and WebSocket, JWKS keys from a file and a URL,
//! tus resumable uploads (raw and with stock clients), webhooks, the
//! OpenAPI document, the web page in chromium, `vidmill doctor`, the S3
//! store on a real Garage server, and worker processes under faults
//! (SIGSEGV, memory limit, the server SIGKILLed at random moments), and
//! the abuse of issue 10: connections that hold slots, trickled bodies,
//! oversized heads and forms, the smaller edge defects, and per-user
//! quotas and request rates.

mod abuse;
mod cli;
mod cluster;
mod cluster_attack;
mod connections;
mod doctor;
mod edges;
mod garage;
mod hostile;
mod jwks;
mod limits;
mod no_network;
mod openapi;
mod quotas;
mod recovery;
mod s3;
mod server;
mod slow_client;
mod support;
mod tus;
mod web;
mod webhook;
mod workers;
