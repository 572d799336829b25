//! # caf-data
//!
//! Everything between a dataset on disk and a batch of tensors:
//!
//! * the index formats of AffectNet, AFEW-VA, Aff-Wild2 and a generic CSV
//!   ([`DatasetSpec`]), each checked whole when opened;
//! * person-independent splits ([`subject_split`], [`subject_folds`]);
//! * bounded image decoding ([`decode_with_limits`], [`DecodeLimits`]): a
//!   file that declares more pixels, bytes or metadata than the limits is
//!   refused before its pixels are allocated;
//! * the image pipeline ([`Preprocess`], [`Augment`]) and a parallel,
//!   deterministic batch loader ([`BatchLoader`]);
//! * a built-in dataset of synthetic people ([`synthetic`]).
//!
//! Splits hold people out, never single images of a person:
//!
//! ```
//! use caf_data::{subject_split, Dataset, IndexReport, Sample};
//!
//! let samples = (0..12)
//!     .map(|i| Sample {
//!         path: format!("{i}.png").into(),
//!         valence: 0.1,
//!         arousal: -0.2,
//!         subject: format!("person-{}", i % 4),
//!         face: None,
//!     })
//!     .collect();
//! let dataset = Dataset { name: "four people".into(), samples, report: IndexReport::default() };
//! let split = subject_split(&dataset, 0.25, 7)?;
//! let validation = dataset.subset(&split.validation, "validation");
//! let training = dataset.subset(&split.train, "training");
//! assert_eq!((training.subjects().len(), validation.subjects().len()), (3, 1));
//! assert_eq!(validation.len(), 3); // all three images of the held-out person
//! assert!(!training.subjects().contains(&validation.subjects()[0]));
//! # Ok::<(), caf_data::DataError>(())
//! ```

mod decode;
mod formats;
mod loader;
mod pipeline;
mod sample;
mod split;
pub mod synthetic;

pub use caf_rng::Rng;
pub use decode::{decode, decode_bytes, decode_with_limits, DecodeLimit, DecodeLimits};
pub use formats::{load_afew_va, load_aff_wild2, load_affectnet, load_generic_csv, DatasetSpec, FaceBoxes};
pub use loader::{Batch, BatchLoader, Epoch, LoaderConfig};
pub use pipeline::{face_region, prepare, Augment, ColorJitter, Preprocess, IMAGENET_MEAN, IMAGENET_STD};
pub use sample::{DataError, Dataset, FaceBox, IndexReport, RowProblem, Sample};
pub use split::{subject_folds, subject_split, Split};
