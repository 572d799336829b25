//! AffectNet (2017 release) `training.csv` / `validation.csv`.

use std::path::Path;

use super::{csv_reader, is_fatal};
use crate::sample::{parse_value, DataError, Dataset, FaceBox, IndexBuilder, Sample};

const COLUMNS: [&str; 7] = [
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "valence",
    "arousal",
];

/// Loads an AffectNet CSV whose image paths are relative to `root`.
///
/// Rows with valence or arousal `-2` (uncertain / no face) or otherwise
/// outside [-1, 1] are excluded and counted. AffectNet has no person ids and
/// rarely shows a person twice, so each image is its own subject. With
/// `face_margin = Some(m)`, each image is cropped to its face box grown by
/// `m` × the box size on every side before resizing.
pub fn load_affectnet(csv: &Path, root: &Path, face_margin: Option<f32>) -> Result<Dataset, DataError> {
    let mut reader = csv_reader(csv)?;
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(header)) => header,
        Some(Err(e)) => {
            return Err(DataError::Invalid(format!(
                "{}:1: unreadable header: {e}",
                csv.display()
            )))
        }
        None => {
            return Err(DataError::Invalid(format!(
                "{}: empty file, expected AffectNet's header",
                csv.display()
            )))
        }
    };
    let column = |name: &str| header.iter().position(|h| h == name);
    let positions: Vec<usize> = COLUMNS
        .iter()
        .map(|name| {
            column(name).ok_or_else(|| {
                DataError::Invalid(format!(
                    "{}:1: no `{name}` column; AffectNet's header is {}",
                    csv.display(),
                    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut index = IndexBuilder::new(csv, format!("AffectNet {}", csv.display()));
    for (number, record) in records.enumerate() {
        index.row();
        let line = number + 2;
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                index.problem(csv, line, format!("unreadable row: {e}"));
                if is_fatal(&e) {
                    break;
                }
                continue;
            }
        };
        let field = |i: usize| record.get(positions[i]).unwrap_or("");
        let (valence, arousal) = match (parse_value(field(5), "valence"), parse_value(field(6), "arousal")) {
            (Ok(v), Ok(a)) => (v, a),
            (Err(message), _) | (_, Err(message)) => {
                index.problem(csv, line, message);
                continue;
            }
        };
        if valence == -2.0 || arousal == -2.0 {
            index.exclude("valence or arousal -2: uncertain or no face");
            continue;
        }
        if !(-1.0..=1.0).contains(&valence) || !(-1.0..=1.0).contains(&arousal) {
            index.exclude("valence or arousal outside [-1, 1]");
            continue;
        }
        let path = root.join(field(0));
        if field(0).is_empty() || !path.is_file() {
            index.problem(csv, line, format!("image `{}` does not exist", path.display()));
            continue;
        }
        let face = match face_margin {
            None => None,
            Some(margin) => match parse_box(&[field(1), field(2), field(3), field(4)], margin) {
                Ok(face) => Some(face),
                Err(message) => {
                    index.problem(csv, line, message);
                    continue;
                }
            },
        };
        index.keep(Sample {
            subject: field(0).to_string(),
            path,
            valence,
            arousal,
            face,
        });
    }
    index.finish()
}

pub(super) fn parse_box(fields: &[&str; 4], margin: f32) -> Result<FaceBox, String> {
    let mut values = [0f32; 4];
    for (value, (field, name)) in
        values
            .iter_mut()
            .zip(fields.iter().zip(["face_x", "face_y", "face_width", "face_height"]))
    {
        *value = parse_value(field, name)?;
    }
    let [x, y, width, height] = values;
    if width <= 0.0 || height <= 0.0 {
        return Err(format!("face box {width}×{height} is empty"));
    }
    Ok(FaceBox { x, y, width, height }.grown(margin))
}
