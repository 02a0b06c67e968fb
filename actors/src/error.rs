//! The core's error type, with the classifiers the edges use to answer.

use crate::model::VideoId;
use crate::state::VideoState;

/// What went wrong inside the core.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("video {0} not found")]
    NotFound(String),
    /// The request needs the video in state `wanted` (a retry needs a
    /// failed video; finishing an upload needs one still uploading).
    #[error("video {id} is {state}, not {wanted}")]
    WrongState {
        id: VideoId,
        state: VideoState,
        wanted: VideoState,
    },
    /// The lease a run's change was fenced by is no longer held: another
    /// node has (or will have) the video.
    #[error("the lease on video {0} was lost")]
    LeaseLost(VideoId),
    /// A resumable upload was finished before its last byte arrived.
    #[error("upload {id} has {received} of {length} bytes")]
    Incomplete {
        id: VideoId,
        received: u64,
        length: u64,
    },
    /// Another request holds what this one needs (a resumable upload being
    /// written on another connection) and did not let go in time.
    #[error("{0}")]
    Busy(String),
    /// Not enough disk (or memory) to take the work.
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
    /// The catalog's database failed (either backend; the message says
    /// how).
    #[error("database error: {0}")]
    Database(String),
    #[error("database schema: {0}")]
    Schema(String),
    #[error("storage error: {0}")]
    Storage(String),
    /// An actor did not answer in time or has stopped.
    #[error("the core is unavailable: {0}")]
    Unavailable(String),
    #[error("lock poisoned: {0}")]
    Poisoned(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    /// The caller asked for something that cannot be done as asked.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::NotFound(_) | Self::WrongState { .. } | Self::Incomplete { .. }
        )
    }

    /// Worth trying again shortly.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::InsufficientStorage(_))
    }
}

/// The SQLite catalog's `?`: its errors become [`CoreError::Database`],
/// so that no backend's type shows in the core's error.
impl From<rusqlite::Error> for CoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Database(e.to_string())
    }
}

impl<T> From<ractor::MessagingErr<T>> for CoreError {
    fn from(e: ractor::MessagingErr<T>) -> Self {
        Self::Unavailable(e.to_string())
    }
}
