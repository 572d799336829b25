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
//! * pretrained encoder weights from safetensors, PyTorch files in the zip or
//!   the legacy format (read
//!   without running code) or the Hugging Face Hub ([`load_pretrained_encoder`]);
//! * pooling candle 0.11 lacks or gets wrong ([`max_pool2d`],
//!   [`adaptive_avg_pool2d`]).
//!
//! ```
//! use caf_backbone::{Arch, CafNet};
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//!
//! let varmap = VarMap::new();
//! let net = CafNet::new(Arch::AlexNet, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
//! let images = Tensor::zeros((4, 3, 224, 224), DType::F32, &Device::Cpu)?;
//! let va = net.va.predict(&images)?;
//! assert_eq!(va.dims(), [4, 2]); // valence and arousal per image
//! let features = net.va.encoder.forward_t(&images, false)?;
//! assert_eq!(features.dims(), [4, Arch::AlexNet.feature_dim()]);
//! assert_eq!(Arch::AlexNet.feature_dim(), 9216);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod alexnet;
mod checkpoint;
mod conv;
mod dropout;
mod error;
mod files;
mod heads;
mod hub;
mod init;
mod model;
mod norm;
mod pickle;
mod pool;
mod pretrained;
mod resnet;
mod torch_legacy;
mod torch_state;
mod torch_zip;
mod weights;

pub use alexnet::{AlexNetEncoder, ALEXNET_FEATURES};
pub use caf_kernels::Precision;
pub use checkpoint::{import_torch_model, save_checkpoint, varmap_tensors, write_tensors, Checkpoint};
pub use conv::{Conv2d, ConvInit, ConvSpec};
pub use dropout::{Dropout, DropoutRng};
pub use error::{Error, Result};
pub use files::{write_file_atomically, RowFile};
pub use heads::{Critic, Regressor, CRITIC_OUTPUTS};
pub use hub::{HubFile, HubOptions};
pub use init::seeded_init;
pub use model::{
    Arch, CafNet, Encoder, ModelSpec, VaNet, CRITIC, ENCODER, META_ARCH, META_IMAGE_SIZE, META_RESIZE, REGRESSOR,
};
pub use norm::BatchNorm2d;
pub use pool::{adaptive_avg_pool2d, global_avg_pool, max_pool2d, MaxPool2dConfig};
pub use pretrained::{load_pretrained_encoder, WeightSource, MODEL_FILE};
pub use resnet::{ResNet18Encoder, RESNET18_FEATURES};
pub use weights::{read_tensors, TensorFormat};

/// A copy of `tensor` that shares no storage with it and is no part of any
/// gradient graph: what a frozen layer holds ([`VaNet::freeze`]).
pub(crate) fn private_copy(tensor: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    tensor.detach().copy()
}
