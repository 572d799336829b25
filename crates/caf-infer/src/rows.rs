//! The rows `predict` writes: one per face of a photo, one for a photo
//! where no face was found, one for a photo that failed; as CSV or as JSON
//! lines. [`FacePrediction`]'s JSON is the same object a row holds, without
//! the path.

use std::io::Write;
use std::path::Path;

use serde::ser::{Serialize, Serializer};
use serde_json::json;

use crate::photo::FacePrediction;

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFormat {
    /// A header, then [`CSV_HEADER`]'s columns.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// The columns of a CSV row.
pub const CSV_HEADER: &str = "path,face,x,y,width,height,score,source,valence,arousal,intensity,quadrant,emotion,error";

/// The `source` of a photo in which `detect` found no face.
pub const NO_FACE: &str = "no-face-found";

/// What one row says about a photo.
#[derive(Debug, Clone, Copy)]
pub enum PhotoRow<'a> {
    Face(&'a FacePrediction),
    /// The face search found no face (and was not asked to fall back to the whole photo).
    NoFace,
    /// The photo could not be read or predicted; the message says why.
    Failed(&'a str),
}

/// The JSON fields of one face.
#[derive(serde::Serialize)]
struct FaceFields {
    face: usize,
    #[serde(rename = "box")]
    bounds: BoxFields,
    score: Option<f32>,
    landmarks: Option<[[f32; 2]; 5]>,
    source: &'static str,
    valence: f32,
    arousal: f32,
    intensity: f32,
    quadrant: &'static str,
    emotion: &'static str,
}

#[derive(serde::Serialize)]
struct BoxFields {
    x: f32,
    y: f32,
    width: f32,
    height: f32,
}

impl Serialize for FacePrediction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let b = self.face;
        FaceFields {
            face: self.index,
            bounds: BoxFields {
                x: b.x,
                y: b.y,
                width: b.width,
                height: b.height,
            },
            score: self.score,
            landmarks: self.landmarks,
            source: self.origin.name(),
            valence: self.va.valence,
            arousal: self.va.arousal,
            intensity: self.va.intensity(),
            quadrant: self.va.quadrant().name(),
            emotion: self.va.emotion(),
        }
        .serialize(serializer)
    }
}

impl RowFormat {
    /// The formats' names, in the order of the variants.
    pub const NAMES: [&'static str; 2] = ["csv", "jsonl"];

    pub fn name(self) -> &'static str {
        match self {
            RowFormat::Csv => Self::NAMES[0],
            RowFormat::Jsonl => Self::NAMES[1],
        }
    }
    /// Appends what the output starts with to `out`: the CSV header line, or nothing.
    pub fn write_header(self, out: &mut Vec<u8>) {
        if self == RowFormat::Csv {
            out.extend_from_slice(CSV_HEADER.as_bytes());
            out.push(b'\n');
        }
    }

    /// Appends the row `row` of the photo at `path` to `out`, with its line break.
    pub fn write(self, out: &mut Vec<u8>, path: &Path, row: PhotoRow) {
        let shown = path.display().to_string();
        // Writing into a Vec cannot fail.
        let _ = match (self, row) {
            (RowFormat::Csv, PhotoRow::Face(face)) => {
                let (b, va) = (face.face, face.va);
                writeln!(
                    out,
                    "{},{},{:.2},{:.2},{:.2},{:.2},{},{},{:.6},{:.6},{:.6},{},{},",
                    csv_field(&shown),
                    face.index,
                    b.x,
                    b.y,
                    b.width,
                    b.height,
                    face.score.map(|s| format!("{s:.6}")).unwrap_or_default(),
                    face.origin.name(),
                    va.valence,
                    va.arousal,
                    va.intensity(),
                    va.quadrant().name(),
                    va.emotion()
                )
            }
            (RowFormat::Csv, PhotoRow::NoFace) => writeln!(out, "{},,,,,,,{NO_FACE},,,,,,", csv_field(&shown)),
            (RowFormat::Csv, PhotoRow::Failed(message)) => {
                writeln!(out, "{},,,,,,,,,,,,,{}", csv_field(&shown), csv_field(message))
            }
            (RowFormat::Jsonl, PhotoRow::Face(face)) => {
                // Serialised directly, so every f32 prints in its shortest
                // form, as `serve` answers it.
                let row = JsonFaceRow { path: &shown, face };
                let line = serde_json::to_string(&row).expect("a face is plain numbers and words");
                writeln!(out, "{line}")
            }
            (RowFormat::Jsonl, PhotoRow::NoFace) => writeln!(out, "{}", json!({ "path": shown, "source": NO_FACE })),
            (RowFormat::Jsonl, PhotoRow::Failed(message)) => {
                writeln!(out, "{}", json!({ "path": shown, "error": message }))
            }
        };
    }
}

