//! The lifecycle vocabulary of a video: its states and processing stages, with
//! the spellings API.md fixes for them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a video is in its life (API.md, "Video resource").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoState {
    Uploading,
    Queued,
    Processing,
    Ready,
    Failed,
}

impl VideoState {
    pub const ALL: [Self; 5] = [
        Self::Uploading,
        Self::Queued,
        Self::Processing,
        Self::Ready,
        Self::Failed,
    ];

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

impl FromStr for VideoState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown state `{s}`"))
    }
}

/// What a processing video is doing (only while `processing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Probing,
    Converting,
    ExtractingFrames,
    Verifying,
    Finalizing,
}

impl Stage {
    pub const ALL: [Self; 5] = [
        Self::Probing,
        Self::Converting,
        Self::ExtractingFrames,
        Self::Verifying,
        Self::Finalizing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probing => "probing",
            Self::Converting => "converting",
            Self::ExtractingFrames => "extracting_frames",
            Self::Verifying => "verifying",
            Self::Finalizing => "finalizing",
        }
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown stage `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_and_failed_are_terminal() {
        let terminal: Vec<_> = VideoState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(VideoState::as_str)
            .collect();
        assert_eq!(terminal, ["ready", "failed"]);
    }

    #[test]
    fn spellings_round_trip() {
        for s in VideoState::ALL {
            assert_eq!(s.as_str().parse::<VideoState>(), Ok(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
        }
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>(), Ok(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
        }
    }
}
