//! What a sequence of answers costs together: each dp answer is a pure ε charge (discrete
//! Laplace) or a ρ charge (discrete Gaussian, zero-concentrated dp), plus the δ of its group
//! selection; [`Loss::guarantee`] turns their sum into one (ε, δ) statement.
//!
//! Two valid bounds, the smaller taken:
//! - **basic composition**: the ε of pure charges add up; ρ charges add up and are converted
//!   once;
//! - **zCDP composition**: an ε-dp answer is also `ε²/2`-zCDP (Bun and Steinke 2016,
//!   Proposition 1.4), so all charges add up as ρ and are converted once. Many small answers
//!   cost far less this way: a hundred answers at ε = 0.1 are ε ≈ 4.9 rather than 10.
//!
//! Group selection (releasing a group only when its noisy count of people passes a threshold)
//! adds its δ either way: with probability at least `1 − δ` it behaves as the noisy count alone
//! (Bun and Steinke's approximate zCDP), so those δ add up beside everything else.
//!
//! ρ is converted to (ε, δ) at [`CONVERSION_DELTA`] with the smaller of Bun and Steinke's
//! `ρ + 2√(ρ·ln(1/δ))` and Canonne, Kamath and Steinke's (2020, Corollary 13)
//! `αρ + (ln(1/δ) + α·ln(1 − 1/α) − ln(α − 1)) / (α − 1)`, which holds for every `α > 1`
//! and is minimized here over a fine grid of α (any α gives a valid bound).

/// The δ spent converting a zCDP total to (ε, δ): the chance, at most, that the composed
/// answers say more about one person than ε.
pub const CONVERSION_DELTA: f64 = 1e-7;

/// The privacy loss of a set of charges, before conversion.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Loss {
    /// Sum of the pure ε charges.
    pub epsilon: f64,
    /// Sum of their squares (for zCDP composition).
    pub epsilon_squared: f64,
    /// Sum of the ρ charges.
    pub rho: f64,
    /// Sum of the group selections' δ.
    pub delta: f64,
}

/// What a set of charges guarantees: (ε, δ)-differential privacy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guarantee {
    /// ε.
    pub epsilon: f64,
    /// δ: group selection's, plus the conversion's where ρ was converted.
    pub delta: f64,
}

impl Loss {
    /// One answer's charge: `epsilon` (pure, 0 for none), `rho` (0 for none) and `delta`.
    pub fn charge(epsilon: f64, rho: f64, delta: f64) -> Self {
        Self { epsilon, epsilon_squared: epsilon * epsilon, rho, delta }
    }

    /// Both sets of charges together.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            epsilon: self.epsilon + other.epsilon,
            epsilon_squared: self.epsilon_squared + other.epsilon_squared,
            rho: self.rho + other.rho,
            delta: self.delta + other.delta,
        }
    }

    /// The (ε, δ) these charges guarantee together: the smaller of basic and zCDP composition.
    pub fn guarantee(&self) -> Guarantee {
        let basic = self.epsilon + epsilon_of_rho(self.rho, CONVERSION_DELTA);
        let zcdp = epsilon_of_rho(self.rho + self.epsilon_squared / 2.0, CONVERSION_DELTA);
        if self.rho == 0.0 && basic <= zcdp {
            Guarantee { epsilon: basic, delta: self.delta }
        } else {
            Guarantee { epsilon: basic.min(zcdp), delta: self.delta + CONVERSION_DELTA }
        }
    }
}

/// The ε of (ε, δ)-dp that ρ-zCDP implies; 0 for ρ = 0.
pub fn epsilon_of_rho(rho: f64, delta: f64) -> f64 {
    if rho <= 0.0 {
        return 0.0;
    }
    let log = (1.0 / delta).ln();
    let mut best = rho + 2.0 * (rho * log).sqrt();
    // α from 1 + 10⁻⁴ to 10⁶, 64 points per decade of α − 1.
    for i in 0..=640 {
        let alpha = 1.0 + 10f64.powf(-4.0 + f64::from(i) / 64.0);
        let epsilon = alpha * rho + (log + alpha * (1.0 - 1.0 / alpha).ln() - (alpha - 1.0).ln()) / (alpha - 1.0);
        if epsilon.is_finite() {
            best = best.min(epsilon);
        }
    }
    best.max(0.0)
}

/// The largest ρ whose conversion stays within `epsilon`, by bisection (for showing what a
/// pure-ε cap allows in ρ).
pub fn rho_within(epsilon: f64, delta: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, epsilon.max(0.0));
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if epsilon_of_rho(mid, delta) <= epsilon { lo = mid } else { hi = mid }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_is_never_looser_than_bun_steinke_and_tightens_it() {
        for rho in [1e-4, 0.01, 0.5, 2.0] {
            let bs = rho + 2.0 * (rho * (1.0 / CONVERSION_DELTA).ln()).sqrt();
            let e = epsilon_of_rho(rho, CONVERSION_DELTA);
            assert!(e <= bs && e > rho, "ρ {rho}: {e} vs {bs}");
        }
        // CKS20's bound is visibly tighter at moderate ρ.
        assert!(epsilon_of_rho(0.5, CONVERSION_DELTA) < 0.93 * (0.5 + 2.0 * (0.5 * 1e7f64.ln()).sqrt()));
    }

    #[test]
    fn one_pure_charge_costs_its_epsilon() {
        let g = Loss::charge(1.0, 0.0, 1e-7).guarantee();
        assert_eq!(g, Guarantee { epsilon: 1.0, delta: 1e-7 });
    }

    #[test]
    fn many_small_pure_charges_compose_below_their_sum() {
        let mut loss = Loss::default();
        for _ in 0..100 {
            loss = loss.plus(Loss::charge(0.1, 0.0, 0.0));
        }
        let g = loss.guarantee();
        assert!(g.epsilon < 6.0 && g.epsilon > 2.0, "{g:?}");
        assert_eq!(g.delta, CONVERSION_DELTA);
    }

    #[test]
    fn rho_within_inverts_the_conversion() {
        for epsilon in [0.5, 1.0, 3.0, 10.0] {
            let rho = rho_within(epsilon, CONVERSION_DELTA);
            assert!((epsilon_of_rho(rho, CONVERSION_DELTA) - epsilon).abs() < 1e-9, "ε {epsilon}");
        }
    }
}
