//! Convolution weights that no longer change (an inference network's), and
//! what the kernels derive from them, made once and kept.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Result, Tensor, Var};

use super::winograd::{self, Variant};
use super::Geometry;
use crate::cpu::Precision;
use crate::gemm::{ChannelPairsLhs, Element, Matrix, PackedLhs, TileWeight};

/// A convolution weight frozen for inference: a private copy of the weight,
/// and the transforms the kernels derive from it, each made on first use and
/// kept for every call after: the Winograd transform `U = G g Gᵀ` of 3×3
/// and 5×5 kernels, which a trainable weight pays on every forward pass (for
/// a single small map, more than the products it saves) and which, kept,
/// lets those layers run by Winograd from single images on
/// (docs/performance.md); and the operands of its products (the weight and
/// the transform) packed for the kernel that multiplies them, where the CPU
/// has one for the precision.
///
/// A frozen weight also fixes the [`Precision`] of its convolution's
/// products: f32 ([`FrozenWeight::new`]) or bf16
/// ([`FrozenWeight::with_precision`]).
///
/// Clones share the copy and the kept transforms.
#[derive(Clone)]
pub struct FrozenWeight {
    tensor: Tensor,
    kept: Arc<KeptTransforms>,
    precision: Precision,
}

impl FrozenWeight {
    /// Freezes `weight` (`O×C×kh×kw`) by copying it: the kept transforms are
    /// only right while the weight is unchanged, and a copy that nothing else
    /// holds cannot be changed in place by an optimiser or a `Var::set` on
    /// the original. The copy is detached from any gradient graph.
    pub fn new(weight: &Tensor) -> Result<Self> {
        Self::with_precision(weight, Precision::F32)
    }

    /// [`FrozenWeight::new`], the convolution's products in `precision`: a
    /// bf16 weight must be f32 (it is kept in f32 and rounded when
    /// multiplied, as the inputs are).
    pub fn with_precision(weight: &Tensor, precision: Precision) -> Result<Self> {
        if weight.rank() != 4 {
            candle_core::bail!("FrozenWeight: expected an O×C×kh×kw weight, got {:?}", weight.dims())
        }
        if precision == Precision::Bf16 && weight.dtype() != DType::F32 {
            candle_core::bail!(
                "FrozenWeight: bf16 products need an f32 weight, got {:?}; convert it to f32 first",
                weight.dtype()
            )
        }
        Ok(Self {
            tensor: weight.detach().copy()?.contiguous()?,
            kept: Arc::default(),
            precision,
        })
    }

    /// The precision of this weight's products.
    pub fn precision(&self) -> Precision {
        self.precision
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
            .field("precision", &self.precision)
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
/// dtype, so only one of each pair is ever filled) and per Winograd variant
/// (one weight can meet maps and batches that take different ones), and
/// for an f32 weight its product operands packed for its precision where
/// the CPU has a kernel for them ([`PackedLhs::for_products`]): the weight
/// itself, and its Winograd transforms' one per point.
#[derive(Default)]
pub struct KeptTransforms {
    winograd_f32: [OnceLock<Vec<f32>>; Variant::COUNT],
    winograd_f64: [OnceLock<Vec<f64>>; Variant::COUNT],
    packed_weight: OnceLock<Option<[PackedLhs; 1]>>,
    channel_pairs: OnceLock<Option<ChannelPairsLhs>>,
    packed_winograd: [OnceLock<Option<Vec<PackedLhs>>>; Variant::COUNT],
    tile_weight: OnceLock<Option<TileWeight>>,
}

impl KeptTransforms {
    /// The weight (`O × C·kh·kw`) packed for products in `g.products` (a
    /// frozen weight's one precision), made on first use; `None` unless
    /// the weight is f32 and the CPU has a kernel for packed operands.
    pub(super) fn packed_weight<T: Element>(&self, weight: &[T], g: &Geometry) -> Option<&[PackedLhs]> {
        let weight = T::as_f32(weight)?;
        let packed = self.packed_weight.get_or_init(|| {
            PackedLhs::for_products(g.products, Matrix::row_major(weight, g.out_channels, g.patch())).map(|p| [p])
        });
        packed.as_ref().map(|p| &p[..])
    }

    /// The weight packed for bf16 products that read the image's channels
    /// in pairs in place ([`ChannelPairsLhs`]), made on first use; `None`
    /// unless the weight is f32, its channels even and the CPU's bf16
    /// path AVX512-BF16.
    pub(super) fn channel_pairs<T: Element>(&self, weight: &[T], g: &Geometry) -> Option<&ChannelPairsLhs> {
        let weight = T::as_f32(weight)?;
        self.channel_pairs
            .get_or_init(|| ChannelPairsLhs::new(weight, g.out_channels, g.channels, g.kernel_h * g.kernel_w))
            .as_ref()
    }

    /// The Winograd transform `u` in `variant` ([`winograd::kernel_transform`])
    /// packed for products in `g.products`, one operand per point, made on
    /// first use; `None` as for [`Self::packed_weight`].
    pub(super) fn packed_winograd<T: Element>(&self, u: &[T], g: &Geometry, variant: Variant) -> Option<&[PackedLhs]> {
        let u = T::as_f32(u)?;
        let packed = self.packed_winograd[variant as usize].get_or_init(|| {
            winograd::transform_operands(u, g, variant)
                .into_iter()
                .map(|point| PackedLhs::for_products(g.products, point))
                .collect()
        });
        packed.as_deref()
    }

    /// The weight packed for convolutions on AMX tiles, made on first use;
    /// `None` unless the weight is f32 (and empty where the tiles do not
    /// run the shape).
    pub(super) fn tile_weight<T: Element>(&self, weight: &[T], g: &Geometry) -> Option<&TileWeight> {
        let weight = T::as_f32(weight)?;
        self.tile_weight
            .get_or_init(|| Some(TileWeight::new(weight, &g.conv_shape())))
            .as_ref()
    }

    /// The Winograd variants whose transform is kept, in either element type.
    pub(super) fn winograd_kept(&self) -> Vec<Variant> {
        Variant::ALL
            .into_iter()
            .filter(|&v| self.winograd_f32[v as usize].get().is_some() || self.winograd_f64[v as usize].get().is_some())
            .collect()
    }

    pub(super) fn has_winograd(&self) -> bool {
        !self.winograd_kept().is_empty()
    }

    /// The slot of the Winograd transform `U` in `variant` and element type
    /// `T` (`None` for a type other than f32 and f64, whose transform is not
    /// kept).
    pub(super) fn winograd_slot<T: 'static>(&self, variant: Variant) -> Option<&OnceLock<Vec<T>>> {
        let f32_slot: &dyn Any = &self.winograd_f32[variant as usize];
        let f64_slot: &dyn Any = &self.winograd_f64[variant as usize];
        f32_slot.downcast_ref().or_else(|| f64_slot.downcast_ref())
    }
}
