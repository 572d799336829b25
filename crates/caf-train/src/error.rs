//! What can go wrong while training, evaluating or reporting, as values a
//! caller can match: each variant that a user can cause names the setting,
//! file or run at fault and, where there is one, the fix.

use std::path::{Path, PathBuf};

use caf_kernels::DeviceError;

/// Result alias for this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Errors of caf-train's public API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A setting (from TOML, an override or a series) that cannot run; the
    /// message names the setting and what it must be.
    #[error("{0}")]
    Settings(String),

    /// Reading or preparing the data.
    #[error(transparent)]
    Data(Box<caf_data::DataError>),

    /// Building the networks, loading weights, reading or writing a checkpoint.
    #[error(transparent)]
    Model(Box<caf_backbone::Error>),

    #[error(transparent)]
    Device(#[from] DeviceError),

    /// A tensor operation failed (shapes, device memory).
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),

    /// A file or folder of the run could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },

    /// A file that was read does not hold what it should (a metrics log, a
    /// checkpoint's training state).
    #[error("{}: {message}", path.display())]
    Malformed { path: PathBuf, message: String },

    /// Too many iterations in a row had a non-finite loss; the run was saved
    /// to `saved` and stopped.
    #[error(
        "{iterations} iterations in a row had a non-finite loss (step {step}); the run is stopped and saved to {}. Try a lower lr, check the labels, or resume from an earlier checkpoint",
        saved.display()
    )]
    Diverged {
        iterations: usize,
        step: u64,
        saved: PathBuf,
    },

    /// A plot could not be drawn or written.
    #[error("cannot draw {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },

    /// One run of a series failed; `label` says which.
    #[error("{label}: {source}")]
    Run { label: String, source: Box<TrainError> },
}

// Boxed: the sibling crates' errors are large, and every `Result` of this
// crate carries one.
impl From<caf_data::DataError> for TrainError {
    fn from(error: caf_data::DataError) -> Self {
        TrainError::Data(Box::new(error))
    }
}

impl From<caf_backbone::Error> for TrainError {
    fn from(error: caf_backbone::Error) -> Self {
        TrainError::Model(Box::new(error))
    }
}

impl TrainError {
    pub(crate) fn settings(message: impl Into<String>) -> Self {
        TrainError::Settings(message.into())
    }

    /// An I/O failure on `path`: "cannot `action` `path`: why".
    pub(crate) fn file<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| TrainError::File {
            path: path.to_path_buf(),
            action,
            source,
        }
    }

    pub(crate) fn malformed(path: &Path, message: impl Into<String>) -> Self {
        TrainError::Malformed {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// This error as part of the run called `label`.
    pub(crate) fn in_run(self, label: &str) -> Self {
        TrainError::Run {
            label: label.to_string(),
            source: Box::new(self),
        }
    }
}
