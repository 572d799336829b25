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

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::pickle::{read_array, read_exact, read_pickle, Budget, Value};

/// The first pickle of every legacy file: `0x1950a86a20f9469cfc6c` as LONG1.
pub(crate) const MAGIC: [u8; 15] = *b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
const FORMAT_VERSION: i64 = 1001;

/// A storage the object refers to: its element type and count.
#[derive(Debug, Clone, Copy)]
struct StorageRef {
    dtype: DType,
    elements: u64,
}

fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "ByteStorage" => DType::U8,
        _ => return None,
    })
}

/// `('storage', torch.XStorage, key, location, elements, view)` → key and reference.
fn storage_ref(id: &Value) -> std::result::Result<(String, StorageRef), String> {
    let Value::Tuple(parts) = id else {
        return Err("a persistent id that is not a tuple".into());
    };
    if parts.len() < 5 || parts[0].as_str() != Some("storage") {
        return Err("a persistent id that is not a storage".into());
    }
    let class = match &parts[1] {
        Value::Global(module, name) if &**module == "torch" => name.to_string(),
        _ => return Err("a storage without a torch storage type".into()),
    };
    let dtype = storage_dtype(&class).ok_or_else(|| {
        format!("storage type torch.{class} is not supported (float, double, half, bfloat16, long, byte are)")
    })?;
    let key = parts[2]
        .as_str()
        .ok_or("a storage key that is not a string")?
        .to_string();
    let elements = parts[4]
        .as_int()
        .filter(|n| *n >= 0)
        .ok_or("a storage size that is not a count")? as u64;
    Ok((key, StorageRef { dtype, elements }))
}

/// A tensor of the saved object: its storage and how it views it.
struct TensorRef {
    key: String,
    storage: StorageRef,
    offset: u64,
    size: Vec<usize>,
    stride: Vec<u64>,
}

fn ints(value: &Value, what: &str) -> std::result::Result<Vec<i64>, String> {
    match value {
        Value::Tuple(items) => items
            .iter()
            .map(|v| {
                v.as_int()
                    .ok_or_else(|| format!("a {what} that is not a tuple of integers"))
            })
            .collect(),
        _ => Err(format!("a {what} that is not a tuple")),
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, …)`, also inside
/// `_rebuild_parameter`; `None` for a value that is not a tensor.
fn tensor_ref(value: &Value) -> std::result::Result<Option<TensorRef>, String> {
    let Value::Call(callable, args) = value else {
        return Ok(None);
    };
    let Value::Tuple(args) = &**args else { return Ok(None) };
    if callable.is_global("torch._utils", "_rebuild_parameter") {
        return match args.first() {
            Some(inner) => tensor_ref(inner),
            None => Err("_rebuild_parameter without a tensor".into()),
        };
    }
    if !callable.is_global("torch._utils", "_rebuild_tensor_v2")
        && !callable.is_global("torch._utils", "_rebuild_tensor")
    {
        return Ok(None);
    }
    if args.len() < 4 {
        return Err("_rebuild_tensor_v2 with fewer than 4 arguments".into());
    }
    let Value::Persistent(id) = &args[0] else {
        return Err("a tensor whose storage is not a persistent id".into());
    };
    let (key, storage) = storage_ref(id)?;
    let offset = args[1]
        .as_int()
        .filter(|o| *o >= 0)
        .ok_or("a storage offset that is not a count")? as u64;
    let size = ints(&args[2], "size")?;
    let stride = ints(&args[3], "stride")?;
    if size.len() != stride.len() || size.iter().chain(&stride).any(|v| *v < 0) {
        return Err(format!("size {size:?} and stride {stride:?} do not describe a view"));
    }
    Ok(Some(TensorRef {
        key,
        storage,
        offset,
        size: size.iter().map(|&s| s as usize).collect(),
        stride: stride.iter().map(|&s| s as u64).collect(),
    }))
}

/// The state dict inside the saved object: the object itself, or its
/// `state_dict` / `model` entry.
fn state_dict(object: &Value) -> Option<Vec<(String, Value)>> {
    let Value::Dict(dict) = object else { return None };
    let entries: Vec<(String, Value)> = dict
        .borrow()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone())))
        .collect();
    let has_tensor = entries.iter().any(|(_, v)| matches!(tensor_ref(v), Ok(Some(_))));
    if has_tensor {
        return Some(entries);
    }
    ["state_dict", "model"]
        .iter()
        .find_map(|key| entries.iter().find(|(k, _)| k == key).and_then(|(_, v)| state_dict(v)))
}

/// The tensor `view` of a storage's bytes, copied out contiguous.
fn gather(view: &TensorRef, data: &[u8]) -> std::result::Result<Tensor, String> {
    let width = view.storage.dtype.size_in_bytes() as u64;
    let count: usize = view.size.iter().product();
    if count > 0 {
        let last = view.offset
            + view
                .size
                .iter()
                .zip(&view.stride)
                .map(|(&n, &s)| (n as u64 - 1).saturating_mul(s))
                .fold(0u64, u64::saturating_add);
        if last >= view.storage.elements {
            return Err(format!(
                "the view reaches element {last} of a storage of {}",
                view.storage.elements
            ));
        }
    }
    let mut bytes = Vec::with_capacity(count * width as usize);
    let mut index = vec![0usize; view.size.len()];
    for _ in 0..count {
        let element = view.offset + index.iter().zip(&view.stride).map(|(&i, &s)| i as u64 * s).sum::<u64>();
        let start = (element * width) as usize;
        bytes.extend_from_slice(&data[start..start + width as usize]);
        for axis in (0..index.len()).rev() {
            index[axis] += 1;
            if index[axis] < view.size[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Tensor::from_raw_buffer(&bytes, view.storage.dtype, &view.size, &Device::Cpu).map_err(|e| e.to_string())
}

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
        return Err(bad(format!("format version {version:?}, expected {FORMAT_VERSION}")));
    }
    if let Value::Dict(info) = next("system info")? {
        let big_endian = info
            .borrow()
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
        .borrow()
        .iter()
        .map(|k| {
            k.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("a storage key that is not a string".into()))
        })
        .collect::<Result<_>>()?;
    let entries = state_dict(&object).ok_or_else(|| bad("no state dict of tensors in the saved object".into()))?;
    let mut views = Vec::new();
    let mut storages: HashMap<String, StorageRef> = HashMap::new();
    for (name, value) in &entries {
        if let Some(view) = tensor_ref(value).map_err(|e| bad(format!("tensor {name}: {e}")))? {
            storages.insert(view.key.clone(), view.storage);
            views.push((name.clone(), view));
        }
    }
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
    views
        .into_iter()
        .map(|(name, view)| {
            let bytes = data
                .get(&view.key)
                .ok_or_else(|| bad(format!("tensor {name}: its storage {} is not in the file", view.key)))?;
            let tensor = gather(&view, bytes).map_err(|e| bad(format!("tensor {name}: {e}")))?;
            Ok((name, tensor))
        })
        .collect()
}
