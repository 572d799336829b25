//! A residual block's two convolutions, frozen, as one operation for
//! inference: the first one's output goes straight into the second one's
//! operand instead of through memory.

use candle_core::{CpuStorage, DType, Device, Layout, Result, Storage, Tensor};

use super::{conv2d_add_relu, conv2d_relu, Conv2dParams, FrozenWeight, Geometry};
use crate::cpu::Precision;
use crate::gemm::{convolve_pair_on_tiles, convolve_pair_on_tiles_fits};

/// One convolution of [`conv2d_relu_conv2d_add_relu`]: its frozen weight,
/// its bias and its stride and padding.
pub type FrozenConv<'a> = (&'a FrozenWeight, Option<&'a Tensor>, Conv2dParams);

/// `relu(conv2d(relu(conv2d(x, first) + first's bias), second) + second's
/// bias + residual)`, a residual block's two convolutions for inference.
/// On a CPU with AMX, with both weights frozen in bf16 and images enough
/// for every worker, each worker takes its images through both
/// convolutions and the first one's output never leaves it: the write-back
/// of its tile products rounds them straight into the second one's bf16
/// operand. The result has the same bits as [`conv2d_relu`] then
/// [`conv2d_add_relu`], which run everywhere else (and where anything
/// here tracks a gradient).
///
/// ```
/// use caf_kernels::{conv2d_relu_conv2d_add_relu, Conv2dParams, FrozenWeight};
/// use candle_core::{Device, Tensor};
///
/// let x = Tensor::new(&[1f32, -2.0, 3.0, -4.0], &Device::Cpu)?.reshape((1, 1, 2, 2))?;
/// let identity = FrozenWeight::new(&Tensor::new(&[1f32], &Device::Cpu)?.reshape((1, 1, 1, 1))?)?;
/// let params = Conv2dParams { stride: 1, padding: 0 };
/// let y = conv2d_relu_conv2d_add_relu(&x, (&identity, None, params), (&identity, None, params), &x)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [2.0, 0.0, 6.0, 0.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d_relu_conv2d_add_relu(
    x: &Tensor,
    first: FrozenConv,
    second: FrozenConv,
    residual: &Tensor,
) -> Result<Tensor> {
    if let Some(y) = on_tiles(x, first, second, residual)? {
        return Ok(y);
    }
    let ((w1, b1, p1), (w2, b2, p2)) = (first, second);
    conv2d_add_relu(&conv2d_relu(x, w1, b1, p1)?, w2, b2, p2, residual)
}

/// The pair on the tiles, where they take it (see
/// [`conv2d_relu_conv2d_add_relu`]); `None` elsewhere.
fn on_tiles(x: &Tensor, first: FrozenConv, second: FrozenConv, residual: &Tensor) -> Result<Option<Tensor>> {
    let ((w1, b1, p1), (w2, b2, p2)) = (first, second);
    let bf16 = w1.precision() == Precision::Bf16 && w2.precision() == Precision::Bf16;
    let f32_on_cpu = |t: &Tensor| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32;
    let tracked = [Some(x), Some(residual), b1, b2]
        .into_iter()
        .flatten()
        .any(Tensor::track_op);
    if !bf16 || tracked || !f32_on_cpu(x) || !f32_on_cpu(residual) {
        return Ok(None);
    }
    let g1 = Geometry::new(x.dims(), w1.tensor().dims(), p1)?.in_precision(Precision::Bf16);
    let g2 = Geometry::new(g1.output_shape().dims(), w2.tensor().dims(), p2)?.in_precision(Precision::Bf16);
    if residual.shape() != &g2.output_shape() {
        candle_core::bail!(
            "conv2d_relu_conv2d_add_relu: residual {:?} must have the second convolution's output shape {:?}",
            residual.dims(),
            g2.output_shape().dims()
        )
    }
    let (s1, s2) = (g1.conv_shape(), g2.conv_shape());
    // Each worker takes whole images: with fewer than two each, the
    // convolutions one at a time share out each image's work instead.
    if g1.batch < 2 * rayon::current_num_threads() || !convolve_pair_on_tiles_fits(&s1, &s2) {
        return Ok(None);
    }
    let bias = |bias: Option<&Tensor>, g: &Geometry| -> Result<Option<Vec<f32>>> {
        bias.map(|bias| {
            super::check_bias(bias.layout(), g)?;
            bias.to_dtype(DType::F32)?.to_vec1::<f32>()
        })
        .transpose()
    };
    let (b1, b2) = (bias(b1, &g1)?, bias(b2, &g2)?);
    let (x, residual) = (x.contiguous()?, residual.contiguous()?);
    let tensors = [&x, &residual, w1.tensor(), w2.tensor()];
    let storages = tensors.map(Tensor::storage_and_layout);
    let [Some(x), Some(residual), Some(weight1), Some(weight2)] =
        storages.each_ref().map(|(storage, layout)| f32_values(storage, layout))
    else {
        return Ok(None);
    };
    let kept1 = w1.kept().tile_weight(weight1, &g1);
    let kept2 = w2.kept().tile_weight(weight2, &g2);
    let y = convolve_pair_on_tiles(
        x,
        (weight1, kept1, b1.as_deref(), &s1),
        (weight2, kept2, b2.as_deref(), &s2),
        residual,
    );
    y.map(|y| Tensor::from_vec(y, g2.output_shape(), &Device::Cpu))
        .transpose()
}

