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

/// The top-level folders whose files the docs and comments name by path.
const TRACKED_ROOTS: [&str; 9] = [
    "docs/",
    "datasets/",
    "configs/",
    "bench/",
    "crates/",
    "xtask/",
    "tests/",
    "fuzz/",
    ".ci/",
];

/// The extensions of the files such a path may name.
const NAMED_EXTENSIONS: [&str; 9] = [".md", ".rs", ".toml", ".json", ".sh", ".py", ".cu", ".txt", ".csv"];

/// Every repository path in `line`: a tracked root, then path characters, ending in a named extension.
fn repository_paths(line: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "/._-".contains(c);
    let mut paths = Vec::new();
    for (start, _) in line.char_indices() {
        let rest = &line[start..];
        let preceded_by_path = line[..start].chars().next_back().is_some_and(is_path_char);
        if preceded_by_path || !TRACKED_ROOTS.iter().any(|root| rest.starts_with(root)) {
            continue;
        }
        let end = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
        let candidate = rest[..end].trim_end_matches('.');
        if NAMED_EXTENSIONS.iter().any(|ext| candidate.ends_with(ext)) && !candidate.contains("generated/") {
            paths.push(candidate.to_string());
        }
    }
    paths
}

/// Relative Markdown link targets in `line` (`[text](target)`), without their anchor.
fn markdown_links(line: &str) -> Vec<String> {
    line.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &line[at + 2..];
            let target = &rest[..rest.find(')')?];
            let file = target.split('#').next().unwrap_or_default();
            let external = target.contains("://") || target.starts_with("mailto:");
            (!external && !file.is_empty()).then(|| file.to_string())
        })
        .collect()
}

#[test]
fn every_file_the_docs_and_comments_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    text_files(&root, &mut files);
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let is_markdown = file.extension().is_some_and(|ext| ext == "md");
        for (number, line) in text.lines().enumerate() {
            let mut targets: Vec<PathBuf> = repository_paths(line).iter().map(|p| root.join(p)).collect();
            if is_markdown {
                let folder = file.parent().expect("a file's folder");
                targets.extend(markdown_links(line).iter().map(|link| folder.join(link)));
            }
            for target in targets {
                checked += 1;
                if !target.exists() {
                    missing.push(format!(
                        "{}:{}: {}",
                        file.strip_prefix(&root).unwrap_or(file).display(),
                        number + 1,
                        target.strip_prefix(&root).unwrap_or(&target).display()
                    ));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} paths found: is the scan broken?");
    assert!(missing.is_empty(), "named but missing:\n{}", missing.join("\n"));
}

#[test]
fn paths_and_links_are_found_where_they_are() {
    assert_eq!(
        repository_paths("see docs/method.md, \"Splits\"; and `crates/caf-data/src/lib.rs` 12–20."),
        ["docs/method.md", "crates/caf-data/src/lib.rs"]
    );
    assert!(repository_paths("runs/caf/docs/x.md datasets/generated/a.csv docs/ folder").is_empty());
    assert_eq!(
        markdown_links("[a](../docs/gpu.md#cuda) [b](https://x.org/y.md) [c](#here)"),
        ["../docs/gpu.md"]
    );
}
