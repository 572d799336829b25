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

/// Where a dataset is and in which layout (see `datasets/README.md`): the
/// one list of the formats caf-rs reads. In TOML (a training config's
/// `[data]`) and JSON the variant is the `format` field:
///
/// ```
/// use caf_data::DatasetSpec;
///
/// let spec: DatasetSpec = toml::from_str("format = \"afew-va\"\nroot = \"/data/AFEW-VA\"").unwrap();
/// assert_eq!(spec, DatasetSpec::AfewVa { root: "/data/AFEW-VA".into() });
/// assert_eq!(spec.format(), "afew-va");
/// assert!(DatasetSpec::FORMATS.contains(&spec.format()));
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "format", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DatasetSpec {
    /// The built-in generated faces (`crate::synthetic`), written to `dir`
    /// on first use and read from there afterwards.
    Synthetic {
        dir: PathBuf,
        subjects: usize,
        images_per_subject: usize,
        size: u32,
        seed: u64,
    },
    /// `path,valence,arousal[,subject]` rows, paths relative to `root`.
    Generic { csv: PathBuf, root: PathBuf },
    /// AffectNet 2017 `training.csv` / `validation.csv`; with `face_margin`,
    /// images are cropped to the CSV's face box grown by that fraction per side.
    #[serde(rename = "affectnet")]
    AffectNet {
        csv: PathBuf,
        root: PathBuf,
        #[serde(default)]
        face_margin: Option<f32>,
    },
    /// AFEW-VA clip folders `001`–`600` with their JSON files.
    AfewVa { root: PathBuf },
    /// Aff-Wild2 (ABAW): `<video>.txt` annotation files and a frames folder per video.
    AffWild2 { annotations: PathBuf, frames: PathBuf },
}

impl DatasetSpec {
    /// The `format` names, in the order of the variants.
    pub const FORMATS: [&'static str; 5] = ["synthetic", "generic", "affectnet", "afew-va", "aff-wild2"];

    /// This spec's `format` name.
    pub fn format(&self) -> &'static str {
        let index = match self {
            DatasetSpec::Synthetic { .. } => 0,
            DatasetSpec::Generic { .. } => 1,
            DatasetSpec::AffectNet { .. } => 2,
            DatasetSpec::AfewVa { .. } => 3,
            DatasetSpec::AffWild2 { .. } => 4,
        };
        Self::FORMATS[index]
    }

    /// Reads and checks the index (generating the synthetic dataset first
    /// when its folder has none).
    pub fn load(&self) -> Result<Dataset, DataError> {
        match self {
            DatasetSpec::Synthetic {
                dir,
                subjects,
                images_per_subject,
                size,
                seed,
            } => {
                let csv = dir.join(crate::synthetic::LABELS_CSV);
                if !csv.is_file() {
                    let config = crate::synthetic::SyntheticConfig {
                        subjects: *subjects,
                        images_per_subject: *images_per_subject,
                        size: *size,
                        seed: *seed,
                        jpeg: false,
                    };
                    tracing::info!(dir = %dir.display(), "generating the built-in synthetic dataset");
                    crate::synthetic::generate(dir, &config)?;
                }
                load_generic_csv(&csv, dir)
            }
            DatasetSpec::Generic { csv, root } => load_generic_csv(csv, root),
            DatasetSpec::AffectNet { csv, root, face_margin } => load_affectnet(csv, root, *face_margin),
            DatasetSpec::AfewVa { root } => load_afew_va(root),
            DatasetSpec::AffWild2 { annotations, frames } => load_aff_wild2(annotations, frames),
        }
    }
}

#[cfg(test)]
mod spec_tests {
    use super::DatasetSpec;

