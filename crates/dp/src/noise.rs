//! Calibrated noise: a true value, how much one person can move it, and a privacy parameter
//! in; a noisy value and its interval out.
//!
//! Two mechanisms, each exact on the integers:
//! - **discrete Laplace** for pure ε-differential privacy, calibrated to the L1 sensitivity
//!   (scale `Δ₁/ε`);
//! - **discrete Gaussian** for ρ-zero-concentrated differential privacy (Bun and Steinke 2016;
//!   Canonne, Kamath and Steinke 2020), calibrated to the L2 sensitivity (`σ = Δ₂/√(2ρ)`).
//!   Where one person moves many released values a little, L2 grows with the square root of
//!   their number where L1 grows with the number itself, so the Gaussian needs less noise.
//!
//! Counts get integer noise directly. Sums of real numbers are first put on a grid of step
//! `γ`, a power of two no larger than 1/1024 of the noise scale; the noise is then drawn in grid
//! steps, so the released value is an exact multiple of `γ` and its floating-point
//! representation says nothing about the true sum (Mironov 2012). Rounding can move each of
//! two neighbouring sums one step further apart, so one value's sensitivity in steps is
//! `Δ/γ + 1`.

use crate::sampler::{Rational, Sampler};
use crate::{Error, Result};

/// Which noise a mechanism draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noise {
    /// Discrete Laplace; the budget is ε.
    Laplace,
    /// Discrete Gaussian; the budget is ρ (zCDP).
    Gaussian,
}

impl Noise {
    /// `laplace` or `gaussian`, as requests and metadata name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Laplace => "laplace",
            Self::Gaussian => "gaussian",
        }
    }
}

impl std::str::FromStr for Noise {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "laplace" => Ok(Self::Laplace),
            "gaussian" => Ok(Self::Gaussian),
            other => Err(Error::Parameter(format!("unknown noise `{other}`: laplace or gaussian"))),
        }
    }
}

/// The noise for one kind of released value: each value one person can move by at most
/// `per_value`, in at most `values` of the values (one per group they are in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mechanism {
    noise: Noise,
    per_value: f64,
    values: f64,
    budget: f64,
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

/// The scale of the noise that gives `budget` for values one person moves by `per_value` each,
/// `values` of them: the discrete Laplace scale `Δ₁/ε` or the discrete Gaussian `σ = Δ₂/√(2ρ)`.
fn scale_for(noise: Noise, per_value: f64, values: f64, budget: f64) -> f64 {
    match noise {
        Noise::Laplace => per_value * values / budget,
        Noise::Gaussian => per_value * values.sqrt() / (2.0 * budget).sqrt(),
    }
}

impl Mechanism {
    /// Pure ε-dp noise (discrete Laplace).
    ///
    /// # Errors
    /// [`Error::Parameter`] unless every number is positive and finite.
    pub fn laplace(per_value: f64, values: u64, epsilon: f64) -> Result<Self> {
        Self::new(Noise::Laplace, per_value, values, epsilon)
    }

    /// ρ-zCDP noise (discrete Gaussian).
    ///
    /// # Errors
    /// [`Error::Parameter`] unless every number is positive and finite.
    pub fn gaussian(per_value: f64, values: u64, rho: f64) -> Result<Self> {
        Self::new(Noise::Gaussian, per_value, values, rho)
    }

    /// The mechanism of `noise` spending `budget` (ε or ρ).
    ///
    /// # Errors
    /// [`Error::Parameter`] unless every number is positive and finite.
    pub fn new(noise: Noise, per_value: f64, values: u64, budget: f64) -> Result<Self> {
        if !(per_value.is_finite() && per_value > 0.0) {
            return Err(Error::Parameter(format!("sensitivity {per_value} must be positive")));
        }
        if values == 0 {
            return Err(Error::Parameter("a mechanism releases at least one value per person".into()));
        }
        if !(budget.is_finite() && budget > 0.0) {
            return Err(Error::Parameter(format!("privacy parameter {budget} must be positive")));
        }
        Ok(Self { noise, per_value, values: values as f64, budget })
    }

