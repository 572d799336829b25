//! # caf-sampler
//!
//! Splits a batch into *strong* (P) and *weak* (Q) emotion samples from its
//! valence–arousal labels alone, the first step of each CAF iteration. It
//! works on plain label slices, so it is testable and reusable without tensors.
//!
//! ```
//! use caf_sampler::{group, GroupingRule};
//!
//! // (valence, arousal): two strong expressions, two near neutral.
//! let labels = [[0.9, 0.7], [0.05, 0.1], [-0.8, 0.6], [0.1, -0.05]];
//! let groups = group(&labels, GroupingRule::Otsu).expect("a strong/weak pair");
//! assert_eq!(groups.strong, [0, 2]);
//! assert_eq!(groups.weak, [1, 3]);
//! ```
//!
//! ## Pairing order
//!
//! Both groups list batch indices in increasing order and are cut to the same
//! length `n` by dropping the later members of the larger group, so pair `i`
//! is `(strong[i], weak[i])`. The contrastive objective then compares
//! strong sample `i` with strong `n−1−i` and weak `n−1−i` (see caf-objective).
//!
//! ## Rules
//!
//! * [`GroupingRule::Otsu`] (the paper's, the default): Otsu thresholds `δv`
//!   on the batch's |valence| and `δa` on its |arousal| ([`otsu_threshold`]);
//!   `δr = √(δv² + δa²)`; a sample is strong when `√(v² + a²) ≥ δr`.
//! * [`GroupingRule::Reference`]: the released reference code's rule, for
//!   like-for-like comparisons. Its thresholds come from
//!   [`reference_cumulative_threshold`] on the *signed, unsorted* values,
//!   `th = √(th_v² + th_a²)`, and it compares the *squared* radius:
//!   strong when `v² + a² > th + 0.25`, weak when `v² + a² < th + 0.25`
//!   (equality: neither). If a group is empty it falls back to fixed bounds:
//!   strong when `v² + a² > 0.65`, weak when `< 0.3`. Two quirks of the
//!   original are *not* reproduced, because they break the groups' contract:
//!   its fallback keeps the earlier strong list and appends to it (listing a
//!   sample twice), and when the strong list is still empty it reuses the weak
//!   list as the strong one (every pair a sample with itself). Here the
//!   fallback starts both lists afresh, and an empty group means no pair.

use std::fmt;
use std::str::FromStr;

/// Which rule splits a batch into strong and weak samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum GroupingRule {
    /// The paper's Otsu-threshold rule.
    #[default]
    Otsu,
    /// The released reference code's cumulative-threshold rule.
    Reference,
}

impl fmt::Display for GroupingRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupingRule::Otsu => "otsu",
            GroupingRule::Reference => "reference",
        })
    }
}

impl FromStr for GroupingRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "otsu" => Ok(GroupingRule::Otsu),
            "reference" => Ok(GroupingRule::Reference),
            _ => Err(format!("unknown grouping rule `{s}` (known: otsu, reference)")),
        }
    }
}

/// Strong and weak samples of a batch, as batch indices, paired in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    /// Strong-emotion samples (P), increasing batch indices.
    pub strong: Vec<usize>,
    /// Weak-emotion samples (Q), increasing batch indices, `weak.len() == strong.len()`.
    pub weak: Vec<usize>,
}

impl Groups {
    /// Number of pairs `n`.
    pub fn len(&self) -> usize {
        self.strong.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strong.is_empty()
    }
}

/// A batch in which one of the groups is empty, so no pair can be formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no strong/weak pair in this batch ({strong} strong, {weak} weak samples of {batch})")]
pub struct NoPair {
    pub strong: usize,
    pub weak: usize,
    pub batch: usize,
}

/// Groups a batch's `(valence, arousal)` labels by `rule`.
pub fn group(labels: &[[f32; 2]], rule: GroupingRule) -> Result<Groups, NoPair> {
    let (strong, weak) = match rule {
        GroupingRule::Otsu => otsu_groups(labels),
        GroupingRule::Reference => reference_groups(labels),
    };
    if strong.is_empty() || weak.is_empty() {
        return Err(NoPair {
            strong: strong.len(),
            weak: weak.len(),
            batch: labels.len(),
        });
    }
    Ok(pair_in_order(strong, weak))
}

fn pair_in_order(mut strong: Vec<usize>, mut weak: Vec<usize>) -> Groups {
    let n = strong.len().min(weak.len());
    strong.truncate(n);
    weak.truncate(n);
    Groups { strong, weak }
}

