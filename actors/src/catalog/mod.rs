//! The catalog port: what the core keeps about videos and shares between
//! nodes: the videos and their event log, temporary artefacts, the
//! notification outbox, owners' contacts and the uploads ledger (quotas).
//! [`SqliteCatalog`] is the embedded default; a cluster shares one
//! PostgreSQL database. Every implementation keeps the same promises,
//! which the core's tests check against each:
//!
//! - a change and its state event are written in one transaction, and the
//!   event's `seq` is one more than the video's last (no gap, no
//!   duplicate); a change that alters neither state, stage, error nor
//!   outputs writes no event;
//! - a change that ends a video's processing (its state changes to ready
//!   or failed) writes its outbox rows in the same transaction;
//! - a video created queued (or processing) has a job from the same
//!   transaction; a change to `queued` creates the job (or puts it back in
//!   the queue, dropping any lease); a change to ready or failed, and a
//!   delete, remove it (see [`crate::leases`]);
//! - a change with a `fence` applies only while that lease is held and
//!   unexpired, and fails `LeaseLost` otherwise: a node that lost its
//!   lease publishes nothing;
//! - times come from the database's clock.

/// Implements [`Catalog`] for a type whose inherent methods have the
/// trait's names and signatures (each backend keeps its queries in
/// inherent methods, spread over files by topic; this is the one place
/// that maps them onto the port). `ready` answers [`Catalog::check`].
macro_rules! catalog_by_inherent_methods {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::catalog::Catalog for $ty {
            async fn insert(&self, new: $crate::catalog::NewVideo)
                -> Result<($crate::model::Video, $crate::model::StateEvent), $crate::CoreError> {
                <$ty>::insert(self, new).await
            }
            async fn apply(&self, id: &str, change: $crate::catalog::Change)
                -> Result<($crate::model::Video, Option<$crate::model::StateEvent>), $crate::CoreError> {
                <$ty>::apply(self, id, change).await
            }
            async fn get(&self, id: &str) -> Result<Option<$crate::model::Video>, $crate::CoreError> {
                <$ty>::get(self, id).await
            }
            async fn list(&self, owner: &str, state: Option<$crate::state::VideoState>, limit: u32, cursor: Option<String>)
                -> Result<$crate::catalog::Page, $crate::CoreError> {
                <$ty>::list(self, owner, state, limit, cursor).await
            }
            async fn events_after(&self, id: &str, seq: u64) -> Result<Vec<$crate::model::StateEvent>, $crate::CoreError> {
                <$ty>::events_after(self, id, seq).await
            }
            async fn newest_playable(&self) -> Result<Option<$crate::model::Video>, $crate::CoreError> {
                <$ty>::newest_playable(self).await
            }
            async fn unfinished(&self) -> Result<Vec<$crate::model::Video>, $crate::CoreError> {
                <$ty>::unfinished(self).await
            }
            async fn clear_interrupted_runs(&self) -> Result<usize, $crate::CoreError> {
                <$ty>::clear_interrupted_runs(self).await
            }
            async fn add_crash(&self, id: &str) -> Result<u32, $crate::CoreError> {
                <$ty>::add_crash(self, id).await
            }
            async fn reset_crashes(&self, id: &str) -> Result<(), $crate::CoreError> {
                <$ty>::reset_crashes(self, id).await
            }
            async fn delete(&self, id: &str) -> Result<bool, $crate::CoreError> {
                <$ty>::delete(self, id).await
            }
            async fn count_by_state(&self) -> Result<Vec<($crate::state::VideoState, u64)>, $crate::CoreError> {
                <$ty>::count_by_state(self).await
            }
            async fn record_artefact(&self, artefact: $crate::catalog::Artefact) -> Result<(), $crate::CoreError> {
                <$ty>::record_artefact(self, artefact).await
            }
            async fn forget_artefact(&self, location: &str) -> Result<(), $crate::CoreError> {
                <$ty>::forget_artefact(self, location).await
            }
            async fn artefacts(&self) -> Result<Vec<$crate::catalog::Artefact>, $crate::CoreError> {
                <$ty>::artefacts(self).await
            }
            async fn pending_notifications(&self, limit: u32) -> Result<Vec<$crate::catalog::Pending>, $crate::CoreError> {
                <$ty>::pending_notifications(self, limit).await
            }
            async fn notification_delivered(&self, id: i64) -> Result<(), $crate::CoreError> {
                <$ty>::notification_delivered(self, id).await
            }
            async fn notification_failed(&self, id: i64, delay_seconds: u64) -> Result<(), $crate::CoreError> {
                <$ty>::notification_failed(self, id, delay_seconds).await
            }
            async fn purge_delivered(&self, days: u32) -> Result<usize, $crate::CoreError> {
                <$ty>::purge_delivered(self, days).await
            }
            async fn drop_notification(&self, id: i64) -> Result<(), $crate::CoreError> {
                <$ty>::drop_notification(self, id).await
            }
            async fn set_contact(&self, owner: &str, email: &str) -> Result<(), $crate::CoreError> {
                <$ty>::set_contact(self, owner, email).await
            }
            async fn contact(&self, owner: &str) -> Result<Option<String>, $crate::CoreError> {
                <$ty>::contact(self, owner).await
            }
            async fn charge_upload(&self, id: &str, owner: &str, bytes: u64) -> Result<(), $crate::CoreError> {
                <$ty>::charge_upload(self, id, owner, bytes).await
            }
            async fn usage(&self, owner: &str) -> Result<$crate::catalog::Usage, $crate::CoreError> {
                <$ty>::usage(self, owner).await
            }
            async fn check(&self, limit: std::time::Duration) -> Result<(), $crate::CoreError> {
                <$ty>::ready(self, limit).await
            }
        }
    };
}