    /// Which noise this is.
    pub fn noise(&self) -> Noise {
        self.noise
    }

    /// The noise scale: the discrete Laplace scale, or the discrete Gaussian's σ.
    pub fn scale(&self) -> f64 {
        scale_for(self.noise, self.per_value, self.values, self.budget)
    }

    /// The exact parameter noise of `scale` is drawn with, rounded up to a rational: the
    /// discrete Laplace scale, or the discrete Gaussian's variance σ².
    fn exact(&self, scale: f64) -> Result<Rational> {
        match self.noise {
            Noise::Laplace => Rational::at_least(scale),
            Noise::Gaussian => Rational::at_least(scale * scale),
        }
    }

    /// The half-width at `confidence` of the noise drawn with `exact`.
    fn exact_half_width(&self, exact: Rational, confidence: f64) -> u64 {
        match self.noise {
            Noise::Laplace => half_width(exact.to_f64(), confidence),
            Noise::Gaussian => gaussian_half_width(exact.to_f64().sqrt(), confidence),
        }
    }

    /// One integer draw at `scale` and its half-width.
    fn draw(&self, sampler: &mut Sampler, scale: f64, confidence: f64) -> Result<(i64, u64)> {
        let exact = self.exact(scale)?;
        let z = match self.noise {
            Noise::Laplace => sampler.discrete_laplace(exact)?,
            Noise::Gaussian => sampler.discrete_gaussian(exact)?,
        };
        Ok((z, self.exact_half_width(exact, confidence)))
    }

    /// The scale in grid steps for real values on `grid`: rounding moves each value one step
    /// further at most.
    fn grid_scale(&self, grid: f64) -> f64 {
        scale_for(self.noise, self.per_value / grid + 1.0, self.values, self.budget)
    }

    /// A noisy integer (a count): `value + Z`.
    ///
    /// # Errors
    /// [`Error::Random`] if the random source fails.
    pub fn integer(&self, sampler: &mut Sampler, value: i64, confidence: f64) -> Result<Noisy> {
        let (z, half) = self.draw(sampler, self.scale(), confidence)?;
        let released = value.checked_add(z).ok_or_else(|| Error::Parameter("count out of range".into()))?;
        Ok(Noisy { value: released as f64, half_width: half as f64 })
    }

    /// The grid step used for real values: the largest power of two at most `scale / 1024`.
    pub fn grid(&self) -> f64 {
        let exponent = (self.scale() / 1024.0).log2().floor();
        2f64.powi(exponent.clamp(-1000.0, 1000.0) as i32)
    }

