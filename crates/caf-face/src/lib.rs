//! # caf-face
//!
//! Finds faces in photos so that caf-rs reads emotions from faces, not from
//! whole pictures: MTCNN (Zhang et al., 2016) on candle, as facenet-pytorch
//! implements it — P-Net over an image pyramid, R-Net, O-Net, bounding-box
//! regression, non-maximum suppression and five landmarks — on the CPU
//! (caf-kernels' convolutions) or any candle device.
//!
//! The detector ships with facenet-pytorch's weights (MIT licence, see
//! `weights/LICENSE-facenet-pytorch.md`), converted from its `pnet.pt`,
//! `rnet.pt` and `onet.pt` by [`convert_facenet_weights`] into one
//! safetensors file under facenet-pytorch's tensor names (`pnet.conv1.weight`,
//! …); [`FaceDetector::load`] reads such a file from a path or `hf://`.
//!
//! ```
//! use caf_face::FaceDetector;
//! use candle_core::Device;
//!
//! let detector = FaceDetector::builtin(&Device::Cpu)?;
//! // A flat grey picture holds no face.
//! let photo = image::RgbImage::from_pixel(120, 90, image::Rgb([128, 128, 128]));
//! assert!(detector.detect(&photo)?.is_empty());
//! # Ok::<(), caf_face::Error>(())
//! ```

mod boxes;
mod detector;
mod error;
mod nets;
mod resample;

use std::collections::HashMap;
use std::path::Path;

use caf_backbone::{read_tensors, HubOptions, WeightSource};
use candle_core::{Device, Tensor};

pub use caf_data::FaceBox;
pub use detector::{DetectorConfig, Face, FaceDetector};
pub use error::{Error, Result};

/// facenet-pytorch's MTCNN weights in safetensors, as [`convert_facenet_weights`] writes them.
const BUILTIN_WEIGHTS: &[u8] = include_bytes!("../weights/mtcnn.safetensors");

/// The three networks, in the order their weights are prefixed.
const NETWORKS: [&str; 3] = ["pnet", "rnet", "onet"];

impl FaceDetector {
    /// The detector with the weights built into this crate, default settings.
    pub fn builtin(device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load_buffer(BUILTIN_WEIGHTS, device)?;
        Self::from_tensors(&tensors, "built-in MTCNN weights", device)
    }

    /// The detector with weights from a file (safetensors with `pnet.*`,
    /// `rnet.*` and `onet.*` tensors) or a Hub file, default settings.
    pub fn load(source: &WeightSource, hub: &HubOptions, device: &Device) -> Result<Self> {
        let path = source.local_path(hub)?;
        let tensors = read_tensors(&path, device)?;
        Self::from_tensors(&tensors, &path.display().to_string(), device)
    }
}

/// Converts facenet-pytorch's three state dicts (`pnet.pt`, `rnet.pt`,
/// `onet.pt`, PyTorch's legacy format as its wheel ships them, or any format
/// [`read_tensors`] reads) into one safetensors file whose names carry the
/// network as a prefix. Checks that the result loads as a detector first.
/// Returns the number of tensors written.
pub fn convert_facenet_weights(pnet: &Path, rnet: &Path, onet: &Path, out: &Path) -> Result<usize> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (network, path) in NETWORKS.into_iter().zip([pnet, rnet, onet]) {
        for (name, tensor) in read_tensors(path, &Device::Cpu)? {
            tensors.insert(format!("{network}.{name}"), tensor);
        }
    }
    FaceDetector::from_tensors(
        &tensors,
        &format!("{}, {}, {}", pnet.display(), rnet.display(), onet.display()),
        &Device::Cpu,
    )?;
    candle_core::safetensors::save(&tensors, out).map_err(|e| Error::Write {
        file: out.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(tensors.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_reproduces_the_builtin_file_from_the_three_networks() -> Result<()> {
        // Split the built-in file back into three un-prefixed state dicts.
        let dir = tempfile::tempdir().unwrap();
        let builtin = candle_core::safetensors::load_buffer(BUILTIN_WEIGHTS, &Device::Cpu)?;
        let mut paths = Vec::new();
        for network in NETWORKS {
            let part: HashMap<String, Tensor> = builtin
                .iter()
                .filter_map(|(name, t)| Some((name.strip_prefix(&format!("{network}."))?.to_string(), t.clone())))
                .collect();
            assert!(!part.is_empty(), "no {network} tensors in the built-in file");
            let path = dir.path().join(format!("{network}.safetensors"));
            candle_core::safetensors::save(&part, &path)?;
            paths.push(path);
        }
        let out = dir.path().join("mtcnn.safetensors");
        let count = convert_facenet_weights(&paths[0], &paths[1], &paths[2], &out)?;
        assert_eq!(count, builtin.len());
        assert_eq!(std::fs::read(&out).unwrap(), BUILTIN_WEIGHTS);

        // Swapped files are refused, naming what is wrong.
        let error = convert_facenet_weights(&paths[1], &paths[0], &paths[2], &out)
            .unwrap_err()
            .to_string();
        assert!(error.contains("pnet.conv1.weight"), "{error}");
        Ok(())
    }

    #[test]
    fn loads_from_a_path_and_names_a_missing_file() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mtcnn.safetensors");
        std::fs::write(&path, BUILTIN_WEIGHTS).unwrap();
        let hub = HubOptions::from_env();
        FaceDetector::load(&WeightSource::File(path.clone()), &hub, &Device::Cpu)?;
        let missing = WeightSource::File(dir.path().join("nope.safetensors"));
        let error = FaceDetector::load(&missing, &hub, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("nope.safetensors"), "{error}");
        Ok(())
    }
}
