//! Convolution weights that no longer change (an inference network's), and
//! what the kernels derive from them, made once and kept.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use candle_core::{Result, Tensor, Var};

/// A convolution weight frozen for inference: a private copy of the weight,
/// and the transforms the kernels derive from it, each made on first use and
/// kept for every call after: the Winograd transform `U = G g Gᵀ` of 3×3
/// and 5×5 kernels, which a trainable weight pays on every forward pass (for
/// a single small map, more than the products it saves) and which, kept,
/// lets those layers run by Winograd from single images on
/// (docs/performance.md).
///
/// Clones share the copy and the kept transforms.
#[derive(Clone)]
pub struct FrozenWeight {
    tensor: Tensor,
    kept: Arc<KeptTransforms>,
}

impl FrozenWeight {
    /// Freezes `weight` (`O×C×kh×kw`) by copying it: the kept transforms are
    /// only right while the weight is unchanged, and a copy that nothing else
    /// holds cannot be changed in place by an optimiser or a `Var::set` on
    /// the original. The copy is detached from any gradient graph.
    pub fn new(weight: &Tensor) -> Result<Self> {
        if weight.rank() != 4 {
            candle_core::bail!("FrozenWeight: expected an O×C×kh×kw weight, got {:?}", weight.dims())
        }
        Ok(Self {
            tensor: weight.detach().copy()?.contiguous()?,
            kept: Arc::default(),
        })
    }

    /// The frozen weight itself (for saving or inspection; changing it in
    /// place would leave the kept transforms stale).
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    pub(super) fn kept(&self) -> &Arc<KeptTransforms> {
        &self.kept
    }
}

impl fmt::Debug for FrozenWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrozenWeight")
            .field("shape", &self.tensor.dims())
            .field("dtype", &self.tensor.dtype())
            .field("winograd_transform_kept", &self.kept.has_winograd())
            .finish()
    }
}

/// The weight of a convolution: one being trained (transforms made on every
/// call), or a [`FrozenWeight`].
#[derive(Debug, Clone, Copy)]
pub enum ConvWeight<'a> {
    Live(&'a Tensor),
    Frozen(&'a FrozenWeight),
}

impl ConvWeight<'_> {
    pub fn tensor(&self) -> &Tensor {
        match self {
            ConvWeight::Live(tensor) => tensor,
            ConvWeight::Frozen(frozen) => frozen.tensor(),
        }
    }
}

impl<'a> From<&'a Tensor> for ConvWeight<'a> {
    fn from(tensor: &'a Tensor) -> Self {
        ConvWeight::Live(tensor)
    }
}

impl<'a> From<&'a Var> for ConvWeight<'a> {
    fn from(var: &'a Var) -> Self {
        ConvWeight::Live(var.as_tensor())
    }
}

impl<'a> From<&'a FrozenWeight> for ConvWeight<'a> {
    fn from(frozen: &'a FrozenWeight) -> Self {
        ConvWeight::Frozen(frozen)
    }
}

/// The transforms of one frozen weight, per element type (a weight has one
/// dtype, so only one of each pair is ever filled).
#[derive(Default)]
pub struct KeptTransforms {
    winograd_f32: OnceLock<Vec<f32>>,
    winograd_f64: OnceLock<Vec<f64>>,
}

impl KeptTransforms {
    pub(super) fn has_winograd(&self) -> bool {
        self.winograd_f32.get().is_some() || self.winograd_f64.get().is_some()
    }

    /// The slot of the Winograd transform `U` in element type `T` (`None`
    /// for a type other than f32 and f64, whose transform is not kept).
    pub(super) fn winograd_slot<T: 'static>(&self) -> Option<&OnceLock<Vec<T>>> {
        let f32_slot: &dyn Any = &self.winograd_f32;
        let f64_slot: &dyn Any = &self.winograd_f64;
        f32_slot.downcast_ref().or_else(|| f64_slot.downcast_ref())
    }
}
