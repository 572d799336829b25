//! Repository hygiene that a reader relies on: the repository stands on its
//! own, so no file sends the reader to a file outside it.

use std::path::{Path, PathBuf};

/// Folders that hold build output, run output or generated data.
const SKIPPED: [&str; 5] = [".git", "target", "runs", "generated", "__pycache__"];

fn text_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if !SKIPPED.contains(&name.as_str()) && !name.starts_with(".venv") {
                text_files(&path, found);
            }
        } else if ["rs", "md", "toml", "py", "sh"]
            .iter()
            .any(|ext| name.ends_with(&format!(".{ext}")))
            || name == "run"
        {
            found.push(path);
        }
    }
}

#[test]
fn no_file_refers_to_documents_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    text_files(&root, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    // Spelt in pieces so that this file does not match itself.
    let outside = [["..", "/shared"].concat(), ["DESIGN", ".md"].concat()];
    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (number, line) in text.lines().enumerate() {
            if outside.iter().any(|pattern| line.contains(pattern.as_str())) {
                offenders.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "references outside the repository:\n{}",
        offenders.join("\n")
    );
}