fn otsu_groups(labels: &[[f32; 2]]) -> (Vec<usize>, Vec<usize>) {
    let abs_axis = |axis: usize| labels.iter().map(|l| l[axis].abs()).collect::<Vec<f32>>();
    let (Some(dv), Some(da)) = (otsu_threshold(&abs_axis(0)), otsu_threshold(&abs_axis(1))) else {
        return (Vec::new(), Vec::new());
    };
    let radius_threshold = (dv * dv + da * da).sqrt();
    let radius = |l: &[f32; 2]| (l[0] as f64).hypot(l[1] as f64);
    split(
        labels,
        |l| radius(l) >= radius_threshold,
        |l| radius(l) < radius_threshold,
    )
}

fn reference_groups(labels: &[[f32; 2]]) -> (Vec<usize>, Vec<usize>) {
    let axis = |axis: usize| labels.iter().map(|l| l[axis]).collect::<Vec<f32>>();
    let th_v = reference_cumulative_threshold(&axis(0));
    let th_a = reference_cumulative_threshold(&axis(1));
    let bound = (th_v * th_v + th_a * th_a).sqrt() + 0.25;
    let squared = |l: &[f32; 2]| l[0] as f64 * l[0] as f64 + l[1] as f64 * l[1] as f64;
    let (strong, weak) = split(labels, |l| squared(l) > bound, |l| squared(l) < bound);
    if !strong.is_empty() && !weak.is_empty() {
        return (strong, weak);
    }
    split(labels, |l| squared(l) > 0.65, |l| squared(l) < 0.3)
}

fn split(
    labels: &[[f32; 2]],
    is_strong: impl Fn(&[f32; 2]) -> bool,
    is_weak: impl Fn(&[f32; 2]) -> bool,
) -> (Vec<usize>, Vec<usize>) {
    let mut strong = Vec::new();
    let mut weak = Vec::new();
    for (index, label) in labels.iter().enumerate() {
        if is_strong(label) {
            strong.push(index);
        } else if is_weak(label) {
            weak.push(index);
        }
    }
    (strong, weak)
}

/// Otsu's threshold of a set of values, computed exactly (no histogram).
///
/// The values are sorted; every cut between two distinct neighbours splits
/// them into a lower and an upper class, and the cut maximising the
/// between-class variance `w₀·w₁·(μ₀ − μ₁)²` wins (the first one on ties).
/// The threshold is the midpoint between the lower class's largest and the
/// upper class's smallest value. When all values are equal there is no cut,
/// and the threshold is that value; `None` for no values (or a NaN among them).
pub fn otsu_threshold(values: &[f32]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let total: f64 = sorted.iter().sum();
    let mut lower_sum = 0.0;
    let mut best: Option<(f64, f64)> = None; // (between-class variance, threshold)
    for k in 1..sorted.len() {
        lower_sum += sorted[k - 1];
        if sorted[k - 1] == sorted[k] {
            continue;
        }
        let (w0, w1) = (k as f64 / n, (n - k as f64) / n);
        let (mu0, mu1) = (lower_sum / k as f64, (total - lower_sum) / (n - k as f64));
        let between = w0 * w1 * (mu0 - mu1) * (mu0 - mu1);
        if best.is_none_or(|(b, _)| between > b) {
            best = Some((between, 0.5 * (sorted[k - 1] + sorted[k])));
        }
    }
    Some(best.map_or(sorted[0], |(_, threshold)| threshold))
}

/// The reference code's `cumulative_thresholding(d, 0.75, 0.95)`, kept for the
/// [`GroupingRule::Reference`] rule.
///
/// With `i_s` / `i_e` the positions of the first minimum and first maximum of
/// the (signed, unsorted) values and `i_m = ⌊(i_s + i_e)/2⌋`, it returns
/// `Σ d[0..=i_m] / Σ d`. (Its loop's exit test, `w_l ≥ 0.75·w or w_l < 0.95·w`,
/// holds for every number, so the first candidate is always returned.) The
/// result is unbounded, or NaN / infinite when the values sum to zero, just
/// as in the original; the comparisons of the rule then fail and it falls back
/// to its fixed bounds.
pub fn reference_cumulative_threshold(values: &[f32]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let first_position = |better: fn(f32, f32) -> bool| {
        values
            .iter()
            .enumerate()
            .fold(0, |best, (i, &v)| if better(v, values[best]) { i } else { best })
    };
    let start = first_position(|v, best| v < best);
    let end = first_position(|v, best| v > best);
    let middle = (start + end) / 2;
    let left: f64 = values[..=middle].iter().map(|&v| v as f64).sum();
    let total: f64 = values.iter().map(|&v| v as f64).sum();
    left / total
}

#[cfg(test)]
mod tests;
