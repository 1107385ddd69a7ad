//! Exact discrete Laplace and discrete Gaussian sampling.
//!
//! Written here rather than taken from a library, for a reason: the reviewed implementation in
//! Rust (the `opendp` crate) draws its bits from OpenSSL, which it builds from source, or else
//! from a user-space generator of an old `rand`, and brings a large tree of numeric crates. The
//! algorithm is short and exact; this module follows the paper line by line, draws every bit
//! from the OS CSPRNG through `ring`, and `tests/distribution.rs` checks the result against
//! the exact probabilities.
//!
//! Canonne, Kamath, Steinke. *The Discrete Gaussian for Differential Privacy*, NeurIPS 2020,
//! arXiv:2004.00010: Algorithm 1 (`Bernoulli(exp(-γ))`), Algorithm 2 (discrete Laplace) and
//! Algorithm 3 (discrete Gaussian). Every probability is a ratio of integers; no floating point
//! is used.

use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

/// A positive rational `num / den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rational {
    /// Numerator.
    pub num: u64,
    /// Denominator, not zero.
    pub den: u64,
}

impl Rational {
    /// Finest denominator used for [`Rational::at_least`]: 2⁻²⁰ of a unit.
    const GRID: u64 = 1 << 20;
    /// Numerators stay below 2⁵², so the samplers' products fit in 128 bits.
    const LIMIT: f64 = (1u64 << 52) as f64;

    /// The smallest rational on a power-of-two grid that is at least `x` (so noise is never
    /// smaller than asked for): steps of 2⁻²⁰ while the numerator stays below 2⁵², coarser
    /// steps (down to whole units) for larger values.
    ///
    /// # Errors
    /// [`Error::Parameter`] if `x` is not positive and finite or not below 2⁵².
    pub fn at_least(x: f64) -> Result<Self> {
        if !(x.is_finite() && x > 0.0) {
            return Err(Error::Parameter(format!("scale {x} must be positive and finite")));
        }
        let mut den = Self::GRID;
        while den > 1 && (x * den as f64).ceil() >= Self::LIMIT {
            den /= 2;
        }
        let scaled = (x * den as f64).ceil();
        if scaled >= Self::LIMIT {
            return Err(Error::Parameter(format!("scale {x} is too large")));
        }
        Ok(Self { num: (scaled as u64).max(1), den })
    }

    /// The value as a float, for reporting.
    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// `⌊√(num/den)⌋`, exactly.
    fn floor_sqrt(self) -> u128 {
        let (n, d) = (u128::from(self.num), u128::from(self.den));
        let mut s = self.to_f64().sqrt() as u128;
        while (s + 1) * (s + 1) * d <= n {
            s += 1;
        }
        while s > 0 && s * s * d > n {
            s -= 1;
        }
        s
    }
}

/// Draws noise from the operating system's CSPRNG.
pub struct Sampler {
    rng: SystemRandom,
    buffer: [u8; 256],
    used: usize,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sampler")
    }
}

impl Sampler {
    /// A sampler on the system random source.
    pub fn new() -> Self {
        Self { rng: SystemRandom::new(), buffer: [0; 256], used: 256 }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        if self.used + N > self.buffer.len() {
            self.rng.fill(&mut self.buffer).map_err(|_| Error::Random)?;
            self.used = 0;
        }
        let mut out = [0; N];
        out.copy_from_slice(&self.buffer[self.used..self.used + N]);
        // Never reuse a byte.
        self.buffer[self.used..self.used + N].fill(0);
        self.used += N;
        Ok(out)
    }

    /// Uniform on `0..n` (`n > 0`), by rejection from the smallest power of two above `n`.
    pub fn uniform_below(&mut self, n: u128) -> Result<u128> {
        if n == 0 {
            return Err(Error::Parameter("uniform on an empty range".into()));
        }
        if n == 1 {
            return Ok(0);
        }
        let bits = 128 - (n - 1).leading_zeros();
        let mask = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
        loop {
            let candidate = u128::from_le_bytes(self.bytes::<16>()?) & mask;
            if candidate < n {
                return Ok(candidate);
            }
        }
    }

