//! Valence and arousal from a checkpoint, with exactly the evaluation
//! preprocessing (decode, optional face crop, resize, centre crop, ImageNet
//! normalisation: caf-data's own functions).

use std::path::{Path, PathBuf};

use caf_backbone::{Checkpoint, ModelSpec, Precision, VaNet};
use caf_data::{decode_with_limits, prepare};
use caf_data::{DataError, DecodeLimits, FaceBox, Preprocess};
use candle_core::{Device, Tensor};
use image::RgbImage;
use rayon::prelude::*;

use crate::circumplex::Va;

/// Images smaller than this on either side are refused: nothing of a face survives.
pub const MIN_SIDE: u32 = 16;

/// What can go wrong building a predictor or predicting one image.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Checkpoint(Box<caf_backbone::Error>),
    #[error(transparent)]
    Data(Box<DataError>),
    #[error("{}: holds no image (.{}); give image files or a folder of them", folder.display(), crate::IMAGE_EXTENSIONS.join(", ."))]
    NoImages { folder: PathBuf },
    #[error("{}: {message}", folder.display())]
    Folder { folder: PathBuf, message: String },
    #[error("{path}: the image is {width}×{height} px; at least {MIN_SIDE}×{MIN_SIDE} is needed")]
    TooSmall { path: PathBuf, width: u32, height: u32 },
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    /// The network failed on a batch this image was part of; every image
    /// of the batch gets the same error.
    #[error("the batch of {images} images this one was in failed: {source}")]
    Batch {
        images: usize,
        source: std::sync::Arc<InferError>,
    },
    #[error(transparent)]
    Detection(Box<caf_face::Error>),
    #[error("face margin {margin}: it must be a number above -0.5 (a share of the box's width and height added on each side)")]
    FaceMargin { margin: f32 },
}

impl From<caf_face::Error> for InferError {
    fn from(error: caf_face::Error) -> Self {
        InferError::Detection(Box::new(error))
    }
}

impl From<caf_backbone::Error> for InferError {
    fn from(error: caf_backbone::Error) -> Self {
        InferError::Checkpoint(Box::new(error))
    }
}

impl From<DataError> for InferError {
    fn from(error: DataError) -> Self {
        InferError::Data(Box::new(error))
    }
}

/// An image file to predict, with its face box when one is known.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFile {
    pub path: PathBuf,
    pub face: Option<FaceBox>,
}

/// A loaded model. Cheap to share: `&Predictor` can be used from several threads.
#[derive(Debug)]
pub struct Predictor {
    net: VaNet,
    spec: ModelSpec,
    preprocess: Preprocess,
    device: Device,
    decode_limits: DecodeLimits,
    precision: Precision,
}

impl Predictor {
    /// Reads a checkpoint; the architecture and input size come from its metadata.
    /// A file of another architecture or with missing tensors is refused,
    /// naming the file and the tensor.
    pub fn from_checkpoint(path: &Path, device: &Device) -> Result<Self, InferError> {
        Self::new(&Checkpoint::read(path, device)?, device)
    }

    /// The prediction network of a checkpoint already read (whose metadata
    /// the caller also wants), on `device`.
    pub fn new(checkpoint: &Checkpoint, device: &Device) -> Result<Self, InferError> {
        let net = checkpoint.va_net(device, Precision::F32)?;
        let spec = checkpoint.spec;
        let preprocess = Preprocess::imagenet(spec.resize as u32, spec.image_size as u32).map_err(|e| {
            DataError::Invalid(format!(
                "{}: bad preprocessing metadata: {e}",
                checkpoint.path.display()
            ))
        })?;
        Ok(Self {
            net,
            spec,
            preprocess,
            device: device.clone(),
            decode_limits: DecodeLimits::DEFAULT,
            precision: Precision::F32,
        })
    }

    /// The same predictor with its convolutions' products in `precision`
    /// ([`Precision::F32`] otherwise; see [`caf_backbone::Precision`]).
    pub fn with_precision(mut self, precision: Precision) -> Result<Self, InferError> {
        if precision != self.precision {
            self.net = self.net.freeze(precision).map_err(caf_backbone::Error::from)?;
            self.precision = precision;
        }
        Ok(self)
    }

    /// The precision of the convolutions' products.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The same predictor, decoding files within other limits
    /// ([`DecodeLimits::DEFAULT`] otherwise).
    pub fn with_decode_limits(mut self, limits: DecodeLimits) -> Self {
        self.decode_limits = limits;
        self
    }

    /// The bounds every file it decodes is held to.
    pub fn decode_limits(&self) -> &DecodeLimits {
        &self.decode_limits
    }

    pub fn spec(&self) -> ModelSpec {
        self.spec
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The network input for one decoded image (`3×crop×crop`, normalised).
    pub fn input(&self, image: &RgbImage, face: Option<FaceBox>) -> Vec<f32> {
        prepare(image, face, &self.preprocess, None)
    }

    /// Predictions for network inputs made by [`Predictor::input`], as one batch.
    pub fn predict_inputs(&self, inputs: &[Vec<f32>]) -> Result<Vec<Va>, InferError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let crop = self.preprocess.crop as usize;
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
        let batch = Tensor::from_vec(flat, (inputs.len(), 3, crop, crop), &self.device)?;
        let rows = self.net.predict(&batch)?.to_vec2::<f32>()?;
        Ok(rows
            .into_iter()
            .map(|row| Va {
                valence: row[0],
                arousal: row[1],
            })
            .collect())
    }

