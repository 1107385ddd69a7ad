//! Exact discrete Laplace sampling.
//!
//! Written here rather than taken from a library, for a reason: the reviewed implementation in
//! Rust (the `opendp` crate) draws its bits from OpenSSL, which it builds from source, or else
//! from a user-space generator of an old `rand`, and brings a large tree of numeric crates. The
//! algorithm is short and exact; this module follows the paper line by line, draws every bit
//! from the OS CSPRNG through `ring`, and `tests/distribution.rs` checks the result against
//! the exact probabilities.
//!
//! Canonne, Kamath, Steinke. *The Discrete Gaussian for Differential Privacy*, NeurIPS 2020,
//! arXiv:2004.00010: Algorithm 1 (`Bernoulli(exp(-γ))`) and Algorithm 2 (discrete Laplace).
//! Every probability is a ratio of integers; no floating point is used.

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
    /// Denominator used for [`Rational::at_least`]: scales are kept to 2⁻²⁰ of a unit.
    const GRID: u64 = 1 << 20;

    /// The smallest rational on a 2⁻²⁰ grid that is at least `x` (so noise is never smaller
    /// than asked for).
    ///
    /// # Errors
    /// [`Error::Parameter`] if `x` is not positive and finite or too large.
    pub fn at_least(x: f64) -> Result<Self> {
        if !(x.is_finite() && x > 0.0) {
            return Err(Error::Parameter(format!("scale {x} must be positive and finite")));
        }
        let scaled = (x * Self::GRID as f64).ceil();
        if scaled >= (1u64 << 52) as f64 {
            return Err(Error::Parameter(format!("scale {x} is too large")));
        }
        Ok(Self { num: (scaled as u64).max(1), den: Self::GRID })
    }

    /// The value as a float, for reporting.
    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
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
}
