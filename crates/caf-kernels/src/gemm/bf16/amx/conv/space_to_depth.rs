//! A strided convolution over few channels (AlexNet's 11×11/4 stem) as a
//! stride-1 convolution of the image's space-to-depth: the padded map cut
//! into cells of `s × s` positions (`s` the stride), each cell one
//! position whose channels are the cell's `s²` positions of every channel.
//! Output `(oy, ox)` then reads cells `(oy + ty, ox + tx)` for the
//! `⌈kh/s⌉ × ⌈kw/s⌉` cells its window covers, and the weight is the same
//! values rearranged into that kernel, zeros where a cell reaches past the
//! original kernel. The image is laid out as the rows of that convolution
//! ([`pack_space_to_depth`]), which the tiles read on whole cache lines,
//! instead of folding 11 kernel columns into 33 channels that fill two
//! steps of 32 for 11 kernel rows.

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::super::super::avx512::pairs_of_rows;
use super::{first_lanes, transpose_16x16, ConvShape, STEP_CHANNELS, TILE};

impl ConvShape {
    /// The stride-1 convolution of the image's space-to-depth that the
    /// tiles compute this one as (channel `(ry·s + rx)·channels + c` of
    /// cell `(Y, X)` holds channel `c` at padded row `s·Y + ry`, column
    /// `s·X + rx`; channels padded to whole steps; no padding), or `None`
    /// where the channels come in whole steps (the stride's phases serve
    /// those), at stride 1, and where it takes no fewer steps than folding
    /// the kernel's columns into one step, or more than twice the steps
    /// that the products' real inner dimension fills.
    pub(super) fn space_to_depth(&self) -> Option<ConvShape> {
        let (c, s, kh, kw) = (self.channels, self.stride, self.kernel_h, self.kernel_w);
        if !self.folds_columns()
            || s < 2
            || self.padded_h() < kh
            || self.padded_w() < kw
            || self.out_channels == 0
            || c == 0
        {
            return None;
        }
        let cells = ConvShape {
            channels: (c * s * s).next_multiple_of(STEP_CHANNELS),
            height: self.out_h() - 1 + kh.div_ceil(s),
            width: self.out_w() - 1 + kw.div_ceil(s),
            kernel_h: kh.div_ceil(s),
            kernel_w: kw.div_ceil(s),
            stride: 1,
            padding: 0,
            ..*self
        };
        let folded_steps = (c * kw <= super::MAX_FOLDED_CHANNELS).then_some(self.steps());
        let filled = cells.steps() * STEP_CHANNELS <= 2 * c * kh * kw;
        (filled && folded_steps.is_none_or(|folded| cells.steps() < folded)).then_some(cells)
    }

    /// The shape the tiles compute this one as: its space-to-depth where
    /// it has one, else itself.
    pub(super) fn computed_as(&self) -> ConvShape {
        self.space_to_depth().unwrap_or(*self)
    }
}

/// For each value of a weight of `shape` (`out_channels × channels × kh ×
/// kw`), its index there and in the weight of `shape`'s space-to-depth
/// `cells`: kernel row `ky` and column `kx` of channel `c` at cell
/// `(⌊ky/s⌋, ⌊kx/s⌋)`, channel `(ky mod s · s + kx mod s)·channels + c`.
fn cell_indices(shape: &ConvShape, cells: &ConvShape) -> impl Iterator<Item = (usize, usize)> {
    let (c, s, kh, kw) = (shape.channels, shape.stride, shape.kernel_h, shape.kernel_w);
    let (cell_channels, cell_h, cell_w) = (cells.channels, cells.kernel_h, cells.kernel_w);
    (0..shape.out_channels * c * kh * kw).map(move |at| {
        let (k, channel, ky, kx) = (at / (c * kh * kw), at / (kh * kw) % c, at / kw % kh, at % kw);
        let cell_channel = ((ky % s) * s + kx % s) * c + channel;
        (
            at,
            ((k * cell_channels + cell_channel) * cell_h + ky / s) * cell_w + kx / s,
        )
    })
}

/// Weight `weight` of `shape` rearranged for `cells`, its
/// [`ConvShape::space_to_depth`] ([`cell_indices`]); zeros elsewhere.
pub(super) fn space_to_depth_weight(weight: &[f32], shape: &ConvShape, cells: &ConvShape) -> Vec<f32> {
    let len = shape.out_channels * shape.channels * shape.kernel_h * shape.kernel_w;
    assert_eq!(weight.len(), len, "space-to-depth weight: length");
    let mut rearranged = vec![0f32; cells.out_channels * cells.channels * cells.kernel_h * cells.kernel_w];
    for (at, cell_at) in cell_indices(shape, cells) {
        rearranged[cell_at] = weight[at];
    }
    rearranged
}

