//! The one error type of the pipelines crate, with classifiers the callers use
//! to decide what to tell a user (their file) versus an operator (our side).

use std::time::Duration;

/// Why a media operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The input is not a video we can read: not media at all, audio only, a
    /// still image, or a codec no installed plugin decodes.
    #[error("unsupported media: {0}")]
    Unsupported(String),
    /// The input looks like a video but its data is broken or cut short.
    #[error("corrupt media: {0}")]
    Corrupt(String),
    /// The caller's cancel token fired.
    #[error("cancelled")]
    Cancelled,
    /// Media time stopped advancing for longer than the stall timeout.
    #[error("pipeline stalled: no progress for {0:?}")]
    Stalled(Duration),
    /// The wall-clock cap for the operation passed.
    #[error("pipeline timed out after {0:?}")]
    TimedOut(Duration),
    /// The media passed one of the configured limits: `limit` says which
    /// (callers name its configuration key from it), the message also
    /// names the key.
    #[error("{why}")]
    LimitExceeded {
        limit: crate::limits::Limit,
        why: String,
    },
    /// A GStreamer element vidmill needs is not installed.
    #[error("GStreamer element `{0}` is missing; install the GStreamer plugin packages")]
    MissingElement(String),
    /// The spec itself is invalid (e.g. a non-positive frame interval).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// GStreamer failed for a reason that is not the input's fault.
    #[error("pipeline failed: {0}")]
    Pipeline(String),
    /// Reading or writing a local file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = MediaError> = std::result::Result<T, E>;

impl MediaError {
    /// The input is at fault: retrying the same bytes gives the same answer.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Self::Unsupported(_) | Self::Corrupt(_) | Self::Invalid(_) | Self::LimitExceeded { .. }
        )
    }

    /// Worth running again later (a stall or an environment problem may pass).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Stalled(_) | Self::TimedOut(_) | Self::Pipeline(_) | Self::Io { .. }
        )
    }

    /// A stable kebab-case code, matching API.md's video error codes.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unsupported(_) => "unsupported-media",
            Self::Corrupt(_) => "corrupt-media",
            Self::Cancelled => "cancelled",
            Self::Stalled(_) => "pipeline-stalled",
            Self::TimedOut(_) => "pipeline-timed-out",
            Self::Invalid(_) => "invalid-option",
            Self::LimitExceeded { .. } => "limit-exceeded",
            Self::MissingElement(_) | Self::Pipeline(_) | Self::Io { .. } => "pipeline-failed",
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Classifies an error GStreamer posted while reading the input: a stream
    /// it could not recognise is unsupported, one it recognised but could not
    /// demux or decode is corrupt.
    pub(crate) fn from_gst(err: &gst::glib::Error, debug: Option<&str>) -> Self {
        let text = match debug {
            Some(d) if !d.is_empty() => format!("{} ({d})", err.message()),
            _ => err.message().to_string(),
        };
        if let Some(kind) = err.kind::<gst::StreamError>() {
            return match kind {
                gst::StreamError::TypeNotFound
                | gst::StreamError::WrongType
                | gst::StreamError::CodecNotFound => Self::Unsupported(text),
                gst::StreamError::Demux
                | gst::StreamError::Decode
                | gst::StreamError::Format
                | gst::StreamError::Decrypt
                | gst::StreamError::DecryptNokey => Self::Corrupt(text),
                _ => Self::Pipeline(text),
            };
        }
        if let Some(gst::CoreError::MissingPlugin) = err.kind::<gst::CoreError>() {
            return Self::Unsupported(text);
        }
        if let Some(gst::ResourceError::NotFound | gst::ResourceError::OpenRead) =
            err.kind::<gst::ResourceError>()
        {
            return Self::Io {
                path: String::new(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, text),
            };
        }
        Self::Pipeline(text)
    }
}

impl From<gst::glib::BoolError> for MediaError {
    fn from(e: gst::glib::BoolError) -> Self {
        Self::Pipeline(e.to_string())
    }
}

impl From<gst::StateChangeError> for MediaError {
    fn from(e: gst::StateChangeError) -> Self {
        Self::Pipeline(e.to_string())
    }
}
