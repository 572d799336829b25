//! The best any person-independent predictor can do on the synthetic people.
//!
//! A face shows `clamp(offset + gain · label)` with a gain and an offset of
//! its own person. A predictor that has never seen the person, even one that
//! reads the shown expression perfectly, cannot undo them; the best it can do
//! (least squared error) is `E[label | shown]`. This estimates that function by
//! Monte Carlo from the generator's own distributions (a fine grid over the
//! shown plane, the mean label in each cell), then scores it on fresh draws,
//! as CCC and RMSE per axis.

use rayon::prelude::*;

use super::{draw_label, GAIN, OFFSET};
use caf_rng::Rng;

/// Cells per side of the grid over the shown plane [-1, 1]².
const GRID: usize = 160;

/// The ceiling of one axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisCeiling {
    pub ccc: f64,
    pub rmse: f64,
}

/// The ceiling of both axes, and how many draws estimated and scored it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceiling {
    pub valence: AxisCeiling,
    pub arousal: AxisCeiling,
    pub samples: usize,
}

impl Ceiling {
    /// Mean CCC of the two axes, the number a run's mean CCC compares with.
    pub fn mean_ccc(&self) -> f64 {
        (self.valence.ccc + self.arousal.ccc) / 2.0
    }
}

/// One draw: a new person's gain and offset, a label, and what the face shows.
fn draw(rng: &mut Rng) -> ([f32; 2], [f32; 2]) {
    let gain = rng.uniform(GAIN.0, GAIN.1) as f32;
    let offset = [
        rng.uniform(OFFSET.0, OFFSET.1) as f32,
        rng.uniform(OFFSET.0, OFFSET.1) as f32,
    ];
    let label = draw_label(rng);
    let shown = [
        (offset[0] + gain * label[0]).clamp(-1.0, 1.0),
        (offset[1] + gain * label[1]).clamp(-1.0, 1.0),
    ];
    (label, shown)
}

fn cell(shown: [f32; 2]) -> usize {
    let index = |x: f32| (((x + 1.0) * 0.5 * GRID as f32) as usize).min(GRID - 1);
    index(shown[0]) * GRID + index(shown[1])
}

const CHUNK: usize = 1 << 16;

/// Chunk `chunk` of `samples` draws, from its own stream of `seed`.
fn chunk_of_draws(samples: usize, seed: u64, stream: u64, chunk: usize) -> impl Iterator<Item = ([f32; 2], [f32; 2])> {
    let mut rng = Rng::derive(seed, &[stream, chunk as u64]);
    (0..CHUNK.min(samples - chunk * CHUNK)).map(move |_| draw(&mut rng))
}

/// `E[label | shown]` estimated from `samples` draws, then scored on as many
/// fresh ones. Deterministic for a seed; the estimate's own error shrinks as
/// `samples` grows (a few million give three decimals).
pub fn ceiling(samples: usize, seed: u64) -> Ceiling {
    let cells = GRID * GRID;
    let chunks = samples.div_ceil(CHUNK);
    // Per-chunk sums added in chunk order, so the result does not depend on
    // how the threads shared the work.
    let partials: Vec<(Vec<[f64; 2]>, Vec<u32>)> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let (mut sums, mut counts) = (vec![[0f64; 2]; cells], vec![0u32; cells]);
            for (label, shown) in chunk_of_draws(samples, seed, 0, chunk) {
                let c = cell(shown);
                sums[c][0] += label[0] as f64;
                sums[c][1] += label[1] as f64;
                counts[c] += 1;
            }
            (sums, counts)
        })
        .collect();
    let (mut sums, mut counts) = (vec![[0f64; 2]; cells], vec![0u32; cells]);
    for (partial_sums, partial_counts) in partials {
        for c in 0..cells {
            sums[c][0] += partial_sums[c][0];
            sums[c][1] += partial_sums[c][1];
            counts[c] += partial_counts[c];
        }
    }
    let estimate: Vec<[f64; 2]> = sums
        .iter()
        .zip(&counts)
        .map(|(sum, &count)| {
            let n = count.max(1) as f64;
            [sum[0] / n, sum[1] / n]
        })
        .collect();
    let scored: Vec<([f32; 2], [f64; 2])> = (0..chunks)
        .into_par_iter()
        .flat_map_iter(|chunk| chunk_of_draws(samples, seed, 1, chunk))
        .map(|(label, shown)| (label, estimate[cell(shown)]))
        .collect();
    let axis = |a: usize| {
        let pairs: Vec<(f64, f64)> = scored
            .iter()
            .map(|(label, guess)| (label[a] as f64, guess[a]))
            .collect();
        AxisCeiling {
            ccc: ccc(&pairs),
            rmse: (pairs.iter().map(|(y, p)| (y - p) * (y - p)).sum::<f64>() / pairs.len() as f64).sqrt(),
        }
    };
    Ceiling {
        valence: axis(0),
        arousal: axis(1),
        samples,
    }
}

/// Lin's concordance correlation of (label, prediction) pairs, population statistics.
fn ccc(pairs: &[(f64, f64)]) -> f64 {
    let n = pairs.len() as f64;
    let (my, mp) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut vy, mut vp, mut cov) = (0.0, 0.0, 0.0);
    for (y, p) in pairs {
        vy += (y - my) * (y - my);
        vp += (p - mp) * (p - mp);
        cov += (y - my) * (p - mp);
    }
    2.0 * cov / n / (vy / n + vp / n + (my - mp) * (my - mp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_is_below_perfect_and_stable() {
        let a = ceiling(400_000, 0);
        let b = ceiling(400_000, 1);
        for (x, y) in [(a.valence, b.valence), (a.arousal, b.arousal)] {
            assert!(x.ccc > 0.5 && x.ccc < 0.99, "{a:?}");
            assert!(x.rmse > 0.05 && x.rmse < 0.4, "{a:?}");
            assert!((x.ccc - y.ccc).abs() < 0.01, "{a:?} vs {b:?}");
        }
        // The axes are drawn alike, so their ceilings agree.
        assert!((a.valence.ccc - a.arousal.ccc).abs() < 0.01, "{a:?}");
        assert_eq!(ceiling(100_000, 3), ceiling(100_000, 3));
    }

    #[test]
    fn a_perfect_reading_of_the_label_would_score_one() {
        let pairs: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64 / 50.0 - 1.0, i as f64 / 50.0 - 1.0))
            .collect();
        assert!((ccc(&pairs) - 1.0).abs() < 1e-12);
        let shrunk: Vec<(f64, f64)> = pairs.iter().map(|&(y, _)| (y, 0.5 * y)).collect();
        assert!(ccc(&shrunk) < 0.9);
    }
}