    /// Every name in `FORMATS` is the serde tag of the variant at its place.
    #[test]
    fn the_format_names_are_the_serde_tags() {
        let examples = [
            DatasetSpec::Synthetic {
                dir: "d".into(),
                subjects: 1,
                images_per_subject: 1,
                size: 8,
                seed: 0,
            },
            DatasetSpec::Generic {
                csv: "c".into(),
                root: "r".into(),
            },
            DatasetSpec::AffectNet {
                csv: "c".into(),
                root: "r".into(),
                face_margin: None,
            },
            DatasetSpec::AfewVa { root: "r".into() },
            DatasetSpec::AffWild2 {
                annotations: "a".into(),
                frames: "f".into(),
            },
        ];
        for (spec, name) in examples.iter().zip(DatasetSpec::FORMATS) {
            let value = serde_json::to_value(spec).expect("serialise");
            assert_eq!(value["format"], name);
            assert_eq!(spec.format(), name);
            assert_eq!(&serde_json::from_value::<DatasetSpec>(value).expect("read back"), spec);
        }
    }

    #[test]
    fn unknown_formats_and_fields_are_refused_by_name() {
        let error = serde_json::from_str::<DatasetSpec>(r#"{"format": "fer2013", "root": "r"}"#).unwrap_err();
        assert!(error.to_string().contains("fer2013"), "{error}");
        let error =
            serde_json::from_str::<DatasetSpec>(r#"{"format": "afew-va", "root": "r", "rot": "x"}"#).unwrap_err();
        assert!(error.to_string().contains("rot"), "{error}");
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

/// The longest line an index may hold. An AffectNet row, 68 landmarks
/// included, is under 1 KiB; a longer line is not an index's.
pub(crate) const MAX_LINE_BYTES: usize = 64 << 10;

/// Opens a CSV reader that keeps every row (header included) with its line
/// number. A line over [`MAX_LINE_BYTES`] ends the reading with an I/O
/// error (see [`is_fatal`]) instead of growing a record without bound.
pub(crate) fn csv_reader(file: &Path) -> Result<csv::Reader<LineBounded<std::fs::File>>, DataError> {
    let handle = std::fs::File::open(file).map_err(|e| DataError::io(file, e))?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(LineBounded {
            inner: handle,
            line: 0,
            failed: false,
        }))
}

/// The largest annotation file read whole (an AFEW-VA clip's JSON, an
/// Aff-Wild2 video's labels; the largest of either is a few hundred KiB).
pub(crate) const MAX_ANNOTATION_FILE_BYTES: u64 = 64 << 20;

/// The text of an annotation file read whole, refused above
/// [`MAX_ANNOTATION_FILE_BYTES`] before it is read.
pub(crate) fn read_annotation_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let too_large = |size: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{size} bytes, more than the {MAX_ANNOTATION_FILE_BYTES} an annotation file may hold"),
        )
    };
    if size > MAX_ANNOTATION_FILE_BYTES {
        return Err(too_large(size));
    }
    let mut text = String::with_capacity(size as usize);
    file.take(MAX_ANNOTATION_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_ANNOTATION_FILE_BYTES {
        return Err(too_large(text.len() as u64));
    }
    Ok(text)
}

/// Whether a CSV error ends the file (an I/O error, an over-long line
/// among them: reading on would meet it again) rather than one row.
pub(crate) fn is_fatal(error: &csv::Error) -> bool {
    matches!(error.kind(), csv::ErrorKind::Io(_))
}

/// A reader that fails, for good, once a line runs past [`MAX_LINE_BYTES`].
pub(crate) struct LineBounded<R> {
    inner: R,
    /// Bytes since the last line end.
    line: usize,
    failed: bool,
}

impl<R: std::io::Read> std::io::Read for LineBounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let too_long = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line longer than {MAX_LINE_BYTES} bytes, more than any index row; is this the right file?"),
            )
        };
        if self.failed {
            return Err(too_long());
        }
        let read = self.inner.read(buf)?;
        for &byte in &buf[..read] {
            self.line = if byte == b'\n' { 0 } else { self.line + 1 };
            if self.line > MAX_LINE_BYTES {
                self.failed = true;
                return Err(too_long());
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests;
