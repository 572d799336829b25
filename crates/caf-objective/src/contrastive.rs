//! The critic's contrastive objective and the encoder's adversarial loss.

use candle_core::{Result, Tensor, D};

/// Variance of the Gaussians in the mutual-information estimate.
pub const MI_VARIANCE: f64 = 0.2;
/// Upper clamp of the mutual information in the margin.
pub const MI_CLAMP: f64 = 2.5;
/// `c` of the adaptive k-NN rule and of the margin offset `c/√k`.
pub const KNN_CONFIDENCE: f64 = 0.7;
/// Penalty weight `ρ` of the constraint, also the multiplier's step.
pub const RHO: f64 = 1e-6;
/// Weight of the adversarial loss `−0.1·mean f_c(f_e(x_weak))`.
pub const ADVERSARIAL_WEIGHT: f64 = 0.1;

/// ReLU whose gradient at exactly 0 is 0, as in PyTorch (candle's passes 1).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.gt(0.0)?.where_cond(x, &x.zeros_like()?)
}

/// `clamp(x, lo, hi)` with PyTorch's gradient: 1 on the closed interval
/// `[lo, hi]`, 0 outside. (candle's `clamp` splits the gradient at the bounds.)
pub fn clamp_inclusive(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    let inside = (x.ge(lo)? * x.le(hi)?)?;
    inside.where_cond(x, &x.clamp(lo, hi)?.detach())
}

/// Row-wise mutual-information estimate between critic outputs `x` and `y`
/// (both `n×d`): `mean_j log( p(y_j|x_j) / (½ p(y_j|−1) + ½ p(y_j|+1)) )` with
/// `p(y|μ) = exp(−(y−μ)²/(2·0.2))`. Returns shape `[n]`.
///
/// Computed in closed form, `(2xy − x² + 1)/(2σ²) − log cosh(y/σ²)`, with a
/// stable `log cosh`, so large critic outputs give large finite values where
/// the reference code's ratio of exponentials underflows to NaN.
pub fn mutual_information(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let two_var = 2.0 * MI_VARIANCE;
    let quadratic = ((((x * y)? * 2.0)? - x.sqr()?)? + 1.0)? / two_var;
    let per_dim = (quadratic? - log_cosh(&(y / MI_VARIANCE)?)?)?;
    per_dim.mean(D::Minus1)
}

/// `log cosh z = |z| + log(1 + e^{−2|z|}) − log 2`, exact for any `z`.
fn log_cosh(z: &Tensor) -> Result<Tensor> {
    let magnitude = z.abs()?;
    let tail = ((magnitude.affine(-2.0, 0.0)?.exp()? + 1.0)?.log()? - std::f64::consts::LN_2)?;
    magnitude + tail
}

/// The offset `c/√k` added to the clamped mutual information in the margin,
/// for an adaptive neighbourhood size `k ≥ 1`.
pub fn margin_offset(k: usize) -> f64 {
    KNN_CONFIDENCE / (k.max(1) as f64).sqrt()
}

/// The critic loss and the quantities worth logging.
#[derive(Debug, Clone)]
pub struct CriticLoss {
    /// `L_c = mean(d_ap) + mean(d_an) + λ·C − (ρ/2)·C²`, a scalar.
    pub loss: Tensor,
    /// The constraint `C = 1 − (½·mean(d_ap²) + ½·mean(d_an²))`, a scalar
    /// (feed its value to [`LagrangeMultiplier::update`]).
    pub constraint: Tensor,
    /// Positive distances `d_ap,i = ‖s_i − s_{n−1−i}‖²`, shape `[n]`.
    pub d_ap: Tensor,
    /// Negative terms `d_an,i = relu(m_i − ‖s_i − w_{n−1−i}‖²)`, shape `[n]`.
    pub d_an: Tensor,
    /// Margins `m_i = clamp(MI(s_i, w_{n−1−i}), 0, 2.5) + 0.7/√k_i`, shape `[n]`.
    pub margin: Tensor,
    /// `‖s_i − w_{n−1−i}‖²`, shape `[n]`.
    pub negative_distance: Tensor,
}

/// The contrastive critic objective of the critic phase (docs/method.md).
///
/// `strong` and `weak` are the critic outputs `s = f_c(f_e(x_P))` and
/// `w = f_c(f_e(x_Q))`, both `n×16`, pair `i` being the `i`-th rows;
/// `neighbourhood_sizes[i]` is the adaptive k of `s_i`
/// ([`adaptive_neighbourhood_sizes`](crate::adaptive_neighbourhood_sizes));
/// `lambda` is the current Lagrange multiplier.
pub fn critic_loss(strong: &Tensor, weak: &Tensor, neighbourhood_sizes: &[usize], lambda: f64) -> Result<CriticLoss> {
    let (n, _) = strong.dims2()?;
    if weak.dims() != strong.dims() || neighbourhood_sizes.len() != n || n == 0 {
        candle_core::bail!(
            "critic_loss: strong {:?} and weak {:?} must be equal n×d with n ≥ 1, and {} neighbourhood sizes given",
            strong.dims(),
            weak.dims(),
            neighbourhood_sizes.len()
        )
    }
    let device = strong.device();
    let reversed = Tensor::new((0..n as u32).rev().collect::<Vec<u32>>(), device)?;
    let strong_mirror = strong.index_select(&reversed, 0)?;
    let weak_mirror = weak.index_select(&reversed, 0)?;

    let d_ap = (strong - &strong_mirror)?.sqr()?.sum(D::Minus1)?;
    let negative_distance = (strong - &weak_mirror)?.sqr()?.sum(D::Minus1)?;
    let offsets: Vec<f64> = neighbourhood_sizes.iter().map(|&k| margin_offset(k)).collect();
    let offsets = Tensor::new(offsets, device)?.to_dtype(strong.dtype())?;
    let margin = (clamp_inclusive(&mutual_information(strong, &weak_mirror)?, 0.0, MI_CLAMP)? + offsets)?;
    let d_an = relu(&(&margin - &negative_distance)?)?;

    let second_moments = ((d_ap.sqr()?.mean_all()? + d_an.sqr()?.mean_all()?)? * 0.5)?;
    let constraint = second_moments.affine(-1.0, 1.0)?;
    let penalty = ((&constraint * lambda)? - (constraint.sqr()? * (RHO / 2.0))?)?;
    let loss = ((d_ap.mean_all()? + d_an.mean_all()?)? + penalty)?;
    Ok(CriticLoss {
        loss,
        constraint,
        d_ap,
        d_an,
        margin,
        negative_distance,
    })
}

/// The encoder's adversarial loss `−0.1 · mean(f_c(f_e(x_weak)))`, the mean
/// taken over every element of the weak samples' critic outputs.
pub fn adversarial_loss(weak_critic: &Tensor) -> Result<Tensor> {
    weak_critic.mean_all()? * -ADVERSARIAL_WEIGHT
}

/// The Lagrange multiplier `λ` of the constraint: starts at 0, and after each
/// critic step moves by `λ ← λ + ρ·C`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagrangeMultiplier {
    pub value: f64,
    pub rho: f64,
}

impl Default for LagrangeMultiplier {
    fn default() -> Self {
        Self { value: 0.0, rho: RHO }
    }
}

impl LagrangeMultiplier {
    /// Applies `λ ← λ + ρ·C`; a non-finite constraint leaves `λ` unchanged and returns false.
    pub fn update(&mut self, constraint: f64) -> bool {
        if !constraint.is_finite() {
            return false;
        }
        self.value += self.rho * constraint;
        true
    }
}
