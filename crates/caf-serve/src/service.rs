//! What the server serves: the model, the face detector and the inference
//! threads, shared by every request, and a photo's predictions as the API
//! returns them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use caf_data::{DataError, DecodeLimits};
use caf_infer::{FaceDetector, FaceMargin, FaceMode, FacePrediction, InferError, PhotoOptions, Predictor};
use serde::Serialize;

use crate::error::ApiError;
use crate::pool::InferencePool;

/// Limits and sizes of a server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// The largest request body (an upload or a stream frame), in bytes.
    pub max_body_bytes: usize,
    /// What a picture may declare and carry; a picture past them is refused
    /// from its header, before its pixels are decoded.
    pub decode_limits: DecodeLimits,
    /// Requests predicted at once, each as a task on rayon's threads.
    pub workers: usize,
    /// Requests that may wait for a place; more are refused with 503.
    pub queue: usize,
    /// How long a request may wait and run before it is answered with 503.
    pub request_timeout: Duration,
    /// What a refused request is told to wait before trying again.
    pub retry_after: Duration,
}

impl Default for ServeOptions {
    /// 16 MiB bodies, 40 megapixels, one request at once per core, two
    /// waiting requests per core, 30 s per request.
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let max_body_bytes = 16 << 20;
        Self {
            max_body_bytes,
            decode_limits: DecodeLimits {
                max_pixels: 40_000_000,
                max_file_bytes: max_body_bytes as u64,
                ..DecodeLimits::DEFAULT
            },
            workers,
            queue: 2 * workers,
            request_timeout: Duration::from_secs(30),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// What `GET /v1/model` says about the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// `alexnet` or `resnet18`.
    pub architecture: String,
    /// Side of the square crop the network reads.
    pub input_size: usize,
    /// Shorter side a face is resized to before that crop.
    pub resize: usize,
    /// Where the checkpoint came from: a path or `hf://owner/name/file`.
    pub source: String,
    /// What the checkpoint says of its training (method, epochs, best
    /// validation mean CCC), when it was written by training.
    pub training: Option<serde_json::Value>,
}

/// The predictions for one photo.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoPredictions {
    pub width: u32,
    pub height: u32,
    /// One entry per face, in `predict`'s JSON fields.
    pub faces: Vec<FacePrediction>,
}

/// How the faces of a request's photo are found.
#[derive(Debug, Clone, Copy)]
pub struct FaceSettings {
    pub mode: FaceMode,
    pub margin: FaceMargin,
}

/// The model, the detector and the inference threads, shared by all requests.
pub struct Service {
    predictor: Predictor,
    detector: FaceDetector,
    info: ModelInfo,
    options: ServeOptions,
    pool: InferencePool,
}

impl Service {
    /// The service, ready to predict; requests run on rayon's threads.
    pub fn new(predictor: Predictor, detector: FaceDetector, info: ModelInfo, options: ServeOptions) -> Arc<Self> {
        let pool = InferencePool::new(options.workers, options.queue);
        let predictor = predictor.with_decode_limits(options.decode_limits);
        Arc::new(Self {
            predictor,
            detector,
            info,
            options,
            pool,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The precision of the model's convolutions ([`Predictor::with_precision`]).
    pub fn precision(&self) -> caf_infer::Precision {
        self.predictor.precision()
    }

    pub fn options(&self) -> &ServeOptions {
        &self.options
    }

    /// Decodes `bytes` and predicts every face, on this thread.
    pub fn predict_bytes(&self, bytes: &[u8], faces: FaceSettings) -> Result<PhotoPredictions, ApiError> {
        let photo = caf_infer::decode_photo(bytes, Path::new("the uploaded image"), self.predictor.decode_limits())
            .map_err(refusal)?;
        let search = faces.mode.with(|| Ok::<_, std::convert::Infallible>(&self.detector));
        let Ok(search) = search;
        let options = PhotoOptions {
            search,
            margin: faces.margin,
        };
        let found = self.predictor.predict_photo(&photo, None, &options).map_err(refusal)?;
        Ok(PhotoPredictions {
            width: photo.width(),
            height: photo.height(),
            faces: found,
        })
    }

    /// Predicts `bytes` on an inference thread, within the time limit; a
    /// full queue is refused at once.
    pub async fn predict(self: &Arc<Self>, bytes: Vec<u8>, faces: FaceSettings) -> Result<PhotoPredictions, ApiError> {
        let service = self.clone();
        let answer = self
            .pool
            .submit(move || service.predict_bytes(&bytes, faces))
            .map_err(|_| ApiError::busy(self.options.retry_after))?;
        match tokio::time::timeout(self.options.request_timeout, answer).await {
            Err(_) => Err(ApiError::timed_out(
                self.options.request_timeout,
                self.options.retry_after,
            )),
            Ok(Err(_)) => Err(ApiError::internal("the model failed on this image")),
            Ok(Ok(result)) => result,
        }
    }
}

/// The API's answer to what went wrong with one image.
fn refusal(error: InferError) -> ApiError {
    match error {
        InferError::Data(data) => match *data {
            DataError::OverLimit { .. } => ApiError::too_large(data.to_string()),
            other => ApiError::bad_request(format!("not an image this server can read: {other}")),
        },
        too_small @ InferError::TooSmall { .. } => ApiError::bad_request(too_small.to_string()),
        other => ApiError::internal(format!("the prediction failed: {other}")),
    }
}
