//! ImageNet-pretrained encoder weights from a local file or the Hugging Face Hub.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use crate::error::Result;
use crate::hub::{HubFile, HubOptions};
use crate::model::{Arch, ENCODER};
use crate::weights::{assign, read_tensors};

/// The weights file of an exported model folder (`cargo xtask export`).
pub const MODEL_FILE: &str = "model.safetensors";

/// Where a weights file comes from: pretrained encoder weights, a
/// checkpoint, detector weights.
///
/// Written as a path (`alexnet.pth`, `resnet18.safetensors`) or as
/// `hf://owner/name/file[@revision]` for a file of a Hub model repository,
/// e.g. `hf://timm/resnet18.a1_in1k/model.safetensors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightSource {
    File(PathBuf),
    Hub(HubFile),
}

impl FromStr for WeightSource {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let Some(rest) = s.strip_prefix("hf://") else {
            return Ok(WeightSource::File(PathBuf::from(s)));
        };
        let (rest, revision) = match rest.rsplit_once('@') {
            Some((rest, revision)) if !revision.is_empty() => (rest, Some(revision.to_string())),
            _ => (rest, None),
        };
        let mut parts = rest.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(owner), Some(name), Some(file)) if !owner.is_empty() && !name.is_empty() && !file.is_empty() => {
                Ok(WeightSource::Hub(HubFile {
                    repo: format!("{owner}/{name}"),
                    file: file.to_string(),
                    revision,
                }))
            }
            _ => Err(format!(
                "`{s}`: a Hub source looks like hf://owner/name/file.safetensors[@revision]"
            )),
        }
    }
}

impl fmt::Display for WeightSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightSource::File(path) => write!(f, "{}", path.display()),
            WeightSource::Hub(hub) => {
                write!(f, "hf://{}/{}", hub.repo, hub.file)?;
                match &hub.revision {
                    Some(revision) => write!(f, "@{revision}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl WeightSource {
    /// Local path of the weights file (resolving Hub files through the cache).
    pub fn local_path(&self, hub: &HubOptions) -> Result<PathBuf> {
        match self {
            WeightSource::File(path) => Ok(path.clone()),
            WeightSource::Hub(file) => file.resolve(hub),
        }
    }

    /// Local path of a checkpoint: a file as it is, the [`MODEL_FILE`] of
    /// an exported model's folder, a Hub file through the cache.
    pub fn checkpoint_file(&self, hub: &HubOptions) -> Result<PathBuf> {
        let path = self.local_path(hub)?;
        if !path.is_dir() {
            return Ok(path);
        }
        let inside = path.join(MODEL_FILE);
        if inside.is_file() {
            Ok(inside)
        } else {
            Err(crate::error::Error::bad_file(
                &path,
                format!("a folder, with no {MODEL_FILE} in it; give a checkpoint file or a folder written by `cargo xtask export`"),
            ))
        }
    }
}

/// Renames a torchvision / timm state dict (or one of our checkpoints) to
/// checkpoint names under `encoder.`, dropping classifier tensors (`fc.*`,
/// `classifier.*`), BatchNorm's `num_batches_tracked`, and any other head.
pub fn encoder_tensors(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let ours = tensors.keys().any(|name| name.starts_with("encoder."));
    tensors
        .into_iter()
        .filter_map(|(name, tensor)| {
            let name = if ours {
                name.strip_prefix("encoder.")?.to_string()
            } else {
                name
            };
            let dropped =
                name.starts_with("fc.") || name.starts_with("classifier.") || name.ends_with("num_batches_tracked");
            (!dropped).then(|| (format!("{ENCODER}.{name}"), tensor))
        })
        .collect()
}

/// Loads pretrained encoder weights into the `encoder.*` variables of `varmap`.
/// Returns the number of tensors set; every encoder tensor must be in the file.
pub fn load_pretrained_encoder(
    varmap: &VarMap,
    arch: Arch,
    source: &WeightSource,
    hub: &HubOptions,
    device: &Device,
) -> Result<usize> {
    let path = source.local_path(hub)?;
    load_encoder_file(varmap, arch, &path, device)
}

pub(crate) fn load_encoder_file(varmap: &VarMap, arch: Arch, path: &Path, device: &Device) -> Result<usize> {
    let tensors = encoder_tensors(read_tensors(path, device)?);
    let count = assign(varmap, &format!("{ENCODER}."), &tensors, path, arch.name())?;
    tracing::info!(file = %path.display(), tensors = count, "loaded pretrained {arch} encoder");
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_from_paths_and_hub_addresses() {
        assert_eq!("w/alexnet.pth".parse(), Ok(WeightSource::File("w/alexnet.pth".into())));
        let hub: WeightSource = "hf://timm/resnet18.a1_in1k/sub/model.safetensors@v1.0"
            .parse()
            .expect("hub");
        assert_eq!(
            hub,
            WeightSource::Hub(HubFile {
                repo: "timm/resnet18.a1_in1k".into(),
                file: "sub/model.safetensors".into(),
                revision: Some("v1.0".into())
            })
        );
        assert_eq!(hub.to_string(), "hf://timm/resnet18.a1_in1k/sub/model.safetensors@v1.0");
        assert!("hf://timm/model.safetensors".parse::<WeightSource>().is_err());
    }

    #[test]
    fn encoder_names_drop_classifiers_and_counters() {
        let t = Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).expect("tensor");
        let names = [
            "conv1.weight",
            "fc.weight",
            "classifier.6.bias",
            "bn1.num_batches_tracked",
            "features.0.bias",
        ];
        let renamed = encoder_tensors(names.iter().map(|n| (n.to_string(), t.clone())).collect());
        let mut keys: Vec<_> = renamed.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["encoder.conv1.weight", "encoder.features.0.bias"]);
        // Our own checkpoints keep only their encoder part.
        let ours = ["encoder.conv1.weight", "regressor.lin0.weight"];
        let renamed = encoder_tensors(ours.iter().map(|n| (n.to_string(), t.clone())).collect());
        assert_eq!(renamed.keys().collect::<Vec<_>>(), ["encoder.conv1.weight"]);
    }
}
