//! The HTTP and WebSocket API (API.md): the router and the state every
//! handler shares.

pub mod error;
pub mod range;
