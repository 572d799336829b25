//! Model checkpoints: one safetensors file with `encoder.*`, `regressor.*`
//! and (for training) `critic.*` tensors, plus metadata naming the
//! architecture and preprocessing, so the file alone rebuilds the model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use caf_kernels::Precision;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::error::{Error, Result};
use crate::files::write_file_atomically;
use crate::model::{CafNet, ModelSpec, VaNet, CRITIC, ENCODER, REGRESSOR};
use crate::pretrained::load_encoder_file;
use crate::weights::{assign, read_tensors};

/// A checkpoint read from disk.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub spec: ModelSpec,
    /// All safetensors metadata, `caf.*` keys included.
    pub metadata: HashMap<String, String>,
    pub tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads a checkpoint; the metadata must name a known architecture and sizes.
    pub fn read(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::bad_file(path, format!("not a safetensors file: {e}")))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let spec = ModelSpec::from_metadata(&metadata, path)?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| Error::bad_file(path, format!("unreadable tensors: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            spec,
            metadata,
            tensors,
        })
    }

    /// Whether the file holds any tensor under `prefix` (e.g. [`CRITIC`]).
    pub fn has_part(&self, prefix: &str) -> bool {
        let dotted = format!("{prefix}.");
        self.tensors.keys().any(|name| name.starts_with(&dotted))
    }

    /// Encoder and regressor for prediction, in f32 on `device`, frozen
    /// ([`VaNet::freeze`]): its weights are plain tensors, not variables, so
    /// nothing builds a gradient graph, and layers take their inference-only
    /// fast paths; the convolutions' products in `precision`.
    pub fn va_net(&self, device: &Device, precision: Precision) -> Result<VaNet> {
        let varmap = VarMap::new();
        let net = VaNet::new(self.spec.arch, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        self.assign(&varmap, &[ENCODER, REGRESSOR])?;
        // Freezing copies every weight out of the variables.
        Ok(net.freeze(precision)?)
    }

    /// All three networks for training, with their variables. A checkpoint
    /// without `critic.*` tensors (an imported inference model) gets a freshly
    /// initialised critic.
    pub fn caf_net(&self, device: &Device) -> Result<(CafNet, VarMap)> {
        let varmap = VarMap::new();
        let net = CafNet::new(self.spec.arch, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        self.assign(&varmap, &[ENCODER, REGRESSOR])?;
        if self.has_part(CRITIC) {
            self.assign(&varmap, &[CRITIC])?;
        } else {
            tracing::info!(file = %self.path.display(), "checkpoint has no critic; starting a fresh one");
        }
        Ok((net, varmap))
    }

    fn assign(&self, varmap: &VarMap, parts: &[&str]) -> Result<()> {
        for part in parts {
            assign(
                varmap,
                &format!("{part}."),
                &self.tensors,
                &self.path,
                self.spec.arch.name(),
            )?;
        }
        Ok(())
    }
}

/// Every variable of `varmap` as a named tensor (the weights themselves, not copies).
pub fn varmap_tensors(varmap: &VarMap) -> Vec<(String, Tensor)> {
    let vars = varmap.data().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    vars.iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect()
}

/// Writes `varmap`'s variables as a checkpoint, atomically (a temporary file
/// in the same folder, then a rename), so a crash never leaves a broken file.
/// `extra_metadata` is stored beside the `caf.*` keys.
pub fn save_checkpoint(
    path: &Path,
    spec: &ModelSpec,
    varmap: &VarMap,
    extra_metadata: &HashMap<String, String>,
) -> Result<()> {
    write_tensors(path, spec, &varmap_tensors(varmap), extra_metadata)
}

/// Writes named tensors as a checkpoint file, atomically.
pub fn write_tensors(
    path: &Path,
    spec: &ModelSpec,
    tensors: &[(String, Tensor)],
    extra_metadata: &HashMap<String, String>,
) -> Result<()> {
    let mut metadata = extra_metadata.clone();
    metadata.extend(spec.to_metadata());
    let mut sorted: Vec<(&str, &Tensor)> = tensors.iter().map(|(name, tensor)| (name.as_str(), tensor)).collect();
    sorted.sort_by_key(|(name, _)| *name);
    let bytes = safetensors::serialize(sorted, Some(metadata))
        .map_err(|e| Error::bad_file(path, format!("cannot serialise the checkpoint: {e}")))?;
    write_file_atomically(path, &bytes)
}

/// Imports a trained PyTorch model saved as two state dicts, the layout of
/// the released reference code: the encoder (`features.*` for AlexNet,
/// torchvision names for ResNet-18) and the regressor (`lin0.*`, `lin1.*`,
/// `va_regressor.*`). Writes an inference checkpoint (no critic) to `out`
/// and returns the number of tensors written.
pub fn import_torch_model(spec: &ModelSpec, encoder_file: &Path, regressor_file: &Path, out: &Path) -> Result<usize> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    VaNet::new(spec.arch, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    load_encoder_file(&varmap, spec.arch, encoder_file, &device)?;
    let regressor = regressor_tensors(read_tensors(regressor_file, &device)?);
    assign(
        &varmap,
        &format!("{REGRESSOR}."),
        &regressor,
        regressor_file,
        spec.arch.name(),
    )?;
    let metadata = HashMap::from([
        ("caf.source.encoder".to_string(), encoder_file.display().to_string()),
        ("caf.source.regressor".to_string(), regressor_file.display().to_string()),
    ]);
    save_checkpoint(out, spec, &varmap, &metadata)?;
    Ok(varmap.all_vars().len())
}

/// Renames a reference regressor state dict to `regressor.*` (keeping our own
/// checkpoints' names as they are).
fn regressor_tensors(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let dotted = format!("{REGRESSOR}.");
    tensors
        .into_iter()
        .map(|(name, tensor)| {
            let name = if name.starts_with(&dotted) {
                name
            } else {
                format!("{dotted}{name}")
            };
            (name, tensor)
        })
        .collect()
}
