//! # caf-data
//!
//! Everything between a dataset on disk and a batch of tensors:
//!
//! * the index formats of AffectNet, AFEW-VA, Aff-Wild2 and a generic CSV
//!   ([`DatasetSpec`]), each checked whole when opened;
//! * person-independent splits ([`subject_split`], [`subject_folds`]);
//! * the image pipeline ([`Preprocess`], [`Augment`]) and a parallel,
//!   deterministic batch loader ([`BatchLoader`]);
//! * a built-in dataset of synthetic people ([`synthetic`]).

pub mod formats;
pub mod loader;
pub mod pipeline;
pub mod sample;
pub mod split;
pub mod synthetic;

pub use caf_rng::Rng;
pub use formats::DatasetSpec;
pub use loader::{Batch, BatchLoader, Epoch, LoaderConfig};
pub use pipeline::{Augment, ColorJitter, Preprocess};
pub use sample::{DataError, Dataset, FaceBox, IndexReport, RowProblem, Sample};
pub use split::{subject_folds, subject_split, Split};
