//! # caf-objective
//!
//! The losses of CAF (Kim & Song, AAAI 2021) on candle tensors, and the
//! evaluation metrics, as docs/method.md states them:
//!
//! * [`va_loss`]: `L_AV = RMSE_v + RMSE_a + ½(1 − mean PCC) + ½(1 − mean CCC)`;
//! * [`mutual_information`], [`adaptive_neighbourhood_sizes`] and
//!   [`critic_loss`]: the contrastive critic objective with its adaptive
//!   margin and Fisher-style constraint, and [`LagrangeMultiplier`];
//! * [`adversarial_loss`]: the encoder's step against the critic;
//! * [`VaMetrics`]: RMSE, SAGR, PCC and CCC over a whole set, streamed, in f64.
//!
//! ```
//! use caf_objective::VaMetrics;
//!
//! let labels = [[0.5, -0.2], [-0.4, 0.3], [0.1, 0.8]];
//! let mut metrics = VaMetrics::new();
//! metrics.extend(&labels, &labels); // perfect predictions, in two batches
//! metrics.extend(&[[0.0, 0.0]], &[[0.2, 0.0]]);
//! let summary = metrics.summary();
//! assert_eq!(summary.count, 4);
//! assert!(summary.arousal.ccc > 0.99 && summary.arousal.rmse < 1e-12);
//! assert!((summary.valence.rmse - (0.04f64 / 4.0).sqrt()).abs() < 1e-6);
//! ```

mod contrastive;
mod knn;
mod metrics;
mod va_loss;

pub use contrastive::{
    adversarial_loss, clamp_inclusive, critic_loss, margin_offset, mutual_information, relu, CriticLoss,
    LagrangeMultiplier, ADVERSARIAL_WEIGHT, KNN_CONFIDENCE, MI_CLAMP, MI_VARIANCE, RHO,
};
pub use knn::{adaptive_ks, adaptive_neighbourhood_sizes, critic_objective};
pub use metrics::{AxisMetrics, MetricsSummary, VaMetrics};
pub use va_loss::{va_loss, VaLoss};

#[cfg(test)]
mod tests;