#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;

use crate::error::CoreError;
use crate::model::{Options, Outputs, SourceInfo, StateEvent, Video, VideoError, VideoId};
use crate::state::{Stage, VideoState};

#[cfg(feature = "postgres")]
pub use postgres::{PgBus, PgCatalog};
pub use sqlite::SqliteCatalog;

/// Every channel gets its own outbox row, so one that is down delays only
/// itself.
pub const CHANNELS: [&str; 2] = ["webhook", "email"];

/// A video to create.
#[derive(Debug, Clone)]
pub struct NewVideo {
    pub id: VideoId,
    pub owner: String,
    pub filename: String,
    pub options: Options,
    pub state: VideoState,
    /// Bytes of the source charged to the owner's quotas (a resumable
    /// upload: its declared length; a direct upload: 0 until completed).
    pub source_bytes: u64,
}

/// A change to a video; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub state: Option<VideoState>,
    /// `Some(None)` clears the stage.
    pub stage: Option<Option<Stage>>,
    /// `Some(None)` clears the error.
    pub error: Option<Option<VideoError>>,
    pub source: Option<SourceInfo>,
    pub outputs: Option<Outputs>,
    pub add_attempt: bool,
    /// Marks whether processing is under way (a crash while it is counts).
    pub in_flight: Option<bool>,
    /// The token of the lease this change is made under (a run's changes).
    pub fence: Option<i64>,
}

impl Change {
    /// `video` as this change leaves it (what the catalog then stores).
    pub fn applied_to(&self, video: &Video) -> Video {
        let mut after = video.clone();
        if let Some(s) = self.state {
            after.state = s;
        }
        if let Some(s) = self.stage {
            after.stage = s;
        }
        if let Some(e) = &self.error {
            after.error = e.clone();
        }
        if let Some(o) = &self.outputs {
            after.outputs = o.clone();
        }
        if let Some(s) = &self.source {
            after.source = Some(s.clone());
        }
        if self.add_attempt {
            after.attempts += 1;
        }
        after
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub videos: Vec<Video>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A temporary file, partial upload or multipart upload that exists and
/// must be removed if the work it belongs to does not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artefact {
    /// A path, or a store-specific locator (e.g. an S3 upload id).
    pub location: String,
    pub kind: String,
    pub video_id: Option<VideoId>,
}

/// One notification waiting for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub id: i64,
    pub video_id: VideoId,
    pub seq: u64,
    /// `video.ready` or `video.failed`.
    pub kind: String,
    /// Which channel delivers it ([`CHANNELS`]).
    pub channel: String,
    /// The state event it announces.
    pub event: StateEvent,
    /// Deliveries tried so far.
    pub attempts: u32,
    /// Seconds until its next attempt (0 when due).
    pub wait_seconds: f64,
    /// Seconds since it was written.
    pub age_seconds: f64,
}

