//! Reading tensor files (safetensors or PyTorch pickles) and copying their
//! tensors into a model's variables with errors that name the tensor and file.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::error::{Error, Result};

/// On-disk format of a file of tensors, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorFormat {
    Safetensors,
    /// `torch.save` zip archive (`.pth`, `.pt`, `.t7`, `.bin`), read without running any code.
    TorchZip,
    /// `torch.save`'s legacy format (PyTorch before 1.6, or
    /// `_use_new_zipfile_serialization=False`), read without running any code.
    TorchLegacy,
}

impl TensorFormat {
    pub fn detect(path: &Path) -> Result<Self> {
        let mut head = [0u8; crate::torch_legacy::MAGIC.len()];
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let read = file
            .take(head.len() as u64)
            .read(&mut head)
            .map_err(|e| Error::io(path, e))?;
        if read >= 4 && head[..4] == *b"PK\x03\x04" {
            return Ok(TensorFormat::TorchZip);
        }
        if read >= 2 && head[0] == 0x80 && head[1] <= 5 {
            // Every legacy file opens with the magic number's pickle; a
            // damaged one is refused by the reader, naming the magic number.
            return Ok(TensorFormat::TorchLegacy);
        }
        Ok(TensorFormat::Safetensors)
    }
}

/// All tensors of a safetensors file or a PyTorch state dict, as f32 on `device`.
///
/// PyTorch files may hold the state dict at the top level or under
/// `state_dict` / `model`; `module.` prefixes (DataParallel) are removed.
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let tensors: Vec<(String, Tensor)> = match TensorFormat::detect(path)? {
        TensorFormat::Safetensors => candle_core::safetensors::load(path, device)
            .map_err(|e| Error::bad_file(path, format!("not a readable safetensors file: {e}")))?
            .into_iter()
            .collect(),
        TensorFormat::TorchZip => crate::torch_zip::read_zip_state_dict(path)?,
        TensorFormat::TorchLegacy => crate::torch_legacy::read_legacy_state_dict(path)?,
    };
    if tensors.is_empty() {
        return Err(Error::bad_file(path, "holds no tensors"));
    }
    tensors
        .into_iter()
        .map(|(name, tensor)| {
            let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
            let tensor = tensor.to_dtype(DType::F32)?.to_device(device)?;
            Ok((name, tensor))
        })
        .collect()
}

/// Copies `tensors[name]` into every variable of `varmap` whose name starts
/// with `prefix`, checking that each exists with the variable's shape.
/// Returns how many variables were set. `arch` only serves the error message.
pub fn assign(
    varmap: &VarMap,
    prefix: &str,
    tensors: &HashMap<String, Tensor>,
    file: &Path,
    arch: &str,
) -> Result<usize> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| Error::bad_file(file, "model variables are poisoned by an earlier panic"))?;
    let mut names: Vec<&String> = vars.keys().filter(|name| name.starts_with(prefix)).collect();
    names.sort();
    for name in &names {
        let var = &vars[*name];
        let expected = var.dims().to_vec();
        let tensor = tensors.get(*name).ok_or_else(|| Error::MissingTensor {
            file: file.to_path_buf(),
            name: name.to_string(),
            expected: expected.clone(),
            arch: arch.to_string(),
        })?;
        if tensor.dims() != expected.as_slice() {
            return Err(Error::ShapeMismatch {
                file: file.to_path_buf(),
                name: name.to_string(),
                expected,
                found: tensor.dims().to_vec(),
                arch: arch.to_string(),
            });
        }
        var.set(&tensor.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    let unused: Vec<&String> = tensors
        .keys()
        .filter(|name| name.starts_with(prefix) && !vars.contains_key(*name))
        .collect();
    if !unused.is_empty() {
        tracing::warn!(file = %file.display(), ?unused, "tensors not used by the `{arch}` model");
    }
    Ok(names.len())
}
