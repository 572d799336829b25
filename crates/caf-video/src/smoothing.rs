//! Causal smoothing of a track's valence and arousal.

/// Half a second: a reading settles within about a second and a half
/// (three time constants), and a frame's noise is spread over about 15
/// frames at 30 frames a second.
pub const DEFAULT_TIME_CONSTANT_S: f64 = 0.5;

/// An exponential moving average in time: each reading pulls the smoothed
/// value toward it by `1 − exp(−Δt / τ)`, where `Δt` is the time since the
/// previous reading and `τ` the time constant. It reads only the past.
///
/// What it costs, in time: after a step, the output has covered 63 % of it
/// after `τ`, 95 % after `3τ`; on a steady ramp it trails the readings by
/// `τ`. What it gives: at a frame interval `Δt`, the variance of
/// independent frame-to-frame noise is multiplied by `α / (2 − α)` with
/// `α = 1 − exp(−Δt / τ)` (0.034 at 30 frames a second and τ = 0.5 s).
/// Readings further apart (a track missing frames) pull harder, as they
/// should: the old value is older. `τ = 0` passes readings through.
#[derive(Debug, Clone, PartialEq)]
pub struct Smoother {
    time_constant_s: f64,
    last: Option<(f64, [f64; 2])>,
}

impl Smoother {
    /// `None` unless `time_constant_s` is finite and not negative.
    pub fn new(time_constant_s: f64) -> Option<Self> {
        (time_constant_s.is_finite() && time_constant_s >= 0.0).then_some(Self {
            time_constant_s,
            last: None,
        })
    }

    pub fn time_constant_s(&self) -> f64 {
        self.time_constant_s
    }

    /// The smoothed value after a reading at `time_s`; the first reading is
    /// taken as it is. A reading at or before the previous one's time (a
    /// repeated timestamp) does not move the value.
    pub fn update(&mut self, time_s: f64, reading: [f32; 2]) -> [f32; 2] {
        let reading = reading.map(f64::from);
        let smoothed = match self.last {
            None => reading,
            Some((before, value)) => {
                let elapsed = (time_s - before).max(0.0);
                let pull = if self.time_constant_s == 0.0 {
                    1.0
                } else {
                    1.0 - (-elapsed / self.time_constant_s).exp()
                };
                [0, 1].map(|axis| value[axis] + pull * (reading[axis] - value[axis]))
            }
        };
        let time_s = self.last.map_or(time_s, |(before, _)| before.max(time_s));
        self.last = Some((time_s, smoothed));
        smoothed.map(|v| v as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS: f64 = 30.0;

    #[test]
    fn a_step_is_63_percent_done_after_one_time_constant() {
        let mut smoother = Smoother::new(0.5).expect("valid");
        smoother.update(0.0, [0.0, 0.0]);
        let mut crossed = None;
        for frame in 1..=90 {
            let t = frame as f64 / FPS;
            let [v, a] = smoother.update(t, [1.0, -1.0]);
            assert!((v + a).abs() < 1e-6, "both axes alike");
            if crossed.is_none() && f64::from(v) >= 1.0 - (-1.0f64).exp() - 1e-6 {
                crossed = Some(t);
            }
        }
        let crossed = crossed.expect("reaches 63 %");
        assert!((crossed - 0.5).abs() <= 1.0 / FPS, "63 % after {crossed} s, not 0.5 s");
    }

    #[test]
    fn noise_shrinks_as_stated() {
        let mut smoother = Smoother::new(0.5).expect("valid");
        // Deterministic ±1 noise with no correlation between frames (a
        // linear congruential sequence's sign).
        let mut state = 12345u64;
        let mut outputs = Vec::new();
        for frame in 0..30_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = if state >> 63 == 1 { 1.0 } else { -1.0 };
            let [v, _] = smoother.update(frame as f64 / FPS, [noise, 0.0]);
            if frame > 300 {
                outputs.push(f64::from(v));
            }
        }
        let variance = outputs.iter().map(|v| v * v).sum::<f64>() / outputs.len() as f64;
        let alpha = 1.0 - (-1.0 / FPS / 0.5f64).exp();
        let stated = alpha / (2.0 - alpha);
        assert!(
            (variance / stated - 1.0).abs() < 0.1,
            "variance {variance}, stated {stated}"
        );
    }

    #[test]
    fn zero_passes_through_and_bad_constants_are_refused() {
        let mut raw = Smoother::new(0.0).expect("valid");
        raw.update(0.0, [0.5, 0.5]);
        assert_eq!(raw.update(0.1, [-0.25, 1.0]), [-0.25, 1.0]);
        assert!(Smoother::new(-1.0).is_none());
        assert!(Smoother::new(f64::NAN).is_none());
        assert!(Smoother::new(f64::INFINITY).is_none());
    }

    #[test]
    fn a_repeated_or_earlier_time_does_not_move_the_value() {
        let mut smoother = Smoother::new(0.5).expect("valid");
        smoother.update(1.0, [0.0, 0.0]);
        assert_eq!(smoother.update(1.0, [1.0, 1.0]), [0.0, 0.0]);
        assert_eq!(smoother.update(0.5, [1.0, 1.0]), [0.0, 0.0]);
        // Time resumes from the latest reading.
        let [v, _] = smoother.update(1.5, [1.0, 1.0]);
        assert!((f64::from(v) - (1.0 - (-1.0f64).exp())).abs() < 1e-6);
    }
}
