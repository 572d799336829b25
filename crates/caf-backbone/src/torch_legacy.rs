//! PyTorch's legacy file format (before 1.6, and `torch.save(...,
//! _use_new_zipfile_serialization=False)`): five pickles, then the storages'
//! bytes. The pickles are the magic number, the format version (1001), the
//! system's byte order and type sizes, the saved object (tensors refer to
//! their storages by persistent id), and the list of storage keys; then, for
//! each key in that order, its element count (8 bytes) and raw data. Read
//! without running code ([`crate::pickle`]).

use std::collections::HashMap;
use std::io::BufReader;
use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::pickle::{read_array, read_exact, read_pickle, Budget, Value};
use crate::torch_state::{gather_all, state_dict_views};

/// The first pickle of every legacy file: `0x1950a86a20f9469cfc6c` as LONG1.
pub(crate) const MAGIC: [u8; 15] = *b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
const FORMAT_VERSION: i64 = 1001;

/// Every tensor of the state dict in a legacy-format file, on the CPU in its saved dtype.
pub(crate) fn read_legacy_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bad = |message: String| Error::bad_file(path, format!("legacy PyTorch file: {message}"));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let length = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut reader = BufReader::new(file);
    let mut budget = Budget { left: length };
    if read_array::<{ MAGIC.len() }, _>(&mut reader, &mut budget, "magic number").ok() != Some(MAGIC) {
        return Err(bad("wrong magic number (not a file torch.save wrote)".into()));
    }
    let mut next = |what: &str| read_pickle(&mut reader, &mut budget).map_err(|e| bad(format!("{what}: {e}")));
    let version = next("format version")?;
    if version.as_int() != Some(FORMAT_VERSION) {
        return Err(bad(format!(
            "format version {}, expected {FORMAT_VERSION}",
            version.kind()
        )));
    }
    if let Value::Dict(info) = next("system info")? {
        let big_endian = info
            .items()
            .iter()
            .any(|(k, v)| k.as_str() == Some("little_endian") && matches!(v, Value::Bool(false)));
        if big_endian {
            return Err(bad(
                "saved on a big-endian machine; re-save it on a little-endian one".into()
            ));
        }
    }
    let object = next("saved object")?;
    let Value::List(keys) = next("storage keys")? else {
        return Err(bad("the storage keys are not a list".into()));
    };
    let keys: Vec<String> = keys
        .items()
        .iter()
        .map(|k| {
            k.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("a storage key that is not a string".into()))
        })
        .collect::<Result<_>>()?;
    let (views, storages) = state_dict_views(&object).map_err(bad)?;
    let mut data: HashMap<String, Vec<u8>> = HashMap::new();
    for key in &keys {
        let count = u64::from_le_bytes(
            read_array(&mut reader, &mut budget, "element count").map_err(|e| bad(format!("storage {key}: {e}")))?,
        );
        let Some(storage) = storages.get(key) else {
            return Err(bad(format!(
                "storage {key} is listed but no tensor of the state dict uses it"
            )));
        };
        if count != storage.elements {
            return Err(bad(format!(
                "storage {key} holds {count} elements where its tensors say {}",
                storage.elements
            )));
        }
        let bytes = count.checked_mul(storage.dtype.size_in_bytes() as u64).ok_or_else(|| {
            bad(format!(
                "storage {key} of {count} elements runs past the end of the file"
            ))
        })?;
        let buffer = read_exact(&mut reader, &mut budget, bytes, "storage data")
            .map_err(|e| bad(format!("storage {key}: {e}")))?;
        data.insert(key.clone(), buffer);
    }
    gather_all(views, &data).map_err(bad)
}