    /// A noisy real value (a sum), released on the grid of [`Mechanism::grid`].
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
        let (z, half) = self.draw(sampler, self.grid_scale(grid), confidence)?;
        let released = (steps as i64).checked_add(z).ok_or_else(|| Error::Parameter("sum out of range".into()))?;
        Ok(Noisy { value: released as f64 * grid, half_width: half as f64 * grid + grid / 2.0 })
    }

    /// The half-width of the interval a value would get, at `confidence`: as
    /// [`Mechanism::integer`] reports it for counts, [`Mechanism::real`] for sums.
    ///
    /// # Errors
    /// [`Error::Parameter`] if the scale cannot be represented.
    pub fn half_width(&self, real: bool, confidence: f64) -> Result<f64> {
        let of = |scale: f64| -> Result<f64> { Ok(self.exact_half_width(self.exact(scale)?, confidence) as f64) };
        if !real {
            return of(self.scale());
        }
        let grid = self.grid();
        Ok(of(self.grid_scale(grid))? * grid + grid / 2.0)
    }

    /// The least budget (ε or ρ) whose values get an interval no wider than `±half_width` at
    /// `confidence`, for values one person moves by `per_value` in `values` of them: accuracy
    /// asked for, turned into what it costs. Found by bisection over the budget, so the answer
    /// is within a part in a million of the least.
    ///
    /// # Errors
    /// [`Error::Parameter`] if no budget up to 10⁶ gives that accuracy.
    pub fn budget_for(
        noise: Noise,
        per_value: f64,
        values: u64,
        half_width: f64,
        real: bool,
        confidence: f64,
    ) -> Result<f64> {
        let fits = |budget: f64| -> Result<bool> {
            Ok(Self::new(noise, per_value, values, budget)?.half_width(real, confidence)? <= half_width)
        };
        let (mut lo, mut hi) = (1e-12f64, 1e6f64);
        if !(half_width.is_finite() && half_width > 0.0 && fits(hi)?) {
            return Err(Error::Parameter(format!("no budget gives a half-width of {half_width}")));
        }
        // Bisection in log space: budgets span many orders of magnitude.
        while hi / lo > 1.000_001 {
            let mid = (lo * hi).sqrt();
            if fits(mid)? { hi = mid } else { lo = mid }
        }
        Ok(hi)
    }

    /// The smallest noisy count of people a group must show so that a group made of one
    /// person's rows passes with probability at most `delta / values` (at most `delta` over all
    /// the groups that person is in), for a count of people noised by this mechanism (one per
    /// person and value): `1 + m` with `P(Z ≥ m) ≤ δ / values`. Discrete Laplace:
    /// `P(Z ≥ m) ≤ e^{-m/t}`; discrete Gaussian (σ-subgaussian, CKS20): `P(Z ≥ m) ≤ e^{-m²/2σ²}`.
    ///
    /// # Errors
    /// [`Error::Parameter`] if the scale cannot be represented.
    pub fn threshold(&self, delta: f64) -> Result<f64> {
        let log = (self.values / delta).ln();
        let exact = self.exact(self.scale())?.to_f64();
        let m = match self.noise {
            Noise::Laplace => exact * log,
            Noise::Gaussian => exact.sqrt() * (2.0 * log).sqrt(),
        };
        Ok(1.0 + m.ceil())
    }
}

/// The smallest `m` with `P(|Z| > m) <= 1 - confidence` for `Z ~ DLap(scale)`:
/// `P(|Z| > m) = 2 e^{-(m+1)/t} / (1 + e^{-1/t})`.
pub fn half_width(scale: f64, confidence: f64) -> u64 {
    let tail = (1.0 - confidence).clamp(1e-12, 1.0);
    let m = scale * (2.0 / (tail * (1.0 + (-1.0 / scale).exp()))).ln() - 1.0;
    m.ceil().max(0.0) as u64
}