/// The window of "bytes uploaded per day": a rolling 24 hours.
pub const UPLOAD_DAY_MS: u64 = 24 * 3600 * 1000;

/// One owner's use of the quotas the catalog can count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of the sources and outputs of the owner's videos.
    pub stored_bytes: u64,
    /// Bytes charged to uploads in the 24 hours before the query.
    pub uploaded_last_day: u64,
    /// Videos still `uploading` (resumable and direct uploads not finished).
    pub open_uploads: u64,
}

/// The catalog port (see the module documentation for its promises).
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug + 'static {
    /// Creates a video and its first event.
    async fn insert(&self, new: NewVideo) -> Result<(Video, StateEvent), CoreError>;

    /// Applies `change` and appends the resulting state event, if any.
    async fn apply(
        &self,
        id: &str,
        change: Change,
    ) -> Result<(Video, Option<StateEvent>), CoreError>;

    async fn get(&self, id: &str) -> Result<Option<Video>, CoreError>;

    /// A video if `owner` owns it: another owner's video reads as missing.
    async fn get_owned(&self, owner: &str, id: &str) -> Result<Option<Video>, CoreError> {
        Ok(self.get(id).await?.filter(|v| v.owner == owner))
    }

    /// `owner`'s videos, newest first; `cursor` is the last id of the
    /// previous page.
    async fn list(
        &self,
        owner: &str,
        state: Option<VideoState>,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<Page, CoreError>;

    /// State events of video `id` after `seq`, in order.
    async fn events_after(&self, id: &str, seq: u64) -> Result<Vec<StateEvent>, CoreError>;

    /// The most recently finished video with an MP4 (the web page's demo).
    async fn newest_playable(&self) -> Result<Option<Video>, CoreError>;

    /// Videos uploading, queued or processing.
    async fn unfinished(&self) -> Result<Vec<Video>, CoreError>;

    /// Clears the in-flight mark of runs a stopped process left; returns
    /// how many there were.
    async fn clear_interrupted_runs(&self) -> Result<usize, CoreError>;

    /// Counts a crash against video `id`; returns its crashes so far.
    async fn add_crash(&self, id: &str) -> Result<u32, CoreError>;

    async fn reset_crashes(&self, id: &str) -> Result<(), CoreError>;

    /// Removes the video, its events and its notifications; `false` when
    /// it did not exist.
    async fn delete(&self, id: &str) -> Result<bool, CoreError>;

    async fn count_by_state(&self) -> Result<Vec<(VideoState, u64)>, CoreError>;

    /// Records a temporary file of this node, removed at its next start
    /// unless forgotten first.
    async fn record_artefact(&self, artefact: Artefact) -> Result<(), CoreError>;

    async fn forget_artefact(&self, location: &str) -> Result<(), CoreError>;

    /// This node's recorded artefacts.
    async fn artefacts(&self) -> Result<Vec<Artefact>, CoreError>;

    /// Undelivered notifications, oldest first (at most `limit`).
    async fn pending_notifications(&self, limit: u32) -> Result<Vec<Pending>, CoreError>;

    async fn notification_delivered(&self, id: i64) -> Result<(), CoreError>;

    /// Counts a failed attempt; the next is due in `delay_seconds`.
    async fn notification_failed(&self, id: i64, delay_seconds: u64) -> Result<(), CoreError>;

    /// Removes delivered notifications older than `days`; returns how many.
    async fn purge_delivered(&self, days: u32) -> Result<usize, CoreError>;

    /// Gives a notification up (too old, channel off, video gone).
    async fn drop_notification(&self, id: i64) -> Result<(), CoreError>;

    /// Remembers where to mail `owner`.
    async fn set_contact(&self, owner: &str, email: &str) -> Result<(), CoreError>;

    async fn contact(&self, owner: &str) -> Result<Option<String>, CoreError>;

    /// Charges a direct upload's bytes once they are known.
    async fn charge_upload(&self, id: &str, owner: &str, bytes: u64) -> Result<(), CoreError>;

    /// What `owner` uses now.
    async fn usage(&self, owner: &str) -> Result<Usage, CoreError>;

    /// Whether the catalog answers now (`/readyz`), within `limit`.
    async fn check(&self, limit: Duration) -> Result<(), CoreError>;
}
