//! The regressor `f_r` and the critic `f_c` of CAF, with the reference code's
//! module names so its weights import by prefix.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

use crate::dropout::{Dropout, DropoutRng};

/// Width of the critic's output `f_c(·)`.
pub const CRITIC_OUTPUTS: usize = 16;

/// `f_r`: dropout(0.5) → `lin0` (in→64) → ReLU → dropout(0.5) → `lin1` (64→8)
/// → ReLU → `va_regressor` (8→2). Outputs valence and arousal, unbounded.
#[derive(Debug, Clone)]
pub struct Regressor {
    lin0: Linear,
    lin1: Linear,
    va_regressor: Linear,
    dropout: Dropout,
}

impl Regressor {
    pub fn new(in_features: usize, dropout: &DropoutRng, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            lin0: linear(in_features, 64, vb.pp("lin0"))?,
            lin1: linear(64, 8, vb.pp("lin1"))?,
            va_regressor: linear(8, 2, vb.pp("va_regressor"))?,
            dropout: Dropout::new(0.5, dropout),
        })
    }

    /// A copy of this head that shares no weight with it ([`crate::VaNet::freeze`]).
    pub fn freeze(&self) -> Result<Self> {
        let copy = |linear: &Linear| -> Result<Linear> {
            Ok(Linear::new(
                crate::private_copy(linear.weight())?,
                linear.bias().map(crate::private_copy).transpose()?,
            ))
        };
        Ok(Self {
            lin0: copy(&self.lin0)?,
            lin1: copy(&self.lin1)?,
            va_regressor: copy(&self.va_regressor)?,
            dropout: self.dropout.clone(),
        })
    }
}

impl Regressor {
    /// Valence and arousal (`B×2`) and the 8-unit bottleneck they are read
    /// from (`B×8`, after its ReLU): a unit that is 0 on every input is dead,
    /// and two live units or fewer put every prediction on a line or a curve.
    pub fn forward_with_bottleneck_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let x = self.lin0.forward(&self.dropout.forward_t(x, train)?)?.relu()?;
        let bottleneck = self.lin1.forward(&self.dropout.forward_t(&x, train)?)?.relu()?;
        Ok((self.va_regressor.forward(&bottleneck)?, bottleneck))
    }
}

impl ModuleT for Regressor {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward_with_bottleneck_t(x, train)?.0)
    }
}

/// `f_c`: `last_linear` (in→64) → `lin1` (64→32) → dropout(0.2) → ReLU → `lin2` (32→16).
#[derive(Debug, Clone)]
pub struct Critic {
    last_linear: Linear,
    lin1: Linear,
    lin2: Linear,
    dropout: Dropout,
}

impl Critic {
    pub fn new(in_features: usize, dropout: &DropoutRng, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            last_linear: linear(in_features, 64, vb.pp("last_linear"))?,
            lin1: linear(64, 32, vb.pp("lin1"))?,
            lin2: linear(32, CRITIC_OUTPUTS, vb.pp("lin2"))?,
            dropout: Dropout::new(0.2, dropout),
        })
    }
}

impl ModuleT for Critic {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.lin1.forward(&self.last_linear.forward(x)?)?;
        let x = self.dropout.forward_t(&x, train)?.relu()?;
        self.lin2.forward(&x)
    }
}
