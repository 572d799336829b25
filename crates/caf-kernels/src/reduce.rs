//! f64 sums of long f32 runs with independent accumulators, so the compiler
//! can vectorise them (one running sum is a chain of dependent additions).

use crate::gemm::Element;

const LANES: usize = 8;

/// `total += part`, element by element: the workers' partial weight gradients summed.
fn add_assign<T: Element>(total: &mut [T], part: &[T]) {
    for (t, &p) in total.iter_mut().zip(part) {
        *t += p;
    }
}

/// The workers' partial sums added up in order, or `len` zeros when there are none.
pub(crate) fn sum_parts<T: Element>(parts: impl IntoIterator<Item = Vec<T>>, len: usize) -> Vec<T> {
    let mut parts = parts.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![T::ZERO; len]);
    for part in parts {
        add_assign(&mut total, &part);
    }
    total
}

/// `Σ f(vᵢ)`, accumulated in f64.
#[inline(always)]
pub(crate) fn sum_map<T: Element>(values: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest: f64 = chunks.remainder().iter().map(|v| f(v.to_f64())).sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v.to_f64());
        }
    }
    lanes.iter().sum::<f64>() + rest
}

/// Channel `c`'s planes of a batch stored image by image, each image
/// `channels` planes of `plane` values (`[batch, channels, plane]`):
/// `(b·channels + c)·plane ..` for every image `b`.
pub(crate) fn channel_planes<'a, T>(
    data: &'a [T],
    [batch, channels, plane]: [usize; 3],
    c: usize,
) -> impl Iterator<Item = &'a [T]> + 'a {
    (0..batch).map(move |b| &data[(b * channels + c) * plane..][..plane])
}

/// `Σ f(vᵢ)` over channel `c`'s planes ([`channel_planes`]), accumulated
/// in f64 plane by plane.
#[inline(always)]
pub(crate) fn channel_sum<T: Element>(data: &[T], layout: [usize; 3], c: usize, f: impl Fn(f64) -> f64) -> f64 {
    let mut sum = 0.0;
    for plane in channel_planes(data, layout, c) {
        sum += sum_map(plane, &f);
    }
    sum
}

/// `(Σ aᵢ, Σ aᵢ·bᵢ)`, accumulated in f64.
#[inline(always)]
pub(crate) fn sum_and_dot<T: Element>(a: &[T], b: &[T]) -> (f64, f64) {
    // Two passes (a run of `a` is read again from cache): in one loop the
    // compiler pairs each lane's sum and product in a two-lane vector.
    (sum_map(a, |v| v), dot(a, b))
}

/// `Σ aᵢ·bᵢ` (to the shorter length), accumulated in f64.
#[inline(always)]
fn dot<T: Element>(a: &[T], b: &[T]) -> f64 {
    let mut lanes = [0f64; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f64 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(a, b)| a.to_f64() * b.to_f64())
        .sum();
    for (a, b) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            lanes[i] += a[i].to_f64() * b[i].to_f64();
        }
    }
    lanes.iter().sum::<f64>() + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_match_plain_loops_for_every_remainder() {
        for n in [0, 1, 7, 8, 9, 100, 1003] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let squares: f64 = a.iter().map(|&v| (v as f64).powi(2)).sum();
            assert!((sum_map(&a, |v| v * v) - squares).abs() < 1e-9);
            let (sum, dot) = sum_and_dot(&a, &b);
            assert!((sum - a.iter().map(|&v| v as f64).sum::<f64>()).abs() < 1e-9);
            let expected: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((dot - expected).abs() < 1e-9);
        }
    }

    /// Compiled for AVX-512 where the CPU has it, the sums are the plain
    /// build's bits: the vectors only widen the lanes the code spells out.
    #[test]
    fn vectorised_sums_are_the_same_bits() {
        let a: Vec<f32> = (0..10_007).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let b: Vec<f32> = (0..10_007).map(|i| (i as f32 * 0.11).cos()).collect();
        let mean = 3.25;
        // The closures inlined into the wrapper, as the kernels' are: else
        // the sums stay in functions of their own, built for the baseline.
        let vectorised_squares = crate::cpu::vectorised(
            #[inline(always)]
            || sum_map(&a, |v| (v - mean) * (v - mean)),
        );
        assert_eq!(
            vectorised_squares.to_bits(),
            sum_map(&a, |v| (v - mean) * (v - mean)).to_bits()
        );
        let (sum, dot) = crate::cpu::vectorised(
            #[inline(always)]
            || sum_and_dot(&a, &b),
        );
        let (plain_sum, plain_dot) = sum_and_dot(&a, &b);
        assert_eq!(
            (sum.to_bits(), dot.to_bits()),
            (plain_sum.to_bits(), plain_dot.to_bits())
        );
    }
}
