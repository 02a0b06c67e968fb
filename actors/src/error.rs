//! The core's error type, with the classifiers the edges use to answer.

/// What went wrong inside the core.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("video {0} not found")]
    NotFound(String),
    /// The request conflicts with the video's state (e.g. retry of a video
    /// that has not failed).
    #[error("{0}")]
    Conflict(String),
    /// Not enough disk (or memory) to take the work.
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
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
        matches!(self, Self::NotFound(_) | Self::Conflict(_))
    }

    /// Worth trying again shortly.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::InsufficientStorage(_))
    }
}

impl<T> From<ractor::MessagingErr<T>> for CoreError {
    fn from(e: ractor::MessagingErr<T>) -> Self {
        Self::Unavailable(e.to_string())
    }
}
