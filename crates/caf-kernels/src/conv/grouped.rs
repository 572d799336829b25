//! Convolutions of small feature maps, several images per product.
//!
//! One image at a time, a product has as many columns as the image has
//! output positions (169 on AlexNet's 13×13 layers, 49 on ResNet's 7×7):
//! the forward pass and the input gradient leave the kernels' vectors of
//! columns partly empty, and the weight gradient (`dWᵀ += cols · dyᵀ`)
//! sums over so few positions that each product reads and writes the
//! whole gradient (up to 9.4 MB for ResNet's last layer) to do little
//! arithmetic on it. Here the columns of a group of images sit side by
//! side, `C·kh·kw × (images · positions)`, and one product over all of
//! them is split between the workers.

use std::ops::Range;

use rayon::prelude::*;

use super::{accumulate_weight_gradient, col2im_channel, im2col_channel, weight_gradient_from_transposed, Geometry};
use crate::gemm::{Element, Matrix, Threads, WeightProducts};
use crate::parallel::collect_planes;
use crate::scratch::Scratch;

/// Below this many output positions per image, images are grouped.
const MIN_POSITIONS_PER_IMAGE: usize = 64;
/// Bytes of one group's columns: enough images for long sums, bounded so
/// that a batch of hundreds does not hold all its columns at once.
const GROUP_BYTES: usize = 32 << 20;

/// Whether `g`'s weight gradient is computed here.
pub(super) fn applies(g: &Geometry) -> bool {
    g.positions() < MIN_POSITIONS_PER_IMAGE && !g.is_pointwise()
}

/// Whether `g`'s forward pass and input gradient are computed here too:
/// with two images or more (a single image's product is one product
/// anyway).
pub(super) fn applies_to_passes(g: &Geometry) -> bool {
    applies(g) && g.batch > 1
}

/// Images per group.
fn group_len<T>(g: &Geometry) -> usize {
    let image_columns = g.patch() * g.positions() * std::mem::size_of::<T>();
    (GROUP_BYTES / image_columns).clamp(1, g.batch.max(1))
}

/// The groups of `group` images (the last one shorter), in order.
fn groups(g: &Geometry, group: usize) -> impl Iterator<Item = Range<usize>> + '_ {
    (0..g.batch)
        .step_by(group)
        .map(move |first| first..(first + group).min(g.batch))
}

/// The columns of `images` side by side into `cols`
/// (`C·kh·kw × (images · positions)`), one input channel's `kh·kw` rows at a
/// time in parallel.
fn lay_out_columns<T: Element>(x: &[T], g: &Geometry, images: Range<usize>, cols: &mut [T]) {
    let width = images.len() * g.positions();
    let taps = g.kernel_h * g.kernel_w;
    cols[..g.patch() * width]
        .par_chunks_mut(taps * width)
        .enumerate()
        .for_each(|(c, rows)| {
            for (i, b) in images.clone().enumerate() {
                let plane = &x[b * g.image_len() + c * g.height * g.width..][..g.height * g.width];
                im2col_channel(plane, g, 0..g.out_h, &mut rows[i * g.positions()..], width);
            }
        });
}

/// The output gradient of `images` as `out channels × (images · positions)`.
fn lay_out_output<T: Element>(dy: &[T], g: &Geometry, images: Range<usize>, out: &mut [T]) {
    let width = images.len() * g.positions();
    out[..g.out_channels * width]
        .par_chunks_mut(width)
        .enumerate()
        .for_each(|(o, row)| {
            for (i, b) in images.clone().enumerate() {
                row[i * g.positions()..(i + 1) * g.positions()]
                    .copy_from_slice(&dy[(b * g.out_channels + o) * g.positions()..][..g.positions()]);
            }
        });
}

/// `y = W · cols(group) (+ bias)` for each group of images, written back
/// image by image.
pub(super) fn forward<T: Element>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    g: &Geometry,
    products: WeightProducts,
) -> Vec<T> {
    forward_in_groups(x, weight, bias, g, products, group_len::<T>(g))
}

/// [`forward`] in groups of `group` images.
fn forward_in_groups<T: Element>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    g: &Geometry,
    products: WeightProducts,
    group: usize,
) -> Vec<T> {
    let (k, positions) = (g.out_channels, g.positions());
    let w = Matrix::row_major(weight, k, g.patch());
    let mut cols = Scratch::stale(g.patch() * group * positions);
    // Every group's products, `k × (images · positions)` each, one after another.
    let mut sums = Scratch::stale(g.batch * k * positions);
    for images in groups(g, group) {
        let width = images.len() * positions;
        lay_out_columns(x, g, images.clone(), &mut cols);
        products.run(
            0,
            &mut sums[images.start * k * positions..][..k * width],
            false,
            w,
            Matrix::row_major(&cols[..g.patch() * width], g.patch(), width),
            Threads::All,
        );
    }
    collect_planes(g.batch * k, positions, |plane| {
        let (b, o) = (plane / k, plane % k);
        let first = b - b % group;
        let width = (group.min(g.batch - first)) * positions;
        let start = first * k * positions + o * width + (b - first) * positions;
        let shift = bias.map_or(T::ZERO, |bias| bias[o]);
        sums[start..start + positions].iter().map(move |&value| {
            let mut value = value;
            value += shift;
            value
        })
    })
}