/// The smallest `m` with `erfc(m / σ√2) <= 1 - confidence`, which bounds `P(|Z| > m)` for a
/// discrete Gaussian with parameter σ: its normalizing sum is at least `σ√(2π)` (Poisson
/// summation) and the tail sum beyond `m` is at most the integral from `m`. For large σ this is
/// the familiar `1.96σ` at 95%; it is never narrower than the truth.
pub fn gaussian_half_width(sigma: f64, confidence: f64) -> u64 {
    let tail = (1.0 - confidence).clamp(1e-12, 1.0);
    let covers = |m: f64| libm::erfc(m / (sigma * std::f64::consts::SQRT_2)) <= tail;
    // erfc(x) <= 1e-12 for x >= 5.2: 8σ always covers.
    let (mut lo, mut hi) = (0.0f64, (8.0 * sigma).ceil().max(1.0));
    if covers(lo) {
        return 0;
    }
    while hi - lo > 1.0 {
        let mid = ((lo + hi) / 2.0).floor();
        if covers(mid) { hi = mid } else { lo = mid }
    }
    hi as u64
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
    fn gaussian_half_width_bounds_the_exact_tail() {
        // The exact tail of the discrete Gaussian, summed.
        let tail = |m: i64, sigma: f64| {
            let f = |z: i64| (-(z as f64).powi(2) / (2.0 * sigma * sigma)).exp();
            let reach = (40.0 * sigma) as i64 + 10;
            let total: f64 = (-reach..=reach).map(f).sum();
            2.0 * ((m + 1)..=reach).map(f).sum::<f64>() / total
        };
        for sigma in [0.3, 1.0, 3.0, 20.0, 500.0] {
            let m = gaussian_half_width(sigma, 0.95);
            assert!(tail(m as i64, sigma) <= 0.05, "σ {sigma}: m {m} does not cover");
            // And is not loose: within a step or two of 1.96σ.
            assert!((m as f64) <= 1.96 * sigma + 2.0, "σ {sigma}: m {m} is too wide");
        }
    }

    #[test]
    fn reals_land_on_the_grid() {
        for mechanism in [Mechanism::laplace(25.0, 4, 0.5).unwrap(), Mechanism::gaussian(25.0, 4, 0.1).unwrap()] {
            let grid = mechanism.grid();
            assert!(grid <= mechanism.scale() / 1024.0 && grid > mechanism.scale() / 2048.0);
            let mut sampler = Sampler::new();
            for _ in 0..100 {
                let noisy = mechanism.real(&mut sampler, 12_345.678_9, 0.95).unwrap();
                assert_eq!((noisy.value / grid).fract(), 0.0, "{} is not a multiple of {grid}", noisy.value);
            }
        }
    }

    #[test]
    fn gaussian_noise_grows_with_the_root_of_the_values_a_person_moves() {
        let one = Mechanism::gaussian(1.0, 1, 0.5).unwrap();
        let four = Mechanism::gaussian(1.0, 4, 0.5).unwrap();
        assert!((one.scale() - 1.0).abs() < 1e-12, "σ = Δ₂/√(2ρ) = 1");
        assert!((four.scale() - 2.0).abs() < 1e-12);
        assert!((Mechanism::laplace(1.0, 4, 0.5).unwrap().scale() - 8.0).abs() < 1e-12);
    }

    #[test]
    fn the_budget_for_an_accuracy_gives_that_accuracy_and_no_more() {
        for noise in [Noise::Laplace, Noise::Gaussian] {
            for (per_value, values, h, real) in
                [(1.0, 1, 10.0, false), (5.0, 4, 50.0, false), (3000.0, 1, 20_000.0, true)]
            {
                let b = Mechanism::budget_for(noise, per_value, values, h, real, 0.95).unwrap();
                let at = |b: f64| Mechanism::new(noise, per_value, values, b).unwrap().half_width(real, 0.95).unwrap();
                assert!(at(b) <= h, "{noise:?}: {} > {h}", at(b));
                assert!(at(b * 0.99) > h || real, "{noise:?}: {b} is not the least");
            }
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Mechanism::laplace(0.0, 1, 1.0).is_err());
        assert!(Mechanism::laplace(1.0, 1, f64::NAN).is_err());
        assert!(Mechanism::gaussian(1.0, 0, 1.0).is_err());
        let m = Mechanism::laplace(1.0, 1, 1.0).unwrap();
        assert!(m.real(&mut Sampler::new(), f64::INFINITY, 0.95).is_err());
    }

    #[test]
    fn thresholds_grow_with_noise_and_groups() {
        let laplace = |values: u64, epsilon: f64| Mechanism::laplace(1.0, values, epsilon).unwrap();
        assert_eq!(laplace(1, 1.0).threshold(1e-6).unwrap(), 1.0 + (1e6f64).ln().ceil());
        assert!(laplace(1, 0.25).threshold(1e-6).unwrap() > laplace(1, 1.0).threshold(1e-6).unwrap());
        assert!(laplace(5, 1.0).threshold(1e-6).unwrap() > laplace(1, 1.0).threshold(1e-6).unwrap());
        // σ = 1: m = ⌈√(2 ln 1e6)⌉ = ⌈5.26⌉.
        assert_eq!(Mechanism::gaussian(1.0, 1, 0.5).unwrap().threshold(1e-6).unwrap(), 7.0);
    }
}
