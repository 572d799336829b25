//! # caf-backbone
//!
//! The networks of CAF (Kim & Song, AAAI 2021) on candle, with torchvision's
//! architectures and tensor names so weights move between PyTorch and us:
//!
//! * encoders `f_e`: AlexNet `features` + 6×6 adaptive average pool (9216
//!   outputs) and ResNet-18 through `layer4` + global average pool (512);
//! * heads: the regressor `f_r` (→ valence, arousal) and the critic `f_c` (→ 16);
//! * checkpoints: one safetensors file, `encoder.*` / `regressor.*` /
//!   `critic.*` tensors and `caf.*` metadata ([`Checkpoint`], [`save_checkpoint`]);
//! * pretrained encoder weights from safetensors, PyTorch pickles (read
//!   without running code) or the Hugging Face Hub ([`load_pretrained_encoder`]);
//! * pooling candle 0.11 lacks or gets wrong ([`pool`]).
//!
//! ```no_run
//! use caf_backbone::{Arch, CafNet};
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//!
//! let varmap = VarMap::new();
//! let net = CafNet::new(Arch::AlexNet, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
//! let images = Tensor::zeros((4, 3, 224, 224), DType::F32, &Device::Cpu)?;
//! let va = net.va.predict(&images)?; // 4×2
//! # Ok::<(), candle_core::Error>(())
//! ```

pub mod alexnet;
pub mod checkpoint;
pub mod conv;
pub mod dropout;
pub mod error;
pub mod heads;
pub mod hub;
pub mod init;
pub mod model;
pub mod norm;
pub mod pool;
pub mod pretrained;
pub mod resnet;
pub mod weights;

pub use checkpoint::{import_torch_model, save_checkpoint, write_tensors, Checkpoint};
pub use dropout::{Dropout, DropoutRng};
pub use error::{Error, Result};
pub use heads::{Critic, Regressor, CRITIC_OUTPUTS};
pub use hub::{HubFile, HubOptions};
pub use init::seeded_init;
pub use model::{Arch, CafNet, Encoder, ModelSpec, VaNet};
pub use pretrained::{load_pretrained_encoder, WeightSource};
pub use weights::read_tensors;

/// A copy of `tensor` that shares no storage with it and is no part of any
/// gradient graph: what a frozen layer holds ([`VaNet::freeze`]).
pub(crate) fn private_copy(tensor: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    tensor.detach().copy()
}