/// `dx = col2im(Wᵀ · dy(group))` for each group of images.
pub(super) fn input_gradient<T: Element>(dy: &[T], weight: &[T], g: &Geometry, products: WeightProducts) -> Vec<T> {
    input_gradient_in_groups(dy, weight, g, products, group_len::<T>(g))
}

/// [`input_gradient`] in groups of `group` images.
fn input_gradient_in_groups<T: Element>(
    dy: &[T],
    weight: &[T],
    g: &Geometry,
    products: WeightProducts,
    group: usize,
) -> Vec<T> {
    let (k, positions) = (g.out_channels, g.positions());
    let w_t = Matrix::row_major(weight, k, g.patch()).t();
    let mut dx = vec![T::ZERO; g.batch * g.image_len()];
    let mut dy_group = Scratch::stale(k * group * positions);
    let mut cols = Scratch::stale(g.patch() * group * positions);
    let taps = g.kernel_h * g.kernel_w;
    for images in groups(g, group) {
        let width = images.len() * positions;
        lay_out_output(dy, g, images.clone(), &mut dy_group);
        products.run(
            0,
            &mut cols[..g.patch() * width],
            false,
            w_t,
            Matrix::row_major(&dy_group[..k * width], k, width),
            Threads::All,
        );
        // Each image's input channels from their `kh·kw` rows of the group's columns.
        let planes = g.height * g.width;
        dx[images.start * g.image_len()..images.end * g.image_len()]
            .par_chunks_mut(planes)
            .enumerate()
            .for_each(|(plane, dx_plane)| {
                let (i, c) = (plane / g.channels, plane % g.channels);
                col2im_channel(&cols[c * taps * width + i * positions..], width, g, dx_plane);
            });
    }
    dx
}

/// `dW = Σ_groups cols(group) · dy(group)ᵀ`, turned round at the end.
pub(super) fn weight_gradient<T: Element>(dy: &[T], x: &[T], g: &Geometry) -> Vec<T> {
    weight_gradient_in_groups(dy, x, g, group_len::<T>(g))
}

/// [`weight_gradient`] in groups of `group` images.
fn weight_gradient_in_groups<T: Element>(dy: &[T], x: &[T], g: &Geometry, group: usize) -> Vec<T> {
    let mut dw_t = vec![T::ZERO; g.patch() * g.out_channels];
    let mut cols = Scratch::stale(g.patch() * group * g.positions());
    let mut dy_group = Scratch::stale(g.out_channels * group * g.positions());
    for images in groups(g, group) {
        let width = images.len() * g.positions();
        lay_out_columns(x, g, images.clone(), &mut cols);
        lay_out_output(dy, g, images, &mut dy_group);
        accumulate_weight_gradient(
            &mut dw_t,
            Matrix::row_major(&cols[..g.patch() * width], g.patch(), width),
            Matrix::row_major(&dy_group[..g.out_channels * width], g.out_channels, width),
            Threads::All,
            g.products,
        );
    }
    weight_gradient_from_transposed(&dw_t, g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::tests::{assert_close, values, CASES};
    use crate::conv::{
        forward as per_image_forward, input_gradient as per_image_input_gradient,
        weight_gradient as per_image_weight_gradient, Conv2dParams,
    };

    /// Each pass in groups equals the one image at a time on every test
    /// geometry (strides, paddings, odd sides, batch 1 and 9), in groups of
    /// 2 (the last one shorter) and of the whole batch, the forward pass
    /// with and without a bias.
    #[test]
    fn grouped_images_match_one_image_at_a_time() {
        for (input, weight, params) in CASES {
            let g = Geometry::new(input, weight, params).expect("geometry");
            let x = values(g.batch * g.image_len(), 0.5);
            let w = values(g.out_channels * g.patch(), 1.5);
            let bias = values(g.out_channels, 2.5);
            let dy = values(g.batch * g.output_len(), 3.5);
            for group in [2, g.batch] {
                let what = format!("{input:?} * {weight:?} {params:?} in groups of {group}");
                for bias in [None, Some(&bias[..])] {
                    assert_close(
                        &forward_in_groups(&x, &w, bias, &g, WeightProducts::F32, group),
                        &per_image_forward(&x, &w, bias, &g, WeightProducts::F32),
                        &format!("forward {what} bias {}", bias.is_some()),
                    );
                }
                assert_close(
                    &input_gradient_in_groups(&dy, &w, &g, WeightProducts::F32, group),
                    &per_image_input_gradient(&dy, &w, &g),
                    &format!("input gradient {what}"),
                );
                assert_close(
                    &weight_gradient_in_groups(&dy, &x, &g, group),
                    &per_image_weight_gradient(&dy, &x, &g),
                    &format!("weight gradient {what}"),
                );
            }
        }
    }

    /// The forward pass and input gradient are grouped for small maps of
    /// two images or more: ResNet-18's layer4 at batch 16, not at batch 1,
    /// not its 14×14 layer3 maps.
    #[test]
    fn passes_grouped_for_small_maps_of_several_images() {
        let geometry = |batch, side, stride| {
            let params = Conv2dParams { stride, padding: 1 };
            Geometry::new(&[batch, 256, side, side], &[512, 256, 3, 3], params).expect("geometry")
        };
        assert!(applies_to_passes(&geometry(16, 14, 2)));
        assert!(!applies_to_passes(&geometry(1, 14, 2)));
        assert!(!applies_to_passes(&geometry(16, 14, 1)));
    }
}
