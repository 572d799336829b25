//! Reading a valence–arousal point on Russell's circumplex of affect:
//! intensity, quadrant, and the nearest emotion word.

use serde::Serialize;

/// Below this intensity (distance from the origin) a point reads as `neutral`.
pub const NEUTRAL_INTENSITY: f32 = 0.2;

/// The emotion words and their angles on the circumplex, in degrees
/// counter-clockwise from positive valence (arousal up), rounded from
/// Russell (1980), "A circumplex model of affect".
pub const EMOTIONS: [(&str, f32); 8] = [
    ("happy", 10.0),
    ("excited", 45.0),
    ("angry", 100.0),
    ("afraid", 125.0),
    ("sad", 205.0),
    ("bored", 245.0),
    ("calm", 300.0),
    ("content", 340.0),
];

/// A predicted (or labelled) point: valence and arousal, nominally in [-1, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Va {
    pub valence: f32,
    pub arousal: f32,
}

/// Which quarter of the plane a point lies in (zero counts as positive / high).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quadrant {
    PositiveHigh,
    NegativeHigh,
    NegativeLow,
    PositiveLow,
}

impl Quadrant {
    pub fn name(self) -> &'static str {
        match self {
            Quadrant::PositiveHigh => "positive-high",
            Quadrant::NegativeHigh => "negative-high",
            Quadrant::NegativeLow => "negative-low",
            Quadrant::PositiveLow => "positive-low",
        }
    }
}

impl Va {
    /// Distance from the origin.
    pub fn intensity(self) -> f32 {
        self.valence.hypot(self.arousal)
    }

    /// Angle in degrees in [0, 360), counter-clockwise from positive valence.
    pub fn angle(self) -> f32 {
        self.arousal.atan2(self.valence).to_degrees().rem_euclid(360.0)
    }

    pub fn quadrant(self) -> Quadrant {
        match (self.valence >= 0.0, self.arousal >= 0.0) {
            (true, true) => Quadrant::PositiveHigh,
            (false, true) => Quadrant::NegativeHigh,
            (false, false) => Quadrant::NegativeLow,
            (true, false) => Quadrant::PositiveLow,
        }
    }

    /// The word of [`EMOTIONS`] nearest in angle, or `neutral` when the
    /// intensity is below [`NEUTRAL_INTENSITY`].
    pub fn emotion(self) -> &'static str {
        if self.intensity() < NEUTRAL_INTENSITY || !self.intensity().is_finite() {
            return "neutral";
        }
        let angle = self.angle();
        let distance = |degrees: f32| {
            let d = (angle - degrees).rem_euclid(360.0);
            d.min(360.0 - d)
        };
        EMOTIONS
            .iter()
            .min_by(|a, b| distance(a.1).total_cmp(&distance(b.1)))
            .map_or("neutral", |(name, _)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn va(valence: f32, arousal: f32) -> Va {
        Va { valence, arousal }
    }

    #[test]
    fn every_word_reads_back_at_its_own_angle() {
        for (name, degrees) in EMOTIONS {
            let radians = degrees.to_radians();
            let point = va(0.8 * radians.cos(), 0.8 * radians.sin());
            assert_eq!(point.emotion(), name);
            assert!((point.intensity() - 0.8).abs() < 1e-6);
        }
    }

    #[test]
    fn quadrants_intensity_and_neutral_centre() {
        assert_eq!(va(0.5, 0.5).quadrant(), Quadrant::PositiveHigh);
        assert_eq!(va(-0.5, 0.5).quadrant(), Quadrant::NegativeHigh);
        assert_eq!(va(-0.5, -0.5).quadrant(), Quadrant::NegativeLow);
        assert_eq!(va(0.5, -0.5).quadrant(), Quadrant::PositiveLow);
        assert_eq!(va(0.0, 0.0).quadrant(), Quadrant::PositiveHigh);
        assert_eq!(va(0.3, 0.4).intensity(), 0.5);
        assert_eq!(va(0.1, -0.1).emotion(), "neutral");
        assert_eq!(va(f32::NAN, 0.5).emotion(), "neutral");
        assert_eq!(va(0.9, 0.05).emotion(), "happy");
        assert_eq!(va(-0.7, -0.3).emotion(), "sad");
        assert_eq!(va(0.9, -0.05).emotion(), "happy"); // 357°: wraps round to 10°
    }
}
