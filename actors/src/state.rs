//! The lifecycle vocabulary of a video: its states and processing stages, with
//! the spellings API.md fixes for them.

use std::fmt;

/// Where a video is in its life (API.md, "Video resource").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoState {
    Uploading,
    Queued,
    Processing,
    Ready,
    Failed,
}

impl VideoState {
    /// The wire spelling of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploading => "uploading",
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }

    /// Ready and failed videos have no actor and take no more work.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Ready | Self::Failed)
    }
}

impl fmt::Display for VideoState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_and_failed_are_terminal() {
        let terminal: Vec<_> = [
            VideoState::Uploading,
            VideoState::Queued,
            VideoState::Processing,
            VideoState::Ready,
            VideoState::Failed,
        ]
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(VideoState::as_str)
        .collect();
        assert_eq!(terminal, ["ready", "failed"]);
    }
}