/// Images `x` of `shape` as f32 images of its space-to-depth `cells`
/// (`batch × cells.channels × cells.height × cells.width`: cell channel
/// `(ry·s + rx)·channels + c` of cell `(Y, X)` holds channel `c` at padded
/// row `s·Y + ry`, column `s·X + rx`; zeros past the padded map and for the
/// channels past `channels · s²`), for the weight gradient of the cells.
pub(super) fn space_to_depth_images(x: &[f32], shape: &ConvShape, cells: &ConvShape) -> Vec<f32> {
    let (c, h, w, p, s) = (shape.channels, shape.height, shape.width, shape.padding, shape.stride);
    assert_eq!(
        x.len(),
        shape.batch * shape.image_len(),
        "space-to-depth: images' length"
    );
    let (cell_h, cell_w) = (cells.height, cells.width);
    let mut images = vec![0f32; shape.batch * cells.image_len()];
    images
        .par_chunks_mut(cells.image_len())
        .zip(x.par_chunks(shape.image_len()))
        .for_each(|(cell_image, image)| {
            for (f, plane) in cell_image.chunks_exact_mut(cell_h * cell_w).take(c * s * s).enumerate() {
                let (channel, ry, rx) = (f % c, f / c / s, f / c % s);
                for (cell_y, cell_row) in plane.chunks_exact_mut(cell_w).enumerate() {
                    // Padded row `s·Y + ry` is input row `s·Y + ry − p`.
                    let Some(y) = (s * cell_y + ry).checked_sub(p).filter(|&y| y < h) else {
                        continue;
                    };
                    let row = &image[(channel * h + y) * w..][..w];
                    for (cell_x, value) in cell_row.iter_mut().enumerate() {
                        if let Some(&input) = (s * cell_x + rx).checked_sub(p).and_then(|x| row.get(x)) {
                            *value = input;
                        }
                    }
                }
            }
        });
    images
}

/// The weight (or weight gradient) of `shape` read back from that of its
/// space-to-depth `cells`: the inverse of [`space_to_depth_weight`], the
/// cells' values past the original kernel dropped.
pub(super) fn weight_from_cells(cell_weight: &[f32], shape: &ConvShape, cells: &ConvShape) -> Vec<f32> {
    let len = cells.out_channels * cells.channels * cells.kernel_h * cells.kernel_w;
    assert_eq!(cell_weight.len(), len, "space-to-depth weight: the cells' length");
    let mut weight = vec![0f32; shape.out_channels * shape.channels * shape.kernel_h * shape.kernel_w];
    for (at, cell_at) in cell_indices(shape, cells) {
        weight[at] = cell_weight[cell_at];
    }
    weight
}

