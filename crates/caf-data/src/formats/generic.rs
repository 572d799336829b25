//! Generic CSV: `path,valence,arousal[,subject]`, paths relative to a root.

use std::path::Path;

use super::{csv_reader, is_fatal};
use crate::sample::{parse_value, DataError, Dataset, IndexBuilder, Sample};

/// Loads a generic CSV. A first row whose second field is not a number (e.g.
/// `path,valence,arousal,subject`) is a header. Values must lie in [-1, 1].
/// Without a subject column, a sample's subject is its image's folder
/// (relative to `root`), so keep one folder per person.
pub fn load_generic_csv(csv: &Path, root: &Path) -> Result<Dataset, DataError> {
    let mut index = IndexBuilder::new(csv, format!("CSV {}", csv.display()));
    for (number, record) in csv_reader(csv)?.records().enumerate() {
        let line = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(number + 1, |p| p.line() as usize);
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                index.row();
                index.problem(csv, line, format!("unreadable row: {e}"));
                if is_fatal(&e) {
                    break;
                }
                continue;
            }
        };
        if number == 0 && record.get(1).is_some_and(|v| v.parse::<f32>().is_err()) {
            continue; // header
        }
        index.row();
        match parse_row(&record, root) {
            Ok(sample) => index.keep(sample),
            Err(message) => index.problem(csv, line, message),
        }
    }
    index.finish()
}

fn parse_row(record: &csv::StringRecord, root: &Path) -> Result<Sample, String> {
    if record.len() < 3 {
        return Err(format!(
            "expected `path,valence,arousal[,subject]`, found {} field(s)",
            record.len()
        ));
    }
    let relative = &record[0];
    if relative.is_empty() {
        return Err("empty path".into());
    }
    let valence = parse_value(&record[1], "valence")?;
    let arousal = parse_value(&record[2], "arousal")?;
    for (name, value) in [("valence", valence), ("arousal", arousal)] {
        if !(-1.0..=1.0).contains(&value) {
            return Err(format!("{name} {value} is outside [-1, 1]"));
        }
    }
    let path = root.join(relative);
    if !path.is_file() {
        return Err(format!("image `{}` does not exist", path.display()));
    }
    let subject = match record.get(3).filter(|s| !s.is_empty()) {
        Some(subject) => subject.to_string(),
        None => Path::new(relative)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    Ok(Sample {
        path,
        valence,
        arousal,
        subject,
        face: None,
    })
}
