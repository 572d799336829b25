//! Errors a user can cause when loading the detector or asking it to detect.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong while loading MTCNN's weights or detecting faces.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weights file is missing a tensor or holds one of the wrong shape.
    #[error("{source_name}: {message}")]
    Weights { source_name: String, message: String },

    /// A detector setting outside its range.
    #[error("face detector: {0}")]
    Config(String),

    /// Reading a weights file failed (unreadable, unknown format, Hub miss).
    #[error(transparent)]
    File(Box<caf_backbone::Error>),

    /// Writing the converted weights failed.
    #[error("{file}: cannot write the converted weights: {message}")]
    Write { file: PathBuf, message: String },

    /// A tensor operation failed (device out of memory, an internal shape bug).
    #[error("face detection: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl From<caf_backbone::Error> for Error {
    fn from(error: caf_backbone::Error) -> Self {
        Error::File(Box::new(error))
    }
}