/// A JSONL row of one face: its photo's path, then the face's fields.
#[derive(serde::Serialize)]
struct JsonFaceRow<'a> {
    path: &'a str,
    #[serde(flatten)]
    face: &'a FacePrediction,
}

impl std::str::FromStr for RowFormat {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        [RowFormat::Csv, RowFormat::Jsonl]
            .into_iter()
            .find(|format| format.name() == name)
            .ok_or_else(|| format!("unknown row format `{name}` (known: {})", Self::NAMES.join(", ")))
    }
}

/// Quotes a CSV field when it holds a comma, a quote or a line break.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use caf_data::FaceBox;

    use super::*;
    use crate::circumplex::Va;
    use crate::photo::FaceOrigin;

    fn face() -> FacePrediction {
        FacePrediction {
            index: 1,
            face: FaceBox {
                x: 10.0,
                y: 20.5,
                width: 30.0,
                height: 40.0,
            },
            score: Some(0.99),
            landmarks: None,
            origin: FaceOrigin::Detected,
            va: Va {
                valence: 0.5,
                arousal: -0.25,
            },
        }
    }

    fn written(format: RowFormat, row: PhotoRow) -> String {
        let mut out = Vec::new();
        format.write(&mut out, Path::new("a, \"b\".jpg"), row);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn every_csv_row_has_the_header_s_columns() {
        let face = face();
        let columns = |line: &str| {
            csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(line.as_bytes())
                .records()
                .next()
                .expect("a row")
                .expect("valid CSV")
                .len()
        };
        let header = CSV_HEADER.split(',').count();
        let mut header_line = Vec::new();
        RowFormat::Csv.write_header(&mut header_line);
        assert_eq!(header_line, format!("{CSV_HEADER}\n").as_bytes());
        for row in [
            PhotoRow::Face(&face),
            PhotoRow::NoFace,
            PhotoRow::Failed("bad, \"file\""),
        ] {
            let line = written(RowFormat::Csv, row);
            assert_eq!(columns(&line), header, "{line}");
        }
        assert_eq!(
            written(RowFormat::Csv, PhotoRow::Face(&face)),
            "\"a, \"\"b\"\".jpg\",1,10.00,20.50,30.00,40.00,0.990000,detected,0.500000,-0.250000,0.559017,positive-low,content,\n"
        );
    }

    #[test]
    fn a_json_row_is_the_face_s_json_with_its_path() {
        let face = face();
        let row: serde_json::Value =
            serde_json::from_str(&written(RowFormat::Jsonl, PhotoRow::Face(&face))).expect("JSON");
        // The face's own JSON (f32 values in their shortest form), with the path.
        let mut expected: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&face).expect("JSON")).expect("JSON");
        expected["path"] = "a, \"b\".jpg".into();
        assert_eq!(row, expected);
        assert_eq!(row["box"]["y"], 20.5);
        assert_eq!(
            (row["source"].as_str(), row["quadrant"].as_str()),
            (Some("detected"), Some("positive-low"))
        );
        let failed: serde_json::Value =
            serde_json::from_str(&written(RowFormat::Jsonl, PhotoRow::Failed("bad"))).expect("JSON");
        assert_eq!(failed, json!({ "path": "a, \"b\".jpg", "error": "bad" }));
        let none: serde_json::Value = serde_json::from_str(&written(RowFormat::Jsonl, PhotoRow::NoFace)).expect("JSON");
        assert_eq!(none, json!({ "path": "a, \"b\".jpg", "source": NO_FACE }));
    }
}
