//! # caf-objective
//!
//! The losses of CAF (Kim & Song, AAAI 2021) on candle tensors, and the
//! evaluation metrics, following `DESIGN.md`:
//!
//! * [`va_loss`]: `L_AV = RMSE_v + RMSE_a + ½(1 − mean PCC) + ½(1 − mean CCC)`;
//! * [`mutual_information`], [`adaptive_neighbourhood_sizes`] and
//!   [`critic_loss`]: the contrastive critic objective with its adaptive
//!   margin and Fisher-style constraint, and [`LagrangeMultiplier`];
//! * [`adversarial_loss`]: the encoder's step against the critic;
//! * [`VaMetrics`]: RMSE, SAGR, PCC and CCC over a whole set, streamed, in f64.

mod contrastive;
mod knn;
mod metrics;
mod va_loss;

pub use contrastive::{
    adversarial_loss, clamp_inclusive, critic_loss, margin_offset, mutual_information, relu, CriticLoss,
    LagrangeMultiplier, ADVERSARIAL_WEIGHT, KNN_CONFIDENCE, MI_CLAMP, MI_VARIANCE, RHO,
};
pub use knn::{adaptive_ks, adaptive_neighbourhood_sizes};
pub use metrics::{AxisMetrics, MetricsSummary, VaMetrics};
pub use va_loss::{va_loss, VaLoss};

#[cfg(test)]
mod tests;
