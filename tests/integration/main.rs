//! vidmill's integration tests, one binary (one link): the command line,
//! crash recovery with the core in a child process, the real server on
//! 127.0.0.1:0 over HTTP and WebSocket, and its OpenAPI document.

mod cli;
mod openapi;
mod recovery;
mod server;
mod support;
