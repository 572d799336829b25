//! Which image files a list of paths names: files as given, and the image
//! files under folders, in sorted order, within a bounded depth and without
//! visiting a folder twice (a symbolic link back up the tree ends there).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::predictor::InferError;

/// Extensions (lower case) of the files a folder's images are found by.
pub const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"];

/// How many folders deep a search goes below a folder given.
pub const MAX_FOLDER_DEPTH: usize = 32;

/// Files as given (always kept, so a wrong one gets its own error when it
/// is read) and the image files under each folder, each folder's entries
/// sorted. A folder holding no image, one that cannot be listed, or one
/// nested deeper than [`MAX_FOLDER_DEPTH`] is an error naming it.
pub fn find_images(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InferError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let before = files.len();
            let mut visited = HashSet::new();
            walk(path, 0, &mut visited, &mut files)?;
            if files.len() == before {
                return Err(InferError::NoImages { folder: path.clone() });
            }
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn walk(dir: &Path, depth: usize, visited: &mut HashSet<PathBuf>, files: &mut Vec<PathBuf>) -> Result<(), InferError> {
    let unlistable = |error: std::io::Error| InferError::Folder {
        folder: dir.to_path_buf(),
        message: format!("cannot list it: {error}"),
    };
    if depth > MAX_FOLDER_DEPTH {
        return Err(InferError::Folder {
            folder: dir.to_path_buf(),
            message: format!(
                "more than {MAX_FOLDER_DEPTH} folders below the one given; give a folder nearer the images"
            ),
        });
    }
    if !visited.insert(dir.canonicalize().map_err(unlistable)?) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(unlistable)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(unlistable)?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            walk(&entry, depth + 1, visited, files)?;
        } else if is_image(&entry) {
            files.push(entry);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_searched_sorted_and_a_link_back_up_ends_the_search() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("photos");
        std::fs::create_dir_all(root.join("b/inner")).expect("dirs");
        for name in ["b/inner/z.JPG", "b/a.png", "c.webp", "notes.txt"] {
            std::fs::write(root.join(name), b"").expect("file");
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(&root, root.join("b/inner/loop")).expect("link");
        let given = dir.path().join("missing.png");
        let found = find_images(&[root.clone(), given.clone()]).expect("search");
        assert_eq!(
            found,
            [
                root.join("b/a.png"),
                root.join("b/inner/z.JPG"),
                root.join("c.webp"),
                given
            ]
        );
    }

    #[test]
    fn an_empty_or_too_deep_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("notes.txt"), b"").expect("file");
        let error = find_images(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(
            matches!(&error, InferError::NoImages { folder } if folder == dir.path()),
            "{error}"
        );
        assert!(error.to_string().contains("holds no image (.jpg, .jpeg"), "{error}");

        let mut deep = dir.path().join("deep");
        for level in 0..=MAX_FOLDER_DEPTH + 1 {
            deep = deep.join(level.to_string());
        }
        std::fs::create_dir_all(&deep).expect("dirs");
        std::fs::write(deep.join("a.png"), b"").expect("file");
        let message = find_images(&[dir.path().join("deep")]).unwrap_err().to_string();
        assert!(message.contains("more than 32 folders below"), "{message}");
    }
}
