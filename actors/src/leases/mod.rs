//! The job-leases port: which node processes which video. A queued video
//! has a job; a node claims the next job in fair order and holds a lease
//! on it while it works, renewing it with heartbeats (times by the
//! database's clock). A lease that is not renewed expires, and any node
//! may then claim the job again: a node that died or lost the database
//! loses its work, never the video. Every change a run makes to its video
//! is fenced by the lease's token ([`crate::catalog::Change::fence`]), so
//! a node that lost its lease publishes nothing.
//!
//! The catalog creates and removes jobs in the same transactions as the
//! state changes that mean them (see [`crate::catalog`]); this port only
//! moves leases.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::model::VideoId;
use crate::ports::EngineProgress;

/// A node's hold on one video's processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub video: VideoId,
    pub owner: String,
    /// Grows with every claim: a change fenced by an older token fails.
    pub token: i64,
    /// Another node's lease on it had expired (that node died or lost
    /// the database): its partial work is lost.
    pub taken_over: bool,
}

/// The queue as it stands, for queue positions and stats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// Queued jobs (unleased, or their lease expired): owner and video.
    pub waiting: Vec<(String, VideoId)>,
    /// Leased jobs per owner, cluster-wide.
    pub running: HashMap<String, usize>,
    /// When each owner was last granted a job (a counter).
    pub served: HashMap<String, u64>,
}

/// Progress a run reports with its heartbeats, readable by any node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LeasedProgress {
    pub percent: f64,
    pub speed: f64,
    pub eta_seconds: Option<f64>,
}

impl From<EngineProgress> for LeasedProgress {
    fn from(p: EngineProgress) -> Self {
        Self {
            percent: p.percent,
            speed: p.speed,
            eta_seconds: p.eta_seconds,
        }
    }
}

#[async_trait]
pub trait JobLeases: Send + Sync + std::fmt::Debug + 'static {
    /// Leases the next job to `node` for `ttl`: the owner with the fewest
    /// leased jobs first, ties to the owner served longest ago, then the
    /// oldest video (ids are time-ordered). `None` when nothing waits.
    /// Two claimers never get the same job.
    async fn claim(&self, node: &str, ttl: Duration) -> Result<Option<Lease>, CoreError>;

    /// Extends `lease` by `ttl` and records the run's progress;
    /// `LeaseLost` when it is no longer held.
    async fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
        progress: Option<LeasedProgress>,
    ) -> Result<(), CoreError>;

    /// Puts the job back in the queue (a suspend); nothing when the lease
    /// is no longer held.
    async fn release(&self, lease: &Lease) -> Result<(), CoreError>;

    /// Releases every lease `node` holds: a node starting again, whose
    /// runs died with its last process. Returns how many.
    async fn release_node(&self, node: &str) -> Result<usize, CoreError>;

    async fn queue(&self) -> Result<QueueSnapshot, CoreError>;

    /// The progress last renewed for `video`'s lease, whichever node holds it.
    async fn progress(&self, video: &str) -> Result<Option<LeasedProgress>, CoreError>;
}
