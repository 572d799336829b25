//! AFEW-VA: clip folders `001`–`600`, each with frames and `NNN.json`.

use std::path::Path;

use super::{find_image, read_annotation_file, sorted_entries};
use crate::sample::{DataError, Dataset, IndexBuilder, Sample};

/// Loads every clip folder under `root`. Integer valence and arousal in
/// [-10, 10] are divided by 10; frames outside that range are excluded and
/// counted. The clip's `actor` is the subject. JSON files have no useful line
/// numbers, so problems name the clip file and the frame.
pub fn load_afew_va(root: &Path) -> Result<Dataset, DataError> {
    let mut index = IndexBuilder::new(root, format!("AFEW-VA {}", root.display()));
    for clip in sorted_entries(root)? {
        let Some(name) = clip.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if !clip.is_dir() || !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let json_path = clip.join(format!("{name}.json"));
        let text = match read_annotation_file(&json_path) {
            Ok(text) => text,
            Err(e) => {
                index.row();
                index.problem(&json_path, 0, format!("cannot read the clip's annotation file: {e}"));
                continue;
            }
        };
        let json: serde_json::Value = match serde_json::from_str(&text) {
            Ok(json) => json,
            Err(e) => {
                index.row();
                index.problem(&json_path, e.line(), format!("not valid JSON: {e}"));
                continue;
            }
        };
        let Some(actor) = json.get("actor").and_then(|a| a.as_str()) else {
            index.row();
            index.problem(&json_path, 0, "no `actor` string");
            continue;
        };
        let Some(frames) = json.get("frames").and_then(|f| f.as_object()) else {
            index.row();
            index.problem(&json_path, 0, "no `frames` object");
            continue;
        };
        let mut keys: Vec<&String> = frames.keys().collect();
        keys.sort();
        for key in keys {
            index.row();
            let frame = &frames[key.as_str()];
            let value = |axis: &str| frame.get(axis).and_then(|v| v.as_f64());
            let (Some(valence), Some(arousal)) = (value("valence"), value("arousal")) else {
                index.problem(
                    &json_path,
                    0,
                    format!("frame {key}: valence and arousal must be numbers"),
                );
                continue;
            };
            if !(-10.0..=10.0).contains(&valence) || !(-10.0..=10.0).contains(&arousal) {
                index.exclude("valence or arousal outside [-10, 10]");
                continue;
            }
            let Some(path) = find_image(&clip, key, &["png", "jpg", "jpeg"]) else {
                index.problem(
                    &json_path,
                    0,
                    format!("frame {key}: no image {key}.png in {}", clip.display()),
                );
                continue;
            };
            let sample = Sample {
                path,
                valence: (valence / 10.0) as f32,
                arousal: (arousal / 10.0) as f32,
                subject: actor.to_string(),
                face: None,
            };
            index.keep(sample);
        }
    }
    index.finish()
}
