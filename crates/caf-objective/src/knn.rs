//! The adaptive k-NN neighbourhood size (Balsubramani et al., NeurIPS 2019)
//! that sets the critic's margin offset `c/√k`.

use candle_core::{DType, Result, Tensor};

use crate::contrastive::KNN_CONFIDENCE;

/// For each query point, the smallest `k` for which some label's fraction
/// among its `k` nearest neighbours, minus ½, exceeds `0.7/√k`; the largest
/// possible `k` (all other points) when none does.
///
/// `points` holds `labels.len()` rows of `dim` values (row-major). Neighbours
/// are the *other* points, by Euclidean distance, ties broken by index.
/// Returns one `k ≥ 1` per query; a set of fewer than two points gives `k = 1`.
pub fn adaptive_neighbourhood_sizes(points: &[f32], dim: usize, labels: &[bool], queries: &[usize]) -> Vec<usize> {
    let count = labels.len();
    debug_assert_eq!(points.len(), count * dim);
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let squared_distance = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64) * (*x as f64 - *y as f64))
            .sum()
    };
    let mut neighbours: Vec<(f64, usize)> = Vec::with_capacity(count);
    queries
        .iter()
        .map(|&query| {
            neighbours.clear();
            neighbours.extend(
                (0..count)
                    .filter(|&j| j != query)
                    .map(|j| (squared_distance(row(query), row(j)), j)),
            );
            neighbours.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut strong_seen = 0usize;
            for (index, &(_, j)) in neighbours.iter().enumerate() {
                let k = index + 1;
                strong_seen += labels[j] as usize;
                let majority = strong_seen.max(k - strong_seen) as f64 / k as f64;
                if majority - 0.5 > KNN_CONFIDENCE / (k as f64).sqrt() {
                    return k;
                }
            }
            neighbours.len().max(1)
        })
        .collect()
}

/// Adaptive `k` of every strong critic output, the neighbourhood being all
/// `2n` outputs labelled strong / weak. `strong` and `weak` are `n×d`.
pub fn adaptive_ks(strong: &Tensor, weak: &Tensor) -> Result<Vec<usize>> {
    let (n, dim) = strong.dims2()?;
    let all = Tensor::cat(&[strong, weak], 0)?.detach().to_dtype(DType::F32)?;
    let points = all.flatten_all()?.to_vec1::<f32>()?;
    let labels: Vec<bool> = (0..2 * n).map(|i| i < n).collect();
    let queries: Vec<usize> = (0..n).collect();
    Ok(adaptive_neighbourhood_sizes(&points, dim, &labels, &queries))
}

/// The critic phase's objective as the method defines it: each strong
/// output's adaptive neighbourhood ([`adaptive_ks`]), then
/// [`critic_loss`](crate::critic_loss) with multiplier `lambda`.
pub fn critic_objective(strong: &Tensor, weak: &Tensor, lambda: f64) -> Result<crate::CriticLoss> {
    let neighbourhood_sizes = adaptive_ks(strong, weak)?;
    crate::critic_loss(strong, weak, &neighbourhood_sizes, lambda)
}
