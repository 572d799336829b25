//! Face boxes for images outside a training index (prediction): a CSV of
//! `path,x,y,width,height`, or an AffectNet index (`subDirectory_filePath,
//! face_x, face_y, face_width, face_height, …`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::affectnet::parse_box;
use super::{csv_reader, is_fatal};
use crate::sample::{DataError, FaceBox, RowProblem, SHOWN_PROBLEMS};

/// Face boxes by relative path; an image matches the entry whose path its
/// own path ends with (component by component).
#[derive(Debug, Clone, Default)]
pub struct FaceBoxes {
    boxes: HashMap<PathBuf, FaceBox>,
}

impl FaceBoxes {
    /// Reads `csv`, growing every box by `margin` of its size on each side.
    /// Any unusable row is an error listing the first ones with line numbers.
    pub fn load(csv: &Path, margin: f32) -> Result<Self, DataError> {
        let mut rows = csv_reader(csv)?.into_records();
        let header = match rows.next() {
            Some(Ok(header)) => header,
            Some(Err(e)) => return Err(DataError::Invalid(format!("{}: line 1: {e}", csv.display()))),
            None => return Err(DataError::Invalid(format!("{}: the file is empty", csv.display()))),
        };
        let columns: Vec<&str> = header.iter().collect();
        let wanted: [&str; 5] = match columns.first() {
            Some(&"subDirectory_filePath") => {
                ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height"]
            }
            _ => ["path", "x", "y", "width", "height"],
        };
        let mut index = [0usize; 5];
        for (slot, name) in index.iter_mut().zip(wanted) {
            *slot = columns.iter().position(|c| *c == name).ok_or_else(|| {
                DataError::Invalid(format!(
                    "{}: no `{name}` column; face boxes need `path,x,y,width,height` or an AffectNet index",
                    csv.display()
                ))
            })?;
        }
        let (mut boxes, mut problems, mut count) = (HashMap::new(), Vec::new(), 0);
        for (row, record) in rows.enumerate() {
            let line = row + 2;
            let fatal = record.as_ref().err().is_some_and(is_fatal);
            let parsed = record.map_err(|e| e.to_string()).and_then(|record| {
                let field = |i: usize| record.get(index[i]).unwrap_or("");
                let face = parse_box(&[field(1), field(2), field(3), field(4)], margin)?;
                match field(0) {
                    "" => Err("empty path".to_string()),
                    path => Ok((PathBuf::from(path), face)),
                }
            });
            match parsed {
                Ok((path, face)) => {
                    boxes.insert(path, face);
                }
                Err(message) => {
                    count += 1;
                    if problems.len() < SHOWN_PROBLEMS {
                        problems.push(RowProblem {
                            file: csv.to_path_buf(),
                            line,
                            message,
                        });
                    }
                    if fatal {
                        break;
                    }
                }
            }
        }
        if count > 0 {
            return Err(DataError::BadRows {
                file: csv.to_path_buf(),
                rows: boxes.len() + count,
                count,
                first: problems,
            });
        }
        Ok(Self { boxes })
    }

    /// The box of `image`: the entry matching its longest path suffix.
    pub fn get(&self, image: &Path) -> Option<FaceBox> {
        let components: Vec<_> = image.components().collect();
        (0..components.len()).find_map(|start| {
            let suffix: PathBuf = components[start..].iter().collect();
            self.boxes.get(&suffix).copied()
        })
    }

    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_layouts_and_matches_by_path_suffix() {
        let dir = tempfile::tempdir().expect("dir");
        let generic = dir.path().join("boxes.csv");
        std::fs::write(&generic, "path,x,y,width,height\nfaces/a.jpg,10,20,30,40\n").expect("write");
        let boxes = FaceBoxes::load(&generic, 0.0).expect("load");
        let face = boxes.get(Path::new("/data/faces/a.jpg")).expect("matched");
        assert_eq!((face.x, face.y, face.width, face.height), (10.0, 20.0, 30.0, 40.0));
        assert!(boxes.get(Path::new("/data/other/a.jpg")).is_none());

        let affectnet = dir.path().join("training.csv");
        std::fs::write(
            &affectnet,
            "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n\
             689/x.jpg,10,10,100,100,\"1;2\",1,0.5,0.2\n",
        )
        .expect("write");
        let boxes = FaceBoxes::load(&affectnet, 0.1).expect("load");
        let face = boxes.get(Path::new("images/689/x.jpg")).expect("matched");
        assert!(face.x.abs() < 1e-4 && (face.width - 120.0).abs() < 1e-4, "{face:?}");
    }

    #[test]
    fn bad_rows_and_headers_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("boxes.csv");
        std::fs::write(&file, "path,x,y,width,height\na.jpg,1,2,0,4\nb.jpg,1,2,x,4\n").expect("write");
        let message = FaceBoxes::load(&file, 0.0).expect_err("bad rows").to_string();
        assert!(
            message.contains("2 unusable row(s)") && message.contains(":2") && message.contains(":3"),
            "{message}"
        );
        std::fs::write(&file, "file,x,y\n").expect("write");
        let message = FaceBoxes::load(&file, 0.0).expect_err("bad header").to_string();
        assert!(message.contains("no `path` column"), "{message}");
    }
}