    /// Predictions for decoded images, as one batch.
    pub fn predict_images(&self, images: &[(&RgbImage, Option<FaceBox>)]) -> Result<Vec<Va>, InferError> {
        let inputs: Vec<Vec<f32>> = images
            .par_iter()
            .map(|(image, face)| self.input(image, *face))
            .collect();
        self.predict_inputs(&inputs)
    }

    /// Decodes and predicts `files`, `batch_size` at a time (decoding in
    /// parallel). Every file gets its own result: an unreadable, truncated,
    /// empty or tiny file fails alone and the others are still predicted.
    pub fn predict_files(&self, files: &[ImageFile], batch_size: usize) -> Vec<Result<Va, InferError>> {
        let mut results = Vec::with_capacity(files.len());
        for chunk in files.chunks(batch_size.max(1)) {
            let decoded: Vec<Result<Vec<f32>, InferError>> = chunk
                .par_iter()
                .map(|file| {
                    let image = read_photo(&file.path, &self.decode_limits)?;
                    Ok(self.input(&image, file.face))
                })
                .collect();
            // The good inputs go to the network as one batch; each slot
            // remembers whether its file had one.
            let mut good = Vec::with_capacity(decoded.len());
            let slots: Vec<Result<(), InferError>> =
                decoded.into_iter().map(|r| r.map(|input| good.push(input))).collect();
            let images = good.len();
            match self.predict_inputs(&good) {
                Ok(predictions) => {
                    let mut predictions = predictions.into_iter();
                    for slot in slots {
                        results.push(slot.map(|()| {
                            predictions
                                .next()
                                .expect("predict_inputs gives one prediction per input")
                        }));
                    }
                }
                Err(error) => {
                    let source = std::sync::Arc::new(error);
                    for slot in slots {
                        results.push(slot.and_then(|()| {
                            Err(InferError::Batch {
                                images,
                                source: source.clone(),
                            })
                        }));
                    }
                }
            }
        }
        results
    }
}

/// Decodes an image file within `limits` and refuses tiny ones.
pub fn read_photo(path: &Path, limits: &DecodeLimits) -> Result<RgbImage, InferError> {
    big_enough(decode_with_limits(path, limits)?, path)
}

/// Decodes an image held in memory (an upload, a video frame) within
/// `limits` and refuses tiny ones; `name` says where it came from in errors.
pub fn decode_photo(bytes: &[u8], name: &Path, limits: &DecodeLimits) -> Result<RgbImage, InferError> {
    big_enough(caf_data::decode_bytes(bytes, name, limits)?, name)
}

fn big_enough(image: RgbImage, path: &Path) -> Result<RgbImage, InferError> {
    let (width, height) = image.dimensions();
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(InferError::TooSmall {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::checkpoint;

    fn face(seed: u8) -> RgbImage {
        RgbImage::from_fn(50, 40, |x, y| {
            image::Rgb([(x * 5) as u8 ^ seed, (y * 6) as u8, seed.wrapping_mul((x + y) as u8)])
        })
    }

    #[test]
    fn batches_single_images_and_threads_agree() {
        let dir = tempfile::tempdir().expect("dir");
        let predictor = Predictor::from_checkpoint(&checkpoint(dir.path()), &Device::Cpu).expect("load");
        assert_eq!(predictor.spec().image_size, 64);
        let images = [face(1), face(2), face(3)];
        let together = predictor
            .predict_images(&images.iter().map(|i| (i, None)).collect::<Vec<_>>())
            .expect("batch");
        let from_threads: Vec<Va> = std::thread::scope(|scope| {
            let handles: Vec<_> = images
                .iter()
                .map(|image| scope.spawn(|| predictor.predict_images(&[(image, None)]).expect("one")[0]))
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        for (a, b) in together.iter().zip(&from_threads) {
            assert!((a.valence - b.valence).abs() < 1e-5 && (a.arousal - b.arousal).abs() < 1e-5);
        }
    }

    #[test]
    fn bad_files_fail_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let predictor = Predictor::from_checkpoint(&checkpoint(dir.path()), &Device::Cpu).expect("load");
        let good = dir.path().join("good.png");
        face(7).save(&good).expect("png");
        let tiny = dir.path().join("tiny.png");
        RgbImage::new(8, 30).save(&tiny).expect("png");
        let text = dir.path().join("notes.png");
        std::fs::write(&text, "not an image").expect("write");
        let files: Vec<ImageFile> = [&good, &tiny, &text, &good]
            .iter()
            .map(|p| ImageFile {
                path: p.to_path_buf(),
                face: None,
            })
            .collect();
        let results = predictor.predict_files(&files, 3);
        assert!(results[0].is_ok() && results[3].is_ok());
        assert_eq!(results[0].as_ref().ok(), results[3].as_ref().ok());
        let tiny_error = results[1].as_ref().expect_err("tiny").to_string();
        assert!(tiny_error.contains("8×30 px"), "{tiny_error}");
        let text_error = results[2].as_ref().expect_err("text").to_string();
        assert!(text_error.contains("notes.png"), "{text_error}");
    }
}
