//! The forward pass of a convolution whose bf16 product reads the image's
//! patches in place ([`crate::gemm::Patches`]) instead of an im2col copy:
//! each image is laid out once by rows ([`RowLayout`]: the padding's zeros
//! written out, strided rows split by phase), and the product packs its
//! bf16 pairs straight from that.

use rayon::prelude::*;

use super::{for_each_image, Geometry, RowLayout};
use crate::gemm::{PairsLhs, Patches, Threads};

/// `y_b = W · cols(x_b) (+ bias)` for every image, `W` packed as bf16 pairs.
pub(super) fn forward(x: &[f32], weight: PairsLhs, bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    let layout = RowLayout::new(g, 0..g.out_h);
    let channel_len = layout.len();
    // Row r = (c, ky, kx) of the column matrix reads channel c's padded
    // rows ky, ky + s, …, from its phase of kx.
    let mut taps = Vec::with_capacity(g.patch());
    for c in 0..g.channels {
        for ky in 0..g.kernel_h {
            taps.extend((0..g.kernel_w).map(|kx| c * channel_len + layout.offset(ky, kx)));
        }
    }
    let row_step = g.stride * layout.row_len();
    let mut y = vec![0.0; g.batch * g.output_len()];
    for_each_image(
        g,
        &mut y,
        g.output_len(),
        g.channels * channel_len,
        |b, y_b, laid_out, threads| {
            let image = &x[b * g.image_len()..][..g.image_len()];
            lay_out(image, g, &layout, laid_out, threads);
            let patches = Patches::new(laid_out, &taps, (g.out_h, g.out_w), row_step);
            if let Some(bias) = bias {
                for (row, &value) in y_b.chunks_exact_mut(g.positions()).zip(bias) {
                    row.fill(value);
                }
            }
            weight.multiply_patches(y_b, bias.is_some(), patches, threads);
        },
    );
    y
}

/// Writes every channel of `image` into `out` as `layout` places them,
/// one channel after another, channels in parallel when `threads` allows.
fn lay_out(image: &[f32], g: &Geometry, layout: &RowLayout, out: &mut [f32], threads: Threads) {
    let plane_len = g.height * g.width;
    let channel = |(c, out): (usize, &mut [f32]), line: &mut Vec<f32>| {
        out.fill(0.0);
        layout.fill(&image[c * plane_len..][..plane_len], g, out, line);
    };
    let out = &mut out[..g.channels * layout.len()];
    match threads {
        Threads::All => out
            .par_chunks_mut(layout.len())
            .enumerate()
            .for_each_init(Vec::new, |line, item| channel(item, line)),
        Threads::One => {
            let mut line = Vec::new();
            out.chunks_mut(layout.len())
                .enumerate()
                .for_each(|item| channel(item, &mut line))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{forward as im2col_forward, Conv2dParams};
    use super::*;
    use crate::cpu::{InstructionSet, Precision};
    use crate::gemm::{Matrix, PackedLhs, WeightProducts};

    /// Geometries whose patches meet every case of the packing: vectors of
    /// 16 columns over one to three output rows, strides 1 to 4 with the
    /// padding in whole phase places or not (and a kernel shorter than the
    /// stride, whose rows in between are never read), inner dimensions
    /// odd and over one inner block (256), more columns than one column
    /// block (1536), enough images to run them in parallel.
    const CASES: [(&[usize], &[usize], Conv2dParams); 9] = [
        (&[1, 5, 7, 7], &[6, 5, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
        (&[1, 8, 7, 7], &[70, 8, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
        (&[2, 3, 20, 18], &[9, 3, 7, 7], Conv2dParams { stride: 2, padding: 3 }),
        (&[1, 3, 35, 33], &[4, 3, 11, 11], Conv2dParams { stride: 4, padding: 2 }),
        (&[1, 70, 9, 9], &[65, 70, 1, 1], Conv2dParams { stride: 2, padding: 0 }),
        (
            &[5, 32, 15, 14],
            &[20, 32, 3, 3],
            Conv2dParams { stride: 2, padding: 1 },
        ),
        (&[1, 4, 13, 11], &[3, 4, 5, 5], Conv2dParams { stride: 3, padding: 2 }),
        (&[1, 3, 80, 80], &[8, 3, 7, 7], Conv2dParams { stride: 2, padding: 3 }),
        (&[1, 2, 1, 1], &[3, 2, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
    ];

    #[test]
    fn products_read_from_the_patches_match_the_column_matrix_bit_for_bit() {
        if crate::cpu::instruction_set() < InstructionSet::Avx512Bf16 {
            eprintln!("AVX512-BF16 not in use: bf16 pairs are not packed, nothing reads patches");
            return;
        }
        let values =
            |len: usize, seed: usize| -> Vec<f32> { (0..len).map(|i| (((i + seed) as f32) * 0.618).sin()).collect() };
        for (input, weight, params) in CASES {
            let g = Geometry::new(input, weight, params).expect("a geometry");
            let x = values(g.batch * g.image_len(), 1);
            let w = values(g.out_channels * g.patch(), 2);
            let bias = values(g.out_channels, 3);
            let w_matrix = Matrix::row_major(&w, g.out_channels, g.patch());
            let kept = PackedLhs::for_products(Precision::Bf16, w_matrix).expect("bf16 is packed");
            for packed in [kept, PackedLhs::bf16(w_matrix)] {
                let pairs = packed.pairs().expect("pairs on AVX512-BF16");
                let products = WeightProducts {
                    precision: Precision::Bf16,
                    packed: Some(std::slice::from_ref(&packed)),
                };
                for bias in [None, Some(&bias[..])] {
                    let ours = forward(&x, pairs, bias, &g);
                    let reference = im2col_forward(&x, &w, bias, &g, products);
                    assert_eq!(ours.len(), reference.len());
                    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{input:?} ∗ {weight:?} {params:?}: element {i}"
                        );
                    }
                }
            }
        }
    }
}