    /// `true` with probability `num / den` (`num <= den`, `den > 0`).
    fn bernoulli(&mut self, num: u128, den: u128) -> Result<bool> {
        Ok(self.uniform_below(den)? < num)
    }

    /// `true` with probability `exp(-num/den)`: CKS20 Algorithm 1.
    fn bernoulli_exp(&mut self, num: u128, den: u128) -> Result<bool> {
        if den == 0 {
            return Err(Error::Parameter("zero denominator".into()));
        }
        if num <= den {
            // γ = num/den ≤ 1: K = 1; while Bernoulli(γ/K) succeeds, K += 1; true iff K is odd.
            let mut k: u128 = 1;
            loop {
                let Some(scaled) = den.checked_mul(k) else {
                    return Err(Error::Parameter("exp(-γ) sampler overflow".into()));
                };
                if !self.bernoulli(num, scaled)? {
                    return Ok(k % 2 == 1);
                }
                k += 1;
            }
        }
        // γ > 1: floor(γ) independent Bernoulli(exp(-1)), then one Bernoulli(exp(-(γ - floor(γ)))).
        let whole = num / den;
        for _ in 0..whole {
            if !self.bernoulli_exp(1, 1)? {
                return Ok(false);
            }
        }
        self.bernoulli_exp(num % den, den)
    }

    /// Discrete Laplace with the given scale: `P(Z = z) ∝ exp(-|z| / scale)` on the integers.
    /// CKS20 Algorithm 2 with `scale = t / s`.
    ///
    /// # Errors
    /// [`Error::Random`] if the system random source fails.
    pub fn discrete_laplace(&mut self, scale: Rational) -> Result<i64> {
        let (t, s) = (u128::from(scale.num), u128::from(scale.den));
        if t == 0 || s == 0 {
            return Err(Error::Parameter("discrete Laplace scale must be positive".into()));
        }
        loop {
            let u = self.uniform_below(t)?;
            if !self.bernoulli_exp(u, t)? {
                continue;
            }
            let mut v: u128 = 0;
            while self.bernoulli_exp(1, 1)? {
                v += 1;
            }
            let x = u + t * v;
            let y = x / s;
            let negative = self.bernoulli(1, 2)?;
            if negative && y == 0 {
                continue;
            }
            let y = i64::try_from(y).map_err(|_| Error::Parameter("noise out of range".into()))?;
            return Ok(if negative { -y } else { y });
        }
    }

    /// Discrete Gaussian with variance parameter `sigma2` (σ²): `P(Z = z) ∝ exp(-z² / 2σ²)` on
    /// the integers. CKS20 Algorithm 3: a discrete Laplace proposal with scale `t = ⌊σ⌋ + 1`,
    /// kept with probability `exp(-(|Y| - σ²/t)² / 2σ²)`.
    ///
    /// # Errors
    /// [`Error::Random`] if the system random source fails.
    pub fn discrete_gaussian(&mut self, sigma2: Rational) -> Result<i64> {
        let (n, d) = (u128::from(sigma2.num), u128::from(sigma2.den));
        if n == 0 || d == 0 {
            return Err(Error::Parameter("discrete Gaussian variance must be positive".into()));
        }
        let t = sigma2.floor_sqrt() + 1;
        let proposal =
            Rational { num: u64::try_from(t).map_err(|_| Error::Parameter("variance too large".into()))?, den: 1 };
        loop {
            let y = self.discrete_laplace(proposal)?;
            // γ = (|Y| − σ²/t)² / 2σ² = (|Y|·d·t − n)² / (2·n·d·t²), all in integers. Numerators
            // stay below 2⁵², so the products fit unless |Y| is thousands of σ out, where
            // exp(−γ) is below 2⁻¹⁰⁰⁰⁰⁰⁰: such a proposal is rejected, as it would be.
            let gamma = u128::from(y.unsigned_abs())
                .checked_mul(d * t)
                .map(|a| a.abs_diff(n))
                .and_then(|a| a.checked_mul(a))
                .zip(n.checked_mul(d).and_then(|x| x.checked_mul(2 * t * t)));
            let Some((num, den)) = gamma else { continue };
            if self.bernoulli_exp(num, den)? {
                return Ok(y);
            }
        }
    }
}
