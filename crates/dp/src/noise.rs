//! Calibrated noise: a true value, a sensitivity and an epsilon in; a noisy value and its
//! interval out.
//!
//! Counts get integer discrete Laplace noise directly. Sums of real numbers are first put on a
//! grid of step `γ`, a power of two no larger than 1/1024 of the noise scale; the noise is
//! then drawn in grid steps, so the released value is an exact multiple of `γ` and its
//! floating-point representation says nothing about the true sum. Rounding can move two
//! neighbouring sums one step further apart, so the sensitivity in steps is `Δ/γ + 1`.

use crate::sampler::{Rational, Sampler};
use crate::{Error, Result};

/// The discrete Laplace mechanism for one released value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Laplace {
    /// How much one person can change the value (L1).
    pub sensitivity: f64,
    /// The epsilon this value spends.
    pub epsilon: f64,
}

/// A released value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noisy {
    /// The noisy value.
    pub value: f64,
    /// Half the width of the interval around `value` that holds the true value with the
    /// requested confidence.
    pub half_width: f64,
}

impl Noisy {
    /// The interval `[value - half_width, value + half_width]`.
    pub fn interval(&self) -> (f64, f64) {
        (self.value - self.half_width, self.value + self.half_width)
    }
}

impl Laplace {
    /// The mechanism; both numbers must be positive and finite.
    ///
    /// # Errors
    /// [`Error::Parameter`] otherwise.
    pub fn new(sensitivity: f64, epsilon: f64) -> Result<Self> {
        if !(sensitivity.is_finite() && sensitivity > 0.0) {
            return Err(Error::Parameter(format!("sensitivity {sensitivity} must be positive")));
        }
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(Error::Parameter(format!("epsilon {epsilon} must be positive")));
        }
        Ok(Self { sensitivity, epsilon })
    }

    /// The noise scale `Δ/ε`.
    pub fn scale(&self) -> f64 {
        self.sensitivity / self.epsilon
    }

    /// A noisy integer (a count): `value + Z`, `Z ~ DLap(Δ/ε)`.
    ///
    /// # Errors
    /// [`Error::Random`] if the random source fails.
    pub fn integer(&self, sampler: &mut Sampler, value: i64, confidence: f64) -> Result<Noisy> {
        let scale = Rational::at_least(self.scale())?;
        let z = sampler.discrete_laplace(scale)?;
        let released = value.checked_add(z).ok_or_else(|| Error::Parameter("count out of range".into()))?;
        Ok(Noisy { value: released as f64, half_width: half_width(scale.to_f64(), confidence) as f64 })
    }

    /// The grid step used for real values: the largest power of two at most `scale / 1024`.
    pub fn grid(&self) -> f64 {
        let exponent = (self.scale() / 1024.0).log2().floor();
        2f64.powi(exponent.clamp(-1000.0, 1000.0) as i32)
    }

    /// A noisy real value (a sum), released on the grid of [`Laplace::grid`].
    ///
    /// # Errors
    /// [`Error::Parameter`] if the value is not finite or too large for the grid;
    /// [`Error::Random`] if the random source fails.
    pub fn real(&self, sampler: &mut Sampler, value: f64, confidence: f64) -> Result<Noisy> {
        if !value.is_finite() {
            return Err(Error::Parameter("a sum is not finite".into()));
        }
        let grid = self.grid();
        let steps = (value / grid).round();
        if steps.abs() >= (1u64 << 52) as f64 {
            return Err(Error::Parameter("a sum is too large for its noise grid".into()));
        }
        let scale = Rational::at_least((self.sensitivity / grid + 1.0) / self.epsilon)?;
        let z = sampler.discrete_laplace(scale)?;
        let released = (steps as i64).checked_add(z).ok_or_else(|| Error::Parameter("sum out of range".into()))?;
        let half = half_width(scale.to_f64(), confidence) as f64 * grid + grid / 2.0;
        Ok(Noisy { value: released as f64 * grid, half_width: half })
    }
}

/// The smallest `m` with `P(|Z| > m) <= 1 - confidence` for `Z ~ DLap(scale)`:
/// `P(|Z| > m) = 2 e^{-(m+1)/t} / (1 + e^{-1/t})`.
pub fn half_width(scale: f64, confidence: f64) -> u64 {
    let tail = (1.0 - confidence).clamp(1e-12, 1.0);
    let m = scale * (2.0 / (tail * (1.0 + (-1.0 / scale).exp()))).ln() - 1.0;
    m.ceil().max(0.0) as u64
}

/// The smallest count a group must show, with noise of `scale` on it, so that a group made of
/// one person's rows passes with probability at most `delta / groups_per_person` (at most
/// `delta` over all the groups that person is in): `1 + ⌈scale · ln(groups / δ)⌉`, from
/// `P(Z >= m) <= e^{-m/t}`.
pub fn threshold(scale: f64, groups_per_person: u64, delta: f64) -> f64 {
    1.0 + (scale * (groups_per_person.max(1) as f64 / delta).ln()).ceil()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn half_width_matches_the_tail() {
        // scale 1: P(|Z| > m) = 2e^{-(m+1)} / (1 + e^{-1}); the first m with that <= 0.05 is 3.
        assert_eq!(half_width(1.0, 0.95), 3);
        let tail = |m: f64, t: f64| 2.0 * (-(m + 1.0) / t).exp() / (1.0 + (-1.0 / t).exp());
        for t in [0.5, 2.0, 10.0, 1000.0] {
            let m = half_width(t, 0.95) as f64;
            assert!(tail(m, t) <= 0.05 + 1e-12, "scale {t}: m {m}");
            assert!(m == 0.0 || tail(m - 1.0, t) > 0.05, "scale {t}: m {m} is not the smallest");
        }
    }

    #[test]
    fn reals_land_on_the_grid() {
        let mechanism = Laplace::new(100.0, 0.5).unwrap();
        let grid = mechanism.grid();
        assert!(grid <= mechanism.scale() / 1024.0 && grid > mechanism.scale() / 2048.0);
        let mut sampler = Sampler::new();
        for _ in 0..100 {
            let noisy = mechanism.real(&mut sampler, 12_345.678_9, 0.95).unwrap();
            assert_eq!((noisy.value / grid).fract(), 0.0, "{} is not a multiple of {grid}", noisy.value);
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Laplace::new(0.0, 1.0).is_err());
        assert!(Laplace::new(1.0, f64::NAN).is_err());
        assert!(Laplace::new(1.0, 1.0).unwrap().real(&mut Sampler::new(), f64::INFINITY, 0.95).is_err());
    }

    #[test]
    fn thresholds_grow_with_noise_and_groups() {
        assert_eq!(threshold(1.0, 1, 1e-6), 1.0 + (1e6f64).ln().ceil());
        assert!(threshold(4.0, 1, 1e-6) > threshold(1.0, 1, 1e-6));
        assert!(threshold(1.0, 5, 1e-6) > threshold(1.0, 1, 1e-6));
    }
}
