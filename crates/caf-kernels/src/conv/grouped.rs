//! Weight gradients of small feature maps, several images per product.
//!
//! `dWᵀ += cols · dyᵀ` one image at a time sums over only that image's
//! output positions (169 on AlexNet's 13×13 layers, 49 on ResNet's 7×7),
//! so each product reads and writes the whole gradient (up to 9.4 MB for
//! ResNet's last layer) to do little arithmetic on it. Here the columns of a
//! group of images sit side by side, `C·kh·kw × (images · positions)`, and
//! one product over all of them is split by rows between the workers.

use rayon::prelude::*;

use super::{accumulate_weight_gradient, im2col_channel, weight_gradient_from_transposed, Geometry};
use crate::gemm::{Element, Matrix, Threads};
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

/// `dW = Σ_groups cols(group) · dy(group)ᵀ`, turned round at the end.
pub(super) fn weight_gradient<T: Element>(dy: &[T], x: &[T], g: &Geometry) -> Vec<T> {
    let image_columns = g.patch() * g.positions() * std::mem::size_of::<T>();
    let group = (GROUP_BYTES / image_columns).clamp(1, g.batch.max(1));
    let taps = g.kernel_h * g.kernel_w;
    let mut dw_t = vec![T::ZERO; g.patch() * g.out_channels];
    let mut cols = Scratch::stale(g.patch() * group * g.positions());
    let mut dy_group = Scratch::stale(g.out_channels * group * g.positions());
    for first in (0..g.batch).step_by(group) {
        let images = first..(first + group).min(g.batch);
        let width = images.len() * g.positions();
        let cols = &mut cols[..g.patch() * width];
        // One input channel's kh·kw rows for every image of the group.
        cols.par_chunks_mut(taps * width).enumerate().for_each(|(c, rows)| {
            for (i, b) in images.clone().enumerate() {
                let plane = &x[b * g.image_len() + c * g.height * g.width..][..g.height * g.width];
                im2col_channel(plane, g, 0..g.out_h, &mut rows[i * g.positions()..], width);
            }
        });
        // dy as out channels × (images · positions).
        let dy_group = &mut dy_group[..g.out_channels * width];
        dy_group.par_chunks_mut(width).enumerate().for_each(|(o, row)| {
            for (i, b) in images.clone().enumerate() {
                row[i * g.positions()..(i + 1) * g.positions()]
                    .copy_from_slice(&dy[(b * g.out_channels + o) * g.positions()..][..g.positions()]);
            }
        });
        accumulate_weight_gradient(
            &mut dw_t,
            Matrix::row_major(cols, g.patch(), width),
            Matrix::row_major(dy_group, g.out_channels, width),
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
    use crate::conv::weight_gradient as per_image_weight_gradient;

    /// Grouped sums equal the per-image ones on every test geometry
    /// (strides, paddings, odd sides, batch 1 and 9).
    #[test]
    fn grouped_images_match_one_image_at_a_time() {
        for (input, weight, params) in CASES {
            let g = Geometry::new(input, weight, params).expect("geometry");
            let x = values(g.batch * g.image_len(), 0.5);
            let dy = values(g.batch * g.output_len(), 3.5);
            let what = format!("{input:?} * {weight:?} {params:?}");
            assert_close(
                &weight_gradient(&dy, &x, &g),
                &per_image_weight_gradient(&dy, &x, &g),
                &what,
            );
        }
    }
}
