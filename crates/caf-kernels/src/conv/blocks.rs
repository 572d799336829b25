//! A run of frozen residual blocks (a ResNet stage) as one operation for
//! inference: between blocks the images stay in the bf16 layout that the
//! next convolution reads, instead of going out to f32 and back.

use candle_core::{DType, Device, Result, Tensor};

use super::pair::f32_values;
use super::{conv2d, conv2d_relu_conv2d_add_relu, FrozenConv, Geometry};
use crate::cpu::Precision;
use crate::gemm::{convolve_blocks_on_tiles, convolve_blocks_on_tiles_fits, round_to_bf16, BlockOperands};
use crate::parallel::collect_planes;

/// One block of [`residual_blocks`]: its two convolutions and, where its
/// shortcut downsamples, that convolution (`None`: the identity).
#[derive(Debug, Clone, Copy)]
pub struct ResidualBlock<'a> {
    pub first: FrozenConv<'a>,
    pub second: FrozenConv<'a>,
    pub downsample: Option<FrozenConv<'a>>,
}

impl ResidualBlock<'_> {
    /// Whether both convolutions run in bf16: the block's identity
    /// shortcut is then its input rounded to bf16.
    fn in_bf16(&self) -> bool {
        self.first.0.precision() == Precision::Bf16 && self.second.0.precision() == Precision::Bf16
    }
}

/// For each block in turn, `x = relu(conv2d(relu(conv2d(x, first) +
/// first's bias), second) + second's bias + shortcut)` (torchvision's
/// `BasicBlock` with its batch norms folded in), the shortcut the
/// downsampling convolution of `x` with its bias, or `x` itself; where both
/// of a block's convolutions are frozen in bf16, `x` rounded to bf16, as
/// the images are held between blocks. On a CPU with AMX, with every
/// weight in bf16, each worker takes its images through all the blocks
/// (with fewer images than two per worker, the workers share out each
/// convolution of each image instead) and only the last block's output is
/// written in f32: each block's output is rounded straight into the next
/// block's bf16 operand, and read back from there as its shortcut. The
/// result has the same bits as [`conv2d_relu_conv2d_add_relu`] block after
/// block with those shortcuts, which is what runs everywhere else.
///
/// ```
/// use caf_kernels::{residual_blocks, Conv2dParams, FrozenWeight, ResidualBlock};
/// use candle_core::{Device, Tensor};
///
/// let x = Tensor::new(&[1f32, -2.0, 3.0, -4.0], &Device::Cpu)?.reshape((1, 1, 2, 2))?;
/// let identity = FrozenWeight::new(&Tensor::new(&[1f32], &Device::Cpu)?.reshape((1, 1, 1, 1))?)?;
/// let params = Conv2dParams { stride: 1, padding: 0 };
/// let block = ResidualBlock {
///     first: (&identity, None, params),
///     second: (&identity, None, params),
///     downsample: None,
/// };
/// // relu(relu(x) + x) = [2, 0, 6, 0], then relu(relu(that) + that).
/// let y = residual_blocks(&x, &[block, block])?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [4.0, 0.0, 12.0, 0.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn residual_blocks(x: &Tensor, blocks: &[ResidualBlock]) -> Result<Tensor> {
    if let Some(y) = on_tiles(x, blocks)? {
        return Ok(y);
    }
    let mut x = x.clone();
    for block in blocks {
        let shortcut = match block.downsample {
            Some((weight, bias, params)) => conv2d(&x, weight, bias, params)?,
            None if block.in_bf16() => rounded_to_bf16(&x)?,
            None => x.clone(),
        };
        x = conv2d_relu_conv2d_add_relu(&x, block.first, block.second, &shortcut)?;
    }
    Ok(x)
}

/// `x` rounded to bf16 as the tiles' operands are ([`round_to_bf16`]), in
/// f32: on the CPU in one parallel pass, channel by channel.
fn rounded_to_bf16(x: &Tensor) -> Result<Tensor> {
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 || x.rank() != 4 {
        return x.to_dtype(DType::BF16)?.to_dtype(x.dtype());
    }
    let x = x.contiguous()?;
    let (b, c, h, w) = x.dims4()?;
    let (storage, layout) = x.storage_and_layout();
    let Some(values) = f32_values(&storage, layout) else {
        candle_core::bail!("residual_blocks: a contiguous f32 tensor on the CPU without its values")
    };
    let rounded = collect_planes(b * c, h * w, |plane| {
        values[plane * h * w..][..h * w]
            .iter()
            .map(|&value| round_to_bf16(value))
    });
    Tensor::from_vec(rounded, x.shape(), &Device::Cpu)
}

