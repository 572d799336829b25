//! Area resampling of a photo region into a network's input, as PyTorch's
//! `interpolate(mode="area")` (adaptive average pooling) computes it, then
//! MTCNN's normalisation `(v − 127.5) / 128`.

use image::RgbImage;
use rayon::prelude::*;

/// A pixel rectangle `[x0, x1) × [y0, y1)` inside a photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl Region {
    pub fn whole(image: &RgbImage) -> Self {
        Region {
            x0: 0,
            y0: 0,
            x1: image.width() as usize,
            y1: image.height() as usize,
        }
    }

    fn width(&self) -> usize {
        self.x1 - self.x0
    }

    fn height(&self) -> usize {
        self.y1 - self.y0
    }
}

/// Input positions `[start, end)` averaged into output position `i` of
/// `output` when `input` positions are pooled adaptively.
fn window(i: usize, input: usize, output: usize) -> (usize, usize) {
    (i * input / output, ((i + 1) * input).div_ceil(output))
}

/// Whether one resampling spreads its rows over rayon's threads: a pyramid
/// level does, each of many small crops (resampled in parallel) does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rows {
    Parallel,
    Sequential,
}

/// Writes `region` of `image`, area-resampled to `out_h × out_w` and
/// normalised, into `out` as three planes (C×H×W).
///
/// Panics when the region is empty or outside the image, or `out` is not
/// `3 · out_h · out_w` long: callers clip regions first.
pub(crate) fn area_resample_into(
    image: &RgbImage,
    region: Region,
    (out_h, out_w): (usize, usize),
    out: &mut [f32],
    rows: Rows,
) {
    assert!(region.x1 <= image.width() as usize && region.y1 <= image.height() as usize);
    assert!(region.width() > 0 && region.height() > 0 && out_h > 0 && out_w > 0);
    assert_eq!(out.len(), 3 * out_h * out_w);
    let (in_h, in_w) = (region.height(), region.width());
    let stride = image.width() as usize * 3;
    let pixels = image.as_raw();

    // Horizontal pass: every region row averaged to out_w columns (HWC).
    let mut averaged = vec![0f32; in_h * out_w * 3];
    let horizontal = |(r, row): (usize, &mut [f32])| {
        let line = &pixels[(region.y0 + r) * stride..][..stride];
        for j in 0..out_w {
            let (start, end) = window(j, in_w, out_w);
            let mut sum = [0f32; 3];
            for x in region.x0 + start..region.x0 + end {
                for c in 0..3 {
                    sum[c] += line[x * 3 + c] as f32;
                }
            }
            let count = (end - start) as f32;
            for c in 0..3 {
                row[j * 3 + c] = sum[c] / count;
            }
        }
    };
    match rows {
        Rows::Parallel => averaged.par_chunks_mut(out_w * 3).enumerate().for_each(horizontal),
        Rows::Sequential => averaged.chunks_mut(out_w * 3).enumerate().for_each(horizontal),
    }

    // Vertical pass into planes, normalised.
    let plane = out_h * out_w;
    let (red, rest) = out.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    let vertical = |(i, ((red, green), blue)): (usize, PlaneRows)| {
        let (start, end) = window(i, in_h, out_h);
        let count = (end - start) as f32;
        for j in 0..out_w {
            let mut sum = [0f32; 3];
            for r in start..end {
                let at = (r * out_w + j) * 3;
                for c in 0..3 {
                    sum[c] += averaged[at + c];
                }
            }
            red[j] = normalise(sum[0] / count);
            green[j] = normalise(sum[1] / count);
            blue[j] = normalise(sum[2] / count);
        }
    };
    match rows {
        Rows::Parallel => red
            .par_chunks_mut(out_w)
            .zip(green.par_chunks_mut(out_w))
            .zip(blue.par_chunks_mut(out_w))
            .enumerate()
            .for_each(vertical),
        Rows::Sequential => red
            .chunks_mut(out_w)
            .zip(green.chunks_mut(out_w))
            .zip(blue.chunks_mut(out_w))
            .enumerate()
            .for_each(vertical),
    }
}

/// One output row of the red, green and blue planes.
type PlaneRows<'a> = ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]);

fn normalise(value: f32) -> f32 {
    (value - 127.5) * 0.0078125
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| image::Rgb(pixel(x, y)))
    }

    #[test]
    fn windows_follow_adaptive_pooling() {
        // 5 → 3: [0, 2), [1, 4), [3, 5): overlapping where 5/3 is not whole.
        let windows: Vec<_> = (0..3).map(|i| window(i, 5, 3)).collect();
        assert_eq!(windows, [(0, 2), (1, 4), (3, 5)]);
        // Upsampling 2 → 4 repeats each input twice.
        let windows: Vec<_> = (0..4).map(|i| window(i, 2, 4)).collect();
        assert_eq!(windows, [(0, 1), (0, 1), (1, 2), (1, 2)]);
    }

    #[test]
    fn averages_each_window_per_channel_and_normalises() {
        // 4×2 photo, red = 10·x + y, green = 255, blue = 0; region x 1..4, all rows → 1×2.
        let photo = image(4, 2, |x, y| [(10 * x + y) as u8, 255, 0]);
        let region = Region {
            x0: 1,
            y0: 0,
            x1: 4,
            y1: 2,
        };
        let mut out = vec![0f32; 3 * 2];
        area_resample_into(&photo, region, (1, 2), &mut out, Rows::Sequential);
        let mut parallel = vec![0f32; 3 * 2];
        area_resample_into(&photo, region, (1, 2), &mut parallel, Rows::Parallel);
        assert_eq!(out, parallel);
        // Columns 3 → 2: windows [0, 2) and [1, 3) of x = 1, 2, 3.
        let red = [(10.0 + 20.0) / 2.0 + 0.5, (20.0 + 30.0) / 2.0 + 0.5];
        let expected: Vec<f32> = red
            .iter()
            .map(|&r| normalise(r))
            .chain([normalise(255.0); 2])
            .chain([normalise(0.0); 2])
            .collect();
        for (got, want) in out.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-6, "{out:?} vs {expected:?}");
        }
    }
}