/// The values of a contiguous f32 tensor on the CPU, from its storage and
/// layout; `None` for any other.
pub(super) fn f32_values<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [f32]> {
    let Storage::Cpu(CpuStorage::F32(values)) = storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    Some(&values[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::tests::values;
    use crate::cpu::InstructionSet;

    fn tensor(len: usize, seed: f64, shape: &[usize]) -> Tensor {
        let values: Vec<f32> = values(len, seed).into_iter().map(|v| v as f32).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).expect("a tensor")
    }

    /// The pair has the bits of its two convolutions run one after the
    /// other: a stride-2 first convolution and a stride-1 one, batches that
    /// share images out to the workers (on the tiles, where the CPU has
    /// them) and one that does not, weights in bf16 and in f32.
    #[test]
    fn the_pair_is_its_two_convolutions() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        let on_tiles = crate::cpu::instruction_set() >= InstructionSet::AmxBf16;
        for (batch, stride, precision) in [
            (4, 2, Precision::Bf16),
            (5, 1, Precision::Bf16),
            (1, 1, Precision::Bf16),
            (4, 1, Precision::F32),
        ] {
            let side = 5 * stride;
            let x = tensor(batch * 32 * side * side, 0.5, &[batch, 32, side, side]);
            let w1 = FrozenWeight::with_precision(&tensor(64 * 32 * 9, 1.5, &[64, 32, 3, 3]), precision).expect("w1");
            let w2 = FrozenWeight::with_precision(&tensor(64 * 64 * 9, 2.5, &[64, 64, 3, 3]), precision).expect("w2");
            let (b1, b2) = (tensor(64, 3.5, &[64]), tensor(64, 4.5, &[64]));
            let residual = tensor(batch * 64 * 25, 5.5, &[batch, 64, 5, 5]);
            let (p1, p2) = (
                Conv2dParams { stride, padding: 1 },
                Conv2dParams { stride: 1, padding: 1 },
            );
            let (pair, apart) = pool.install(|| {
                let pair = conv2d_relu_conv2d_add_relu(&x, (&w1, Some(&b1), p1), (&w2, Some(&b2), p2), &residual);
                let first = conv2d_relu(&x, &w1, Some(&b1), p1).expect("first");
                (
                    pair,
                    conv2d_add_relu(&first, &w2, Some(&b2), p2, &residual).expect("second"),
                )
            });
            let pair = pair.expect("the pair");
            assert_eq!(pair.dims(), apart.dims());
            let bits = |t: &Tensor| -> Vec<u32> {
                let values = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("values");
                values.into_iter().map(f32::to_bits).collect()
            };
            assert!(
                bits(&pair) == bits(&apart),
                "batch {batch}, stride {stride}, {precision:?}"
            );
            if on_tiles && precision == Precision::Bf16 && batch >= 4 {
                let shape = |g: Geometry| g.conv_shape();
                let g1 = Geometry::new(x.dims(), w1.tensor().dims(), p1).expect("g1");
                let g2 = Geometry::new(g1.output_shape().dims(), w2.tensor().dims(), p2).expect("g2");
                assert!(
                    convolve_pair_on_tiles_fits(&shape(g1), &shape(g2)),
                    "the tiles take the pair"
                );
            }
        }
    }

    /// A residual of another shape than the second convolution's output is
    /// refused with both shapes named.
    #[test]
    fn a_residual_of_another_shape_is_refused() {
        let x = tensor(4 * 32 * 25, 0.5, &[4, 32, 5, 5]);
        let w1 = FrozenWeight::with_precision(&tensor(64 * 32 * 9, 1.5, &[64, 32, 3, 3]), Precision::Bf16).expect("w1");
        let w2 = FrozenWeight::with_precision(&tensor(64 * 64 * 9, 2.5, &[64, 64, 3, 3]), Precision::Bf16).expect("w2");
        let params = Conv2dParams { stride: 1, padding: 1 };
        let residual = tensor(4 * 64 * 16, 5.5, &[4, 64, 4, 4]);
        let error = conv2d_relu_conv2d_add_relu(&x, (&w1, None, params), (&w2, None, params), &residual)
            .expect_err("a residual of another shape");
        assert!(
            error.to_string().contains("[4, 64, 4, 4]") && error.to_string().contains("[4, 64, 5, 5]"),
            "{error}"
        );
    }
}