/// The blocks on the tiles, where they take them (see
/// [`residual_blocks`]); `None` elsewhere.
fn on_tiles(x: &Tensor, blocks: &[ResidualBlock]) -> Result<Option<Tensor>> {
    let layers = || {
        blocks
            .iter()
            .flat_map(|b| [Some(b.first), Some(b.second), b.downsample])
            .flatten()
    };
    let bf16 = layers().all(|(weight, _, _)| weight.precision() == Precision::Bf16);
    let tracked = x.track_op() || layers().any(|(_, bias, _)| bias.is_some_and(Tensor::track_op));
    let cpu_f32 = matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32;
    if blocks.is_empty() || !bf16 || tracked || !cpu_f32 || x.rank() != 4 {
        return Ok(None);
    }
    // Each layer's geometry, from the input of its block.
    let geometry = |input: &[usize], (weight, _, params): FrozenConv| -> Result<Geometry> {
        Ok(Geometry::new(input, weight.tensor().dims(), params)?.in_precision(Precision::Bf16))
    };
    let mut input = x.dims().to_vec();
    let mut geometries = Vec::with_capacity(blocks.len());
    for block in blocks {
        let g1 = geometry(&input, block.first)?;
        let g2 = geometry(g1.output_shape().dims(), block.second)?;
        let downsample = block.downsample.map(|layer| geometry(&input, layer)).transpose()?;
        input = g2.output_shape().dims().to_vec();
        geometries.push((g1, g2, downsample));
    }
    let shapes: Vec<_> = geometries
        .iter()
        .map(|(g1, g2, downsample)| {
            (
                g1.conv_shape(),
                g2.conv_shape(),
                downsample.as_ref().map(Geometry::conv_shape),
            )
        })
        .collect();
    let unpacked = |shape| (&[][..], None, None, shape);
    let fit: Vec<BlockOperands> = shapes
        .iter()
        .map(|(s1, s2, downsample)| BlockOperands {
            first: unpacked(s1),
            second: unpacked(s2),
            downsample: downsample.as_ref().map(unpacked),
        })
        .collect();
    if !convolve_blocks_on_tiles_fits(&fit) {
        return Ok(None);
    }
    let bias = |(_, bias, _): FrozenConv, g: &Geometry| -> Result<Option<Vec<f32>>> {
        bias.map(|bias| {
            super::check_bias(bias.layout(), g)?;
            bias.to_dtype(DType::F32)?.to_vec1::<f32>()
        })
        .transpose()
    };
    let mut biases = Vec::with_capacity(blocks.len());
    for (block, (g1, g2, g3)) in blocks.iter().zip(&geometries) {
        let downsample = match (block.downsample, g3) {
            (Some(layer), Some(g)) => bias(layer, g)?,
            _ => None,
        };
        biases.push((bias(block.first, g1)?, bias(block.second, g2)?, downsample));
    }
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let Some(values) = f32_values(&storage, layout) else {
        return Ok(None);
    };
    let weights: Vec<_> = blocks
        .iter()
        .map(|block| {
            (
                block.first.0.tensor().storage_and_layout(),
                block.second.0.tensor().storage_and_layout(),
                block
                    .downsample
                    .map(|(weight, _, _)| weight.tensor().storage_and_layout()),
            )
        })
        .collect();
    let mut operands = Vec::with_capacity(blocks.len());
    for ((((block, (g1, g2, g3)), (s1, s2, s3)), (w1, w2, w3)), (b1, b2, b3)) in
        blocks.iter().zip(&geometries).zip(&shapes).zip(&weights).zip(&biases)
    {
        let Some(weight1) = f32_values(&w1.0, w1.1) else {
            return Ok(None);
        };
        let Some(weight2) = f32_values(&w2.0, w2.1) else {
            return Ok(None);
        };
        let downsample = match (block.downsample, g3, s3, w3) {
            (Some((frozen, _, _)), Some(g), Some(shape), Some(w)) => {
                let Some(weight) = f32_values(&w.0, w.1) else {
                    return Ok(None);
                };
                Some((weight, frozen.kept().tile_weight(weight, g), b3.as_deref(), shape))
            }
            _ => None,
        };
        operands.push(BlockOperands {
            first: (
                weight1,
                block.first.0.kept().tile_weight(weight1, g1),
                b1.as_deref(),
                s1,
            ),
            second: (
                weight2,
                block.second.0.kept().tile_weight(weight2, g2),
                b2.as_deref(),
                s2,
            ),
            downsample,
        });
    }
    let Some((_, last, _)) = geometries.last() else {
        return Ok(None);
    };
    convolve_blocks_on_tiles(values, &operands)
        .map(|y| Tensor::from_vec(y, last.output_shape(), &Device::Cpu))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::tests::values;
    use crate::conv::{Conv2dParams, FrozenWeight};
    use crate::cpu::InstructionSet;

    fn tensor(len: usize, seed: f64, shape: &[usize]) -> Tensor {
        let values: Vec<f32> = values(len, seed).into_iter().map(|v| v as f32).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).expect("a tensor")
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let values = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("values");
        values.into_iter().map(f32::to_bits).collect()
    }

    /// A stage of two blocks (the first one strided with its downsampling
    /// shortcut) has the bits of its pairs run block after block, the
    /// second block's shortcut its input rounded to bf16 where the weights
    /// are bf16 and as it is in f32: with images for every worker and with
    /// one (on the tiles, where the CPU has them).
    #[test]
    fn a_stage_is_its_pairs_block_after_block() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        let amx = crate::cpu::instruction_set() >= InstructionSet::AmxBf16;
        let (strided, same) = (
            Conv2dParams { stride: 2, padding: 1 },
            Conv2dParams { stride: 1, padding: 1 },
        );
        let downsampling = Conv2dParams { stride: 2, padding: 0 };
        for (batch, precision) in [(4, Precision::Bf16), (1, Precision::Bf16), (4, Precision::F32)] {
            let frozen = |len: usize, seed: f64, shape: &[usize]| {
                let scale = 4.0 / (len / shape[0]) as f64;
                let weight = tensor(len, seed, shape).affine(scale, 0.0).expect("scaled");
                FrozenWeight::with_precision(&weight, precision).expect("a weight")
            };
            let x = tensor(batch * 32 * 81, 0.5, &[batch, 32, 9, 9]);
            let w = [
                frozen(64 * 32 * 9, 1.5, &[64, 32, 3, 3]),
                frozen(64 * 64 * 9, 2.5, &[64, 64, 3, 3]),
                frozen(64 * 32, 3.5, &[64, 32, 1, 1]),
                frozen(64 * 64 * 9, 4.5, &[64, 64, 3, 3]),
                frozen(64 * 64 * 9, 5.5, &[64, 64, 3, 3]),
            ];
            let b: Vec<Tensor> = (0..5).map(|i| tensor(64, 6.5 + i as f64, &[64])).collect();
            let blocks = [
                ResidualBlock {
                    first: (&w[0], Some(&b[0]), strided),
                    second: (&w[1], Some(&b[1]), same),
                    downsample: Some((&w[2], Some(&b[2]), downsampling)),
                },
                ResidualBlock {
                    first: (&w[3], Some(&b[3]), same),
                    second: (&w[4], Some(&b[4]), same),
                    downsample: None,
                },
            ];
            let (stage, apart) = pool.install(|| {
                let stage = residual_blocks(&x, &blocks).expect("the stage");
                let shortcut = conv2d(&x, &w[2], Some(&b[2]), downsampling).expect("shortcut");
                let y = conv2d_relu_conv2d_add_relu(&x, blocks[0].first, blocks[0].second, &shortcut).expect("block 0");
                let shortcut = match precision {
                    Precision::Bf16 => {
                        let rounded: Vec<f32> = y.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("y");
                        let rounded = rounded.into_iter().map(round_to_bf16).collect();
                        Tensor::from_vec(rounded, y.shape(), &Device::Cpu).expect("rounded")
                    }
                    Precision::F32 => y.clone(),
                };
                let apart = conv2d_relu_conv2d_add_relu(&y, blocks[1].first, blocks[1].second, &shortcut);
                (stage, apart.expect("block 1"))
            });
            assert_eq!(stage.dims(), [batch, 64, 5, 5]);
            assert!(bits(&stage) == bits(&apart), "batch {batch}, {precision:?}");
            if amx && precision == Precision::Bf16 {
                let tiled = pool.install(|| on_tiles(&x, &blocks).expect("on tiles"));
                assert!(tiled.is_some(), "the tiles take the stage");
            }
        }
    }

    /// A rounded shortcut is not the shortcut: the stage's bf16 result
    /// differs from its pairs run with the unrounded input as the second
    /// block's shortcut (the test above would not see a missing rounding
    /// otherwise only by chance).
    #[test]
    fn the_identity_shortcut_is_rounded_in_bf16() {
        let x = tensor(32 * 16, 0.25, &[1, 32, 4, 4]);
        let params = Conv2dParams { stride: 1, padding: 1 };
        let w = FrozenWeight::with_precision(&tensor(32 * 32 * 9, 1.25, &[32, 32, 3, 3]), Precision::Bf16)
            .expect("a weight");
        let block = ResidualBlock {
            first: (&w, None, params),
            second: (&w, None, params),
            downsample: None,
        };
        let stage = residual_blocks(&x, &[block]).expect("the stage");
        let unrounded = conv2d_relu_conv2d_add_relu(&x, block.first, block.second, &x).expect("the pair");
        assert!(bits(&stage) != bits(&unrounded));
    }
}
