//! Writing files so that a failure part-way (a full disk, a kill) never
//! leaves one broken: whole-file replacement for checkpoints and other
//! results, whole-row appends for logs and predictions.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` so that `path` holds either its old content or
/// all of `bytes`, whatever happens part-way (a full disk, a kill): the
/// bytes go to a temporary file in the same folder, synced, then renamed
/// over `path`. On failure the temporary file is removed and the error
/// names `path`.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::bad_file(path, "not a file path"))?;
    let temporary = folder.join(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // The rename itself reaches the disk with the folder's entry; a
        // folder that cannot be opened for syncing still holds the file.
        if let Ok(folder) = std::fs::File::open(&folder) {
            let _ = folder.sync_all();
        }
        Ok(())
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        Error::io(path, e)
    })
}

/// A file that grows by whole pieces (rows): an append that fails part-way
/// is cut off again, so the file holds only whole rows, and the error names
/// the file.
#[derive(Debug)]
pub struct RowFile {
    file: std::fs::File,
    path: PathBuf,
    /// Bytes of whole rows in the file.
    length: u64,
}

impl RowFile {
    /// A new, empty file at `path` (an existing one is emptied).
    pub fn create(path: &Path) -> Result<Self> {
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(RowFile {
            file,
            path: path.to_path_buf(),
            length: 0,
        })
    }

    /// The file at `path`, created if absent, to be appended to.
    pub fn append_to(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let length = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(RowFile {
            file,
            path: path.to_path_buf(),
            length,
        })
    }

    /// Appends `rows` in one write; on failure the file is cut back to the
    /// length it had before.
    pub fn append(&mut self, rows: &[u8]) -> Result<()> {
        match self.file.write_all(rows) {
            Ok(()) => {
                self.length += rows.len() as u64;
                Ok(())
            }
            Err(error) => {
                let _ = self.file.set_len(self.length);
                Err(Error::io(&self.path, error))
            }
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of whole rows in the file.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Whether the file holds no row.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }
}
