//! Samples, datasets, and the report every loader gives when it opens an index.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A face box in pixels of a photo: its top-left corner and size
/// (AffectNet's columns). The one box type of caf-rs: datasets' boxes, given
/// boxes and detected faces are all this.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceBox {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

impl FaceBox {
    /// The box with corners `(x1, y1)` and `(x2, y2)`.
    pub fn from_corners([x1, y1, x2, y2]: [f32; 4]) -> FaceBox {
        FaceBox {
            x: x1,
            y: y1,
            width: x2 - x1,
            height: y2 - y1,
        }
    }

    pub fn area(&self) -> f32 {
        self.width * self.height
    }

    /// `[x1, y1, x2, y2]`.
    pub fn corners(&self) -> [f32; 4] {
        [self.x, self.y, self.x + self.width, self.y + self.height]
    }

    /// The box in a photo scaled by `sx` across and `sy` down.
    pub fn scaled(&self, sx: f32, sy: f32) -> FaceBox {
        FaceBox {
            x: self.x * sx,
            y: self.y * sy,
            width: self.width * sx,
            height: self.height * sy,
        }
    }

    /// The box grown by `margin` × its width (height) on the left and right
    /// (top and bottom), about the same centre: 0.2 makes it 1.4 times as
    /// wide and as high.
    pub fn grown(&self, margin: f32) -> FaceBox {
        FaceBox {
            x: self.x - margin * self.width,
            y: self.y - margin * self.height,
            width: self.width * (1.0 + 2.0 * margin),
            height: self.height * (1.0 + 2.0 * margin),
        }
    }
}

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Absolute (or root-joined) path of the image.
    pub path: PathBuf,
    /// Valence in [-1, 1].
    pub valence: f32,
    /// Arousal in [-1, 1].
    pub arousal: f32,
    /// Who is in the picture (or the video, when that is all a dataset tells);
    /// splits never put one subject on both sides.
    pub subject: String,
    /// Face box to crop to before resizing, when the dataset gives one.
    pub face: Option<FaceBox>,
}

/// A row the loader could not use, with its place in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    pub file: PathBuf,
    /// 1-based line number in `file` (the header is line 1 for CSV files).
    pub line: usize,
    pub message: String,
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// How many rows an index had and what became of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexReport {
    /// Annotation rows read (frames, for per-frame formats).
    pub rows: usize,
    /// Rows that became samples.
    pub kept: usize,
    /// Rows left out by the dataset's own rules (e.g. AffectNet's `-2`), by reason.
    pub excluded: BTreeMap<String, usize>,
}

impl IndexReport {
    pub(crate) fn exclude(&mut self, reason: &str) {
        *self.excluded.entry(reason.to_string()).or_default() += 1;
    }
}

impl fmt::Display for IndexReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rows, {} samples", self.rows, self.kept)?;
        for (reason, count) in &self.excluded {
            write!(f, ", {count} excluded ({reason})")?;
        }
        Ok(())
    }
}

/// A loaded index: samples and what the loader saw.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Which format and where, for messages (`AffectNet training.csv`).
    pub name: String,
    pub samples: Vec<Sample>,
    pub report: IndexReport,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Distinct subjects, sorted.
    pub fn subjects(&self) -> Vec<&str> {
        let mut subjects: Vec<&str> = self.samples.iter().map(|s| s.subject.as_str()).collect();
        subjects.sort_unstable();
        subjects.dedup();
        subjects
    }

    /// The samples at `indices`, as a dataset of their own.
    pub fn subset(&self, indices: &[usize], name: &str) -> Dataset {
        let samples: Vec<Sample> = indices.iter().map(|&i| self.samples[i].clone()).collect();
        let report = IndexReport {
            rows: samples.len(),
            kept: samples.len(),
            excluded: BTreeMap::new(),
        };
        Dataset {
            name: format!("{} ({name})", self.name),
            samples,
            report,
        }
    }
}

/// Errors of opening a dataset or reading its images.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },

    #[error("{file}: {count} unusable row(s) of {rows}; fix or remove them (the first {shown}):\n{list}", shown = first.len(), list = first.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    BadRows {
        file: PathBuf,
        rows: usize,
        count: usize,
        first: Vec<RowProblem>,
    },

    #[error("{file}: no usable samples ({report})")]
    Empty { file: PathBuf, report: IndexReport },

    #[error("{path}: {message}")]
    Image { path: PathBuf, message: String },

    /// A file over one of the [`DecodeLimits`](crate::DecodeLimits), refused before decoding.
    #[error("{path}: {found} {unit}, over the limit of {allowed} {unit}; if the file is genuine, raise the limit `{setting}` (predict's --{option})", unit = limit.unit(), setting = limit.setting(), option = limit.setting().replace('_', "-"))]
    OverLimit {
        path: PathBuf,
        limit: crate::DecodeLimit,
        found: u64,
        allowed: u64,
    },

    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// How many offending rows an error lists.
pub(crate) const SHOWN_PROBLEMS: usize = 10;

/// Collects rows as they are read, then decides: problems are fatal and
/// reported together; an index with no sample is an error too.
#[derive(Debug)]
pub(crate) struct IndexBuilder {
    file: PathBuf,
    name: String,
    samples: Vec<Sample>,
    report: IndexReport,
    problems: Vec<RowProblem>,
    problem_count: usize,
}

impl IndexBuilder {
    pub(crate) fn new(file: &Path, name: String) -> Self {
        Self {
            file: file.to_path_buf(),
            name,
            samples: Vec::new(),
            report: IndexReport::default(),
            problems: Vec::new(),
            problem_count: 0,
        }
    }

    pub(crate) fn row(&mut self) {
        self.report.rows += 1;
    }

    pub(crate) fn keep(&mut self, sample: Sample) {
        self.report.kept += 1;
        self.samples.push(sample);
    }

    pub(crate) fn exclude(&mut self, reason: &str) {
        self.report.exclude(reason);
    }

    pub(crate) fn problem(&mut self, file: &Path, line: usize, message: impl Into<String>) {
        self.problem_count += 1;
        if self.problems.len() < SHOWN_PROBLEMS {
            self.problems.push(RowProblem {
                file: file.to_path_buf(),
                line,
                message: message.into(),
            });
        }
    }

    pub(crate) fn finish(self) -> Result<Dataset, DataError> {
        if self.problem_count > 0 {
            return Err(DataError::BadRows {
                file: self.file,
                rows: self.report.rows,
                count: self.problem_count,
                first: self.problems,
            });
        }
        if self.samples.is_empty() {
            return Err(DataError::Empty {
                file: self.file,
                report: self.report,
            });
        }
        tracing::info!(dataset = %self.name, "{}", self.report);
        Ok(Dataset {
            name: self.name,
            samples: self.samples,
            report: self.report,
        })
    }
}

/// Parses a label value, naming the column when it is not a number.
pub(crate) fn parse_value(field: &str, column: &str) -> Result<f32, String> {
    field
        .trim()
        .parse::<f32>()
        .map_err(|_| format!("{column} `{field}` is not a number"))
}
