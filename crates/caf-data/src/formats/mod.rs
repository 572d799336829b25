//! The four index formats. Each loader reads and checks the whole index
//! before returning (missing files, unparsable rows, an empty result), and
//! reports counts and the first offending rows with their line numbers.

mod afew_va;
mod aff_wild2;
mod affectnet;
mod face_boxes;
mod generic;

use std::path::{Path, PathBuf};

pub use afew_va::load_afew_va;
pub use aff_wild2::load_aff_wild2;
pub use affectnet::load_affectnet;
pub use face_boxes::FaceBoxes;
pub use generic::load_generic_csv;

use crate::sample::{DataError, Dataset};

/// Where a dataset is and in which layout (see `datasets/README.md`).
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSpec {
    /// `path,valence,arousal[,subject]` rows, paths relative to `root`.
    Generic { csv: PathBuf, root: PathBuf },
    /// AffectNet 2017 `training.csv` / `validation.csv`; with `face_margin`,
    /// images are cropped to the CSV's face box grown by that fraction per side.
    AffectNet {
        csv: PathBuf,
        root: PathBuf,
        face_margin: Option<f32>,
    },
    /// AFEW-VA clip folders `001`–`600` with their JSON files.
    AfewVa { root: PathBuf },
    /// Aff-Wild2 (ABAW): `<video>.txt` annotation files and a frames folder per video.
    AffWild2 { annotations: PathBuf, frames: PathBuf },
}

impl DatasetSpec {
    pub fn load(&self) -> Result<Dataset, DataError> {
        match self {
            DatasetSpec::Generic { csv, root } => load_generic_csv(csv, root),
            DatasetSpec::AffectNet { csv, root, face_margin } => load_affectnet(csv, root, *face_margin),
            DatasetSpec::AfewVa { root } => load_afew_va(root),
            DatasetSpec::AffWild2 { annotations, frames } => load_aff_wild2(annotations, frames),
        }
    }
}

/// The first existing file among `stem` + each extension.
pub(crate) fn find_image(folder: &Path, stem: &str, extensions: &[&str]) -> Option<PathBuf> {
    extensions
        .iter()
        .map(|ext| folder.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
}

/// Sorted entries of a folder.
pub(crate) fn sorted_entries(folder: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| DataError::io(folder, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

/// Opens a CSV reader that keeps every row (header included) with its line number.
pub(crate) fn csv_reader(file: &Path) -> Result<csv::Reader<std::fs::File>, DataError> {
    let handle = std::fs::File::open(file).map_err(|e| DataError::io(file, e))?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(handle))
}

#[cfg(test)]
mod tests;
