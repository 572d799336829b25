//! The regression loss `L_AV`.

use candle_core::{Result, Tensor};

/// `ε` of the RMSE: `√(mse + ε²)`, so a perfect fit has a finite gradient (0).
const RMSE_EPS: f64 = 1e-6;
/// `ε` of the PCC: `cov / √(σ²_ŷ σ²_y + ε²)`.
const PCC_EPS: f64 = 1e-4;
/// `ε` of the CCC: `2 cov / (σ²_ŷ + σ²_y + (μ_ŷ − μ_y)² + ε²)`.
const CCC_EPS: f64 = 1e-4;

/// `L_AV` and its parts; every field is a tensor of the graph (nothing is
/// copied off the device).
#[derive(Debug, Clone)]
pub struct VaLoss {
    /// The scalar to minimise.
    pub total: Tensor,
    /// RMSE of valence and arousal, shape `[2]`.
    pub rmse: Tensor,
    /// Pearson correlation per axis, shape `[2]`.
    pub pcc: Tensor,
    /// Concordance correlation per axis, shape `[2]`.
    pub ccc: Tensor,
}

/// `L_AV = RMSE_v + RMSE_a + 0.5·(1 − (PCC_v + PCC_a)/2) + 0.5·(1 − (CCC_v + CCC_a)/2)`
/// for predictions and labels of shape `B×2` (valence, arousal).
///
/// Statistics are the population ones (divided by `B`), in PCC and CCC alike.
/// (The reference code divides its covariance by `B` but its standard
/// deviations by `B − 1`, which shrinks PCC by `(B−1)/B`; we do not.)
///
/// Never NaN on a batch whose labels or predictions have zero variance: the
/// small `ε` terms (see the constants) make PCC exactly 0 there (its
/// covariance is 0), CCC 0 (or 2cov/… when only one side is constant, which is
/// 0 too), so `L_AV = RMSE_v + RMSE_a + 1`, with finite gradients.
pub fn va_loss(predictions: &Tensor, labels: &Tensor) -> Result<VaLoss> {
    let (batch, axes) = predictions.dims2()?;
    if labels.dims() != [batch, axes] || axes != 2 || batch == 0 {
        candle_core::bail!(
            "va_loss: predictions {:?} and labels {:?} must both be B×2 with B ≥ 1",
            predictions.dims(),
            labels.dims()
        )
    }
    let rmse = ((predictions - labels)?.sqr()?.mean(0)? + RMSE_EPS * RMSE_EPS)?.sqrt()?;
    let mean_p = predictions.mean_keepdim(0)?;
    let mean_y = labels.mean_keepdim(0)?;
    let dev_p = predictions.broadcast_sub(&mean_p)?;
    let dev_y = labels.broadcast_sub(&mean_y)?;
    let var_p = dev_p.sqr()?.mean(0)?;
    let var_y = dev_y.sqr()?.mean(0)?;
    let cov = (&dev_p * &dev_y)?.mean(0)?;
    let pcc = (&cov / ((&var_p * &var_y)? + PCC_EPS * PCC_EPS)?.sqrt()?)?;
    let mean_gap = (mean_p - mean_y)?.squeeze(0)?.sqr()?;
    let ccc = ((&cov * 2.0)? / (((var_p + var_y)? + mean_gap)? + CCC_EPS * CCC_EPS)?)?;
    // 0.5·(1 − mean) as one affine map.
    let pcc_term = pcc.mean_all()?.affine(-0.5, 0.5)?;
    let ccc_term = ccc.mean_all()?.affine(-0.5, 0.5)?;
    let total = ((rmse.sum_all()? + pcc_term)? + ccc_term)?;
    Ok(VaLoss { total, rmse, pcc, ccc })
}
