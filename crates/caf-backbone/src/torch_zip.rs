//! PyTorch's zip format (`torch.save` since 1.6): an archive holding
//! `<name>/data.pkl`, the saved object's pickle, and `<name>/data/<key>`,
//! each storage's raw little-endian bytes, every entry stored uncompressed.
//! The pickle is read by [`crate::pickle`], which runs no code, and every
//! length is checked against the bytes the archive holds.

use std::collections::HashMap;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use candle_core::Tensor;
use zip::{CompressionMethod, ZipArchive};

use crate::error::{Error, Result};
use crate::pickle::{read_exact, read_pickle, Budget};
use crate::torch_state::{gather_all, state_dict_views};

/// Every tensor of the state dict in a zip-format file, on the CPU in its saved dtype.
pub(crate) fn read_zip_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bad = |message: String| Error::bad_file(path, format!("PyTorch zip file: {message}"));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let length = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut archive =
        ZipArchive::new(BufReader::new(file)).map_err(|e| bad(format!("not a readable zip archive: {e}")))?;
    let pickle_name = archive
        .file_names()
        .filter_map(|name| name.ok())
        .find(|name| name.ends_with("/data.pkl") || name == "data.pkl")
        .map(|name| name.into_owned())
        .ok_or_else(|| bad("no data.pkl in the archive (not a file torch.save wrote)".into()))?;
    let prefix = &pickle_name[..pickle_name.len() - "data.pkl".len()];
    if let Some(order) = read_entry(&mut archive, &format!("{prefix}byteorder"), length, 16).map_err(bad)? {
        if order != b"little" {
            return Err(bad(format!(
                "byte order `{}`; re-save it on a little-endian machine",
                String::from_utf8_lossy(&order)
            )));
        }
    }
    let object = {
        let entry = stored_entry(&mut archive, &pickle_name, length).map_err(bad)?;
        let mut budget = Budget { left: entry.size() };
        read_pickle(&mut BufReader::new(entry), &mut budget).map_err(|e| bad(format!("data.pkl: {e}")))?
    };
    let (views, storages) = state_dict_views(&object).map_err(bad)?;
    let mut data: HashMap<String, Vec<u8>> = HashMap::new();
    for (key, storage) in &storages {
        let name = format!("{prefix}data/{key}");
        let expected = storage
            .elements
            .checked_mul(storage.dtype.size_in_bytes() as u64)
            .filter(|&bytes| bytes <= length)
            .ok_or_else(|| {
                bad(format!(
                    "storage {key} of {} elements is larger than the file",
                    storage.elements
                ))
            })?;
        let bytes = read_entry(&mut archive, &name, length, expected)
            .map_err(bad)?
            .ok_or_else(|| bad(format!("storage {key}: no entry {name} in the archive")))?;
        if bytes.len() as u64 != expected {
            return Err(bad(format!(
                "storage {key}: {name} holds {} bytes where its tensors need {expected}",
                bytes.len()
            )));
        }
        data.insert(key.clone(), bytes);
    }
    gather_all(views, &data).map_err(bad)
}

/// The entry `name`, refused when compressed (`torch.save` stores entries
/// as they are) or when it claims more bytes than the archive's `length`.
fn stored_entry<'a, R: Read + Seek>(
    archive: &'a mut ZipArchive<R>,
    name: &str,
    length: u64,
) -> std::result::Result<zip::read::ZipFile<'a, R>, String> {
    let entry = archive.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    if entry.compression() != CompressionMethod::Stored {
        return Err(format!(
            "{name} is compressed ({}); torch.save stores entries uncompressed: re-save the file with torch.save",
            entry.compression()
        ));
    }
    if entry.size() > length || entry.compressed_size() != entry.size() {
        return Err(format!(
            "{name} claims {} bytes in an archive of {length}",
            entry.size()
        ));
    }
    Ok(entry)
}

/// The bytes of entry `name`, if the archive has it, when it holds at most
/// `most` bytes.
fn read_entry<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    name: &str,
    length: u64,
    most: u64,
) -> std::result::Result<Option<Vec<u8>>, String> {
    if archive.index_for_name(name).is_none() {
        return Ok(None);
    }
    let entry = stored_entry(archive, name, length)?;
    if entry.size() > most {
        return Err(format!(
            "{name} holds {} bytes, more than the {most} expected",
            entry.size()
        ));
    }
    let mut budget = Budget { left: entry.size() };
    let size = entry.size();
    read_exact(&mut BufReader::new(entry), &mut budget, size, name).map(Some)
}
