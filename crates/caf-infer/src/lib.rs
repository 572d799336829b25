//! # caf-infer
//!
//! What a deployment needs from caf-rs, and nothing else:
//!
//! * [`Predictor`]: a model from a checkpoint file alone (architecture and
//!   input size from its metadata), on CPU or CUDA, predicting valence and
//!   arousal for images, files or batches with exactly the evaluation
//!   preprocessing; shareable across threads. A bad file fails alone.
//! * [`Va`]: a point's intensity, quadrant and nearest emotion word on the
//!   circumplex table [`EMOTIONS`].
//! * [`annotation`]: the face beside the circumplex with the predicted point.
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
mod predictor;

pub use annotate::{annotation, PANEL};
pub use circumplex::{Quadrant, Va, EMOTIONS, NEUTRAL_INTENSITY};
pub use predictor::{load, ImageFile, InferError, Predictor, MIN_SIDE};
