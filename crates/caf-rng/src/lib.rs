//! # caf-rng
//!
//! The deterministic random generator of caf-rs (SplitMix64).
//!
//! Shuffles, crops and synthetic faces must be identical for the same seed on
//! every machine and every version of this crate's dependencies, so the
//! generator is ours: a few lines whose output never changes.
//!
//! ```
//! use caf_rng::Rng;
//!
//! let mut a = Rng::derive(42, &[3, 1]); // seed 42, stream (epoch 3, sample 1)
//! let mut b = Rng::derive(42, &[3, 1]);
//! assert_eq!(a.next_u64(), b.next_u64());
//! let (mut first, mut second): (Vec<usize>, Vec<usize>) = ((0..10).collect(), (0..10).collect());
//! a.shuffle(&mut first);
//! b.shuffle(&mut second);
//! assert_eq!(first, second); // the same seed and stream, the same order on any machine
//! assert!(a.below(6) < 6 && (0.0..1.0).contains(&a.unit()));
//! ```

/// SplitMix64 (Steele, Lea & Flood 2014): 64 bits of state, full period.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for one of many streams derived from a seed (an epoch, a
    /// sample, a subject), independent of the order in which they are used.
    pub fn derive(seed: u64, stream: &[u64]) -> Self {
        let mut state = Rng::new(seed ^ 0x5851_f42d_4c95_7f2d);
        for &part in stream {
            state = Rng::new(state.next_u64() ^ part.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        state
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_sane_ranges() {
        let a: Vec<u64> = (0..5).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..5).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        let mut rng = Rng::derive(7, &[3, 1]);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
            counts[rng.below(4)] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
        assert_ne!(Rng::derive(7, &[3, 1]).next_u64(), Rng::derive(7, &[1, 3]).next_u64());
        let mut items: Vec<usize> = (0..10).collect();
        Rng::new(1).shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(items, sorted);
    }
}
