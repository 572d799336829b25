//! # caf-infer
//!
//! What a deployment needs from caf-rs, and nothing else:
//!
//! * [`Predictor`]: a model from a checkpoint file alone (architecture and
//!   input size from its metadata), on CPU or CUDA, predicting valence and
//!   arousal for images, files or batches with exactly the evaluation
//!   preprocessing; shareable across threads. A bad file fails alone.
//! * [`Predictor::predict_photo`]: one prediction per face of a photo, the
//!   faces found by MTCNN ([`FaceDetector`], from caf-face), given as boxes,
//!   or the whole picture ([`FaceSearch`]);
//! * [`Va`]: a point's intensity, quadrant and nearest emotion word on the
//!   circumplex table [`EMOTIONS`].
//! * [`photo_annotation`]: the photo with every face's box and reading beside
//!   the circumplex, one labelled point per face;
//! * [`RowFormat`]: the CSV and JSON-lines rows `predict` writes, one per
//!   face ([`PhotoRow`]); a [`FacePrediction`] serialises to its row's fields.
//!
//! ```
//! use caf_infer::{Quadrant, Va};
//!
//! let happy = Va { valence: 0.6, arousal: 0.1 };
//! assert_eq!((happy.emotion(), happy.quadrant()), ("happy", Quadrant::PositiveHigh));
//! assert_eq!(Va { valence: 0.05, arousal: -0.1 }.emotion(), "neutral");
//! ```
//!
//! From a trained checkpoint:
//!
//! ```no_run
//! use caf_infer::{ImageFile, Predictor};
//! # fn main() -> Result<(), caf_infer::InferError> {
//! let predictor = Predictor::from_checkpoint("runs/caf/best.safetensors".as_ref(), &candle_core::Device::Cpu)?;
//! let files = [ImageFile { path: "face.jpg".into(), face: None }];
//! for result in predictor.predict_files(&files, 32) {
//!     let va = result?;
//!     println!("{} {} {}", va.valence, va.arousal, va.emotion());
//! }
//! # Ok(())
//! # }
//! ```

mod annotate;
mod circumplex;
mod files;
mod photo;
mod predictor;
mod rows;
mod text;

pub use annotate::{path_annotation, photo_annotation, PANEL};
pub use caf_data::{DecodeLimit, DecodeLimits};
pub use caf_face::{DetectorConfig, Face, FaceDetector};
pub use caf_kernels::{parse_device, DeviceError, Precision};
pub use circumplex::{Quadrant, Va, EMOTIONS, NEUTRAL_INTENSITY};
pub use files::{find_images, IMAGE_EXTENSIONS, MAX_FOLDER_DEPTH};
pub use photo::{FaceMargin, FaceMode, FaceOrigin, FacePrediction, FaceSearch, PhotoOptions, DEFAULT_FACE_MARGIN};
pub use predictor::{decode_photo, read_photo, ImageFile, InferError, Predictor, MIN_SIDE};
pub use rows::{csv_field, PhotoRow, RowFormat, CSV_HEADER, NO_FACE};

#[cfg(test)]
mod test_support {
    use std::path::{Path, PathBuf};

    use caf_backbone::{save_checkpoint, seeded_init, Arch, ModelSpec, VaNet};
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    /// A seeded AlexNet checkpoint with a 64-px crop, written into `dir`.
    pub fn checkpoint(dir: &Path) -> PathBuf {
        let varmap = VarMap::new();
        VaNet::new(
            Arch::AlexNet,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .expect("net");
        seeded_init(&varmap, Arch::AlexNet, 3).expect("init");
        let path = dir.join("model.safetensors");
        let spec = ModelSpec {
            arch: Arch::AlexNet,
            image_size: 64,
            resize: 72,
        };
        save_checkpoint(&path, &spec, &varmap, &Default::default()).expect("save");
        path
    }
}