/// Image `x` of `shape` laid out as the rows ([`super::pack_rows`]'s
/// layout) of its space-to-depth `cells`: for each block of
/// [`STEP_CHANNELS`] cell channels, each cell's 32 channels as 16 bf16
/// pairs in a 64-byte row of its own, gathered from the image (zeros where
/// a cell reaches past the padded map, and for the channels past
/// `channels · s²`). Every cell of the map is written, for every image
/// alike; the rows after the map are left as they are.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) fn pack_space_to_depth(x: &[f32], shape: &ConvShape, cells: &ConvShape, rows: &mut [u32]) {
    let (c, h, w, p, s) = (shape.channels, shape.height, shape.width, shape.padding, shape.stride);
    assert_eq!(x.len(), shape.image_len(), "space-to-depth: image length");
    assert!(
        i32::try_from(s * (cells.width + TILE) + w + p).is_ok(),
        "space-to-depth: a row past the gathers' reach"
    );
    let (cell_w, plane_len) = (cells.plane_w(), cells.plane_len());
    // Cell channel `f`'s channel and row and column in the cell.
    let sources: Vec<Option<(usize, usize, usize)>> = (0..cells.channels)
        .map(|f| (f < c * s * s).then_some((f % c, f / c / s, f / c % s)))
        .collect();
    let steps = (0..TILE as i32).map(|j| j * s as i32).collect::<Vec<_>>();
    // SAFETY: `steps` holds 16 i32, 512 bits.
    let lane_steps = unsafe { _mm512_loadu_si512(steps.as_ptr().cast()) };
    for (block, block_rows) in rows.chunks_exact_mut(plane_len * TILE).enumerate() {
        for cell_y in 0..cells.height {
            for first in (0..cells.width).step_by(TILE) {
                let count = TILE.min(cells.width - first);
                // Vector `k`: cell channels 2k and 2k + 1 of the 16 cells as
                // pairs; transposed, vector `j` is cell `first + j`'s row.
                let mut by_pair = [_mm512_setzero_si512(); TILE];
                for (pair, vector) in by_pair.iter_mut().enumerate() {
                    let f = block * STEP_CHANNELS + 2 * pair;
                    let (low, high) = (sources[f], sources[f + 1]);
                    if low.is_none() && high.is_none() {
                        continue;
                    }
                    let mut halves = [_mm512_setzero_ps(); 2];
                    for (half, from) in halves.iter_mut().zip([low, high]) {
                        let Some((channel, ry, rx)) = from else { continue };
                        // Padded row `s·Y + ry` is input row `s·Y + ry − p`.
                        let Some(y) = (s * cell_y + ry).checked_sub(p).filter(|&y| y < h) else {
                            continue;
                        };
                        let row = &x[(channel * h + y) * w..][..w];
                        // Lane `j` reads padded column `s·(first + j) + rx`,
                        // input column that less `p`: inside the row only.
                        let column = (s * first + rx) as i32 - p as i32;
                        let columns = _mm512_add_epi32(_mm512_set1_epi32(column), lane_steps);
                        let inside = _mm512_cmpge_epi32_mask(columns, _mm512_setzero_si512())
                            & _mm512_cmplt_epi32_mask(columns, _mm512_set1_epi32(w as i32))
                            & first_lanes(count);
                        // SAFETY: only the lanes in `inside` are read, each
                        // a column of `row` (in 0..w); the offsets fit an
                        // i32 (asserted).
                        *half = unsafe {
                            _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), inside, columns, row.as_ptr().cast())
                        };
                    }
                    *vector = pairs_of_rows(halves[0], halves[1]);
                }
                for (j, pairs) in transpose_16x16(by_pair).iter().take(count).enumerate() {
                    let target = &mut block_rows[(cell_y * cell_w + first + j) * TILE..][..TILE];
                    // SAFETY: `target` holds 16 pairs, 512 bits.
                    unsafe { _mm512_storeu_si512(target.as_mut_ptr().cast(), *pairs) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(channels: usize, side: usize, kernel: usize, stride: usize, padding: usize) -> ConvShape {
        ConvShape {
            batch: 1,
            channels,
            height: side,
            width: side,
            out_channels: 64,
            kernel_h: kernel,
            kernel_w: kernel,
            stride,
            padding,
        }
    }

    /// AlexNet's stem (3 × 11 = 33 folded channels, past one step) is
    /// computed as a 3×3 convolution of 48 channels in two steps over 57 ×
    /// 57 cells, with its 55 × 55 output; ResNet's stem folds its 21
    /// channels in one step in 7 steps, fewer than 16 of cells; channels in
    /// whole steps keep their phases.
    #[test]
    fn strided_stems_choose_cells_where_they_take_fewer_steps() {
        let alexnet = shape(3, 224, 11, 4, 2);
        let cells = alexnet.space_to_depth().expect("AlexNet's stem as cells");
        assert_eq!(
            (
                cells.channels,
                cells.height,
                cells.width,
                cells.kernel_h,
                cells.stride,
                cells.padding
            ),
            (64, 57, 57, 3, 1, 0)
        );
        assert_eq!((cells.out_h(), cells.out_w()), (alexnet.out_h(), alexnet.out_w()));
        assert_eq!(cells.steps(), 18);
        assert!(shape(3, 224, 7, 2, 3).space_to_depth().is_none(), "ResNet's stem folds");
        assert!(shape(64, 56, 3, 2, 1).space_to_depth().is_none(), "whole steps");
        assert!(shape(3, 56, 3, 1, 1).space_to_depth().is_none(), "stride 1");
        assert!(
            shape(1, 40, 5, 3, 0).space_to_depth().is_none(),
            "9 cell channels in a step of 32 fill too little of it"
        );
    }

    /// The rearranged weight holds every value of the original once, at
    /// the cell and cell channel its row and column fall in, and zeros
    /// elsewhere.
    #[test]
    fn the_weight_rearranged_holds_each_value_at_its_cell() {
        let s = shape(3, 30, 11, 4, 2);
        let cells = s.space_to_depth().expect("cells");
        let weight: Vec<f32> = (1..=s.out_channels * 3 * 121).map(|v| v as f32).collect();
        let rearranged = space_to_depth_weight(&weight, &s, &cells);
        assert_eq!(rearranged.len(), 64 * 64 * 9);
        let mut seen: Vec<f32> = rearranged.iter().copied().filter(|&v| v != 0.0).collect();
        seen.sort_by(f32::total_cmp);
        assert_eq!(seen, weight, "each value once");
        // Output channel 1, channel 2, kernel row 9, column 6: cell (2, 1),
        // cell channel (1·4 + 2)·3 + 2 = 20.
        let value = weight[((3 + 2) * 11 + 9) * 11 + 6];
        assert_eq!(rearranged[((64 + 20) * 3 + 2) * 3 + 1], value);
        assert_eq!(weight_from_cells(&rearranged, &s, &cells), weight, "read back");
    }
}
