//! Aff-Wild2 in the ABAW layout: `<video>.txt` per video, frames per video.

use std::path::Path;

use super::{find_image, read_annotation_file, sorted_entries};
use crate::sample::{parse_value, DataError, Dataset, IndexBuilder, Sample};

/// Loads every `<video>.txt` in `annotations` (header `valence,arousal`, then
/// one line per frame); line `k + 1` labels frame `k`, the image
/// `frames/<video>/{k:05}.jpg` (or `.png`), counting from 1 as ABAW's cropped
/// frames do. Frames marked `-5` and frames without an image (ABAW drops
/// frames where no face was found) are excluded and counted. The subject is
/// the video name without its `_left` / `_right` suffix.
pub fn load_aff_wild2(annotations: &Path, frames: &Path) -> Result<Dataset, DataError> {
    let mut index = IndexBuilder::new(annotations, format!("Aff-Wild2 {}", annotations.display()));
    for file in sorted_entries(annotations)? {
        if file.extension().and_then(|e| e.to_str()) != Some("txt") {
            continue;
        }
        let Some(video) = file.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
            continue;
        };
        let subject = video
            .strip_suffix("_left")
            .or_else(|| video.strip_suffix("_right"))
            .unwrap_or(&video)
            .to_string();
        let text = read_annotation_file(&file).map_err(|e| DataError::io(&file, e))?;
        let mut lines = text.lines();
        match lines.next().map(|h| h.trim().to_ascii_lowercase().replace(' ', "")) {
            Some(header) if header == "valence,arousal" => {}
            other => {
                index.row();
                index.problem(
                    &file,
                    1,
                    format!(
                        "expected the header `valence,arousal`, found `{}`",
                        other.unwrap_or_default()
                    ),
                );
                continue;
            }
        }
        let video_frames = frames.join(&video);
        for (offset, line) in lines.enumerate() {
            let (line_number, frame) = (offset + 2, offset + 1);
            if line.trim().is_empty() {
                continue;
            }
            index.row();
            let mut fields = line.split(',');
            let (Some(v), Some(a), None) = (fields.next(), fields.next(), fields.next()) else {
                index.problem(
                    &file,
                    line_number,
                    format!("expected `valence,arousal`, found `{line}`"),
                );
                continue;
            };
            let (valence, arousal) = match (parse_value(v, "valence"), parse_value(a, "arousal")) {
                (Ok(v), Ok(a)) => (v, a),
                (Err(message), _) | (_, Err(message)) => {
                    index.problem(&file, line_number, message);
                    continue;
                }
            };
            if valence == -5.0 || arousal == -5.0 {
                index.exclude("frame marked -5 (invalid)");
                continue;
            }
            if !(-1.0..=1.0).contains(&valence) || !(-1.0..=1.0).contains(&arousal) {
                index.problem(
                    &file,
                    line_number,
                    format!("valence {valence} / arousal {arousal} outside [-1, 1]"),
                );
                continue;
            }
            let Some(path) = find_image(&video_frames, &format!("{frame:05}"), &["jpg", "png", "jpeg"]) else {
                index.exclude("no frame image (no face detected)");
                continue;
            };
            index.keep(Sample {
                path,
                valence,
                arousal,
                subject: subject.clone(),
                face: None,
            });
        }
    }
    index.finish()
}
