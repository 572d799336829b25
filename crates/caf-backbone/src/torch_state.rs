//! What both of PyTorch's file formats pickle: a state dict of
//! `_rebuild_tensor_v2(storage, offset, size, stride, …)` calls whose
//! storages are persistent ids, and how a tensor is copied out of its
//! storage's bytes. The formats differ only in where the pickle and the
//! storages' bytes lie ([`crate::torch_legacy`], [`crate::torch_zip`]).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::pickle::Value;

/// A storage the object refers to: its element type and count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StorageRef {
    pub(crate) dtype: DType,
    pub(crate) elements: u64,
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
    let Value::Tuple(parts, _) = id else {
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
pub(crate) struct TensorRef {
    pub(crate) key: String,
    pub(crate) storage: StorageRef,
    offset: u64,
    size: Vec<usize>,
    stride: Vec<u64>,
}

fn ints(value: &Value, what: &str) -> std::result::Result<Vec<i64>, String> {
    match value {
        Value::Tuple(items, _) => items
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
    let Value::Call(call, _) = value else {
        return Ok(None);
    };
    let (callable, args) = &**call;
    let Value::Tuple(args, _) = args else { return Ok(None) };
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
    let Value::Persistent(id, _) = &args[0] else {
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

/// How many `state_dict` / `model` entries deep a state dict is looked for.
const STATE_DICT_NESTING: usize = 4;

/// The state dict inside the saved object: the object itself, or its
/// `state_dict` / `model` entry, up to [`STATE_DICT_NESTING`] levels down.
fn state_dict(object: &Value) -> Option<Vec<(String, Value)>> {
    state_dict_within(object, STATE_DICT_NESTING)
}

fn state_dict_within(object: &Value, levels: usize) -> Option<Vec<(String, Value)>> {
    let Value::Dict(dict) = object else { return None };
    let entries: Vec<(String, Value)> = dict
        .items()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone())))
        .collect();
    let has_tensor = entries.iter().any(|(_, v)| matches!(tensor_ref(v), Ok(Some(_))));
    if has_tensor {
        return Some(entries);
    }
    if levels == 0 {
        return None;
    }
    ["state_dict", "model"].iter().find_map(|key| {
        entries
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| state_dict_within(v, levels - 1))
    })
}

/// The tensor `view` of a storage's bytes, copied out contiguous.
///
/// A view may not hold more elements than its storage: one that does
/// repeats elements (a stride of 0, or overlapping rows), which a state dict
/// never saves, and would make a small file claim a large tensor.
fn gather(view: &TensorRef, data: &[u8]) -> std::result::Result<Tensor, String> {
    let width = view.storage.dtype.size_in_bytes() as u64;
    let count = view
        .size
        .iter()
        .try_fold(1u64, |n, &s| n.checked_mul(s as u64))
        .filter(|&n| n <= view.storage.elements)
        .ok_or_else(|| {
            format!(
                "a view of size {:?} over a storage of {} elements repeats elements (stride {:?}); save the tensor with .contiguous()",
                view.size, view.storage.elements, view.stride
            )
        })? as usize;
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

/// The tensors of a saved object's state dict, in its order, and the
/// storage each key names (every tensor viewing one key must agree on it).
pub(crate) type Views = (Vec<(String, TensorRef)>, HashMap<String, StorageRef>);

/// The tensors of the state dict in `object` and the storages they view.
pub(crate) fn state_dict_views(object: &Value) -> Result<Views, String> {
    let entries = state_dict(object).ok_or("no state dict of tensors in the saved object")?;
    let mut views = Vec::new();
    let mut storages: HashMap<String, StorageRef> = HashMap::new();
    for (name, value) in &entries {
        if let Some(view) = tensor_ref(value).map_err(|e| format!("tensor {name}: {e}"))? {
            if let Some(known) = storages.get(&view.key) {
                if known.dtype != view.storage.dtype || known.elements != view.storage.elements {
                    return Err(format!(
                        "tensor {name}: storage {} described two ways ({:?} × {} and {:?} × {})",
                        view.key, known.dtype, known.elements, view.storage.dtype, view.storage.elements
                    ));
                }
            }
            storages.insert(view.key.clone(), view.storage);
            views.push((name.clone(), view));
        }
    }
    Ok((views, storages))
}

/// Each view copied out of its storage's bytes.
pub(crate) fn gather_all(
    views: Vec<(String, TensorRef)>,
    data: &HashMap<String, Vec<u8>>,
) -> Result<Vec<(String, Tensor)>, String> {
    views
        .into_iter()
        .map(|(name, view)| {
            let bytes = data
                .get(&view.key)
                .ok_or_else(|| format!("tensor {name}: its storage {} is not in the file", view.key))?;
            let tensor = gather(&view, bytes).map_err(|e| format!("tensor {name}: {e}"))?;
            Ok((name, tensor))
        })
        .collect()
}
