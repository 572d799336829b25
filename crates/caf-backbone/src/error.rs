//! Errors a user can cause when loading weights or checkpoints.
//!
//! Every variant names the file at fault and, where one is involved, the tensor,
//! so a message alone tells the user what to fix.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong while building a model or moving its weights.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{file}: tensor `{name}` is missing (expected shape {expected:?}); is this file for the `{arch}` architecture?"
    )]
    MissingTensor {
        file: PathBuf,
        name: String,
        expected: Vec<usize>,
        arch: String,
    },

    #[error("{file}: tensor `{name}` has shape {found:?}, the `{arch}` architecture needs {expected:?}")]
    ShapeMismatch {
        file: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        arch: String,
    },

    #[error("{file}: unknown architecture `{name}` (known: alexnet, resnet18)")]
    UnknownArch { file: PathBuf, name: String },

    #[error("{file}: {message}")]
    BadFile { file: PathBuf, message: String },

    #[error("{file}: {error}")]
    Io { file: PathBuf, error: std::io::Error },

    #[error("Hugging Face Hub file `{file}` of `{repo}` (revision {revision}): {message}")]
    Hub {
        repo: String,
        file: String,
        revision: String,
        message: String,
    },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn bad_file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::BadFile {
            file: file.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(file: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            file: file.into(),
            error,
        }
    }
}
