//! A Hugging Face Hub cache built on disk, so that loading from `hf://` is
//! tested with no network.

use std::path::Path;

use anyhow::Result;

/// The commit every cached file is filed under.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Writes `bytes` as `file` of `repo` into `cache`, in hf-hub's layout:
/// `<cache>/models--owner--name/{refs/main, blobs/<etag>, snapshots/<commit>/<file>}`,
/// the snapshot entry a relative symlink to the blob, as hf-hub and the
/// Python client write it.
pub fn write_cache(cache: &Path, repo: &str, file: &str, bytes: &[u8]) -> Result<()> {
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(repo_dir.join("refs"))?;
    std::fs::create_dir_all(repo_dir.join("blobs"))?;
    std::fs::create_dir_all(repo_dir.join("snapshots").join(COMMIT))?;
    std::fs::write(repo_dir.join("refs/main"), COMMIT)?;
    let etag = format!("{:064x}", file.len() as u64 * 0x9e37_79b9 + bytes.len() as u64);
    std::fs::write(repo_dir.join("blobs").join(&etag), bytes)?;
    std::os::unix::fs::symlink(
        format!("../../blobs/{etag}"),
        repo_dir.join("snapshots").join(COMMIT).join(file),
    )?;
    Ok(())
}
