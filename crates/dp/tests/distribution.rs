//! Statistical tests of the sampler and the mechanisms. Each check allows for sampling error
//! with a margin whose chance of a false failure is below one in a billion, so they do not
//! flake; each would catch noise of the wrong shape or size (the last test proves it can fail).

#![allow(clippy::unwrap_used)]

use veil_dp::noise::{gaussian_half_width, half_width};
use veil_dp::{Mechanism, Rational, Sampler};

const N: usize = 200_000;

fn samples(scale: Rational) -> Vec<i64> {
    let mut sampler = Sampler::new();
    (0..N).map(|_| sampler.discrete_laplace(scale).unwrap()).collect()
}

/// `P(Z = z)` for `Z ~ DLap(t)`.
fn pmf(z: i64, t: f64) -> f64 {
    let q = (-1.0 / t).exp();
    (1.0 - q) / (1.0 + q) * q.powi(z.unsigned_abs() as i32)
}

#[test]
fn discrete_laplace_matches_its_exact_distribution() {
    for scale in [Rational { num: 3, den: 2 }, Rational { num: 1, den: 3 }, Rational { num: 7, den: 1 }] {
        let t = scale.to_f64();
        let draws = samples(scale);
        // Chi-square over the values with an expected count of at least 50, tails pooled.
        let reach = (1..).take_while(|&z| pmf(z, t) * N as f64 >= 50.0).last().unwrap_or(0);
        let mut observed = vec![0usize; 2 * reach as usize + 3];
        for &z in &draws {
            let bin = if z < -reach {
                0
            } else if z > reach {
                observed.len() - 1
            } else {
                (z + reach + 1) as usize
            };
            observed[bin] += 1;
        }
        let central: f64 = (-reach..=reach).map(|z| pmf(z, t)).sum();
        let mut expected: Vec<f64> = vec![(1.0 - central) / 2.0];
        expected.extend((-reach..=reach).map(|z| pmf(z, t)));
        expected.push((1.0 - central) / 2.0);
        let chi2: f64 = observed
            .iter()
            .zip(&expected)
            .filter(|(_, p)| **p * N as f64 >= 5.0)
            .map(|(&o, &p)| (o as f64 - p * N as f64).powi(2) / (p * N as f64))
            .sum();
        let df = observed.len() as f64;
        // Far beyond the 1 - 1e-9 quantile of chi-square for these degrees of freedom.
        let limit = df + 12.0 * (2.0 * df).sqrt() + 40.0;
        assert!(chi2 < limit, "scale {t}: chi-square {chi2:.1} over {df} bins (limit {limit:.1})");
    }
}

#[test]
fn mean_and_variance_match_theory() {
    for scale in [Rational { num: 5, den: 2 }, Rational { num: 40, den: 1 }] {
        let t = scale.to_f64();
        let draws = samples(scale);
        let q = (-1.0 / t).exp();
        let variance = 2.0 * q / (1.0 - q).powi(2);
        let mean = draws.iter().map(|&z| z as f64).sum::<f64>() / N as f64;
        let var = draws.iter().map(|&z| (z as f64 - mean).powi(2)).sum::<f64>() / (N - 1) as f64;
        assert!(mean.abs() < 7.0 * (variance / N as f64).sqrt(), "scale {t}: mean {mean}");
        // The sample variance of a Laplace-like law has relative spread about sqrt(5/N) ≈ 0.5%.
        assert!((var / variance - 1.0).abs() < 0.05, "scale {t}: variance {var}, theory {variance}");
    }
}

#[test]
fn large_scales_do_not_overflow_and_intervals_cover() {
    let scale = Rational::at_least(1.0e9).unwrap();
    let mut sampler = Sampler::new();
    let width = half_width(scale.to_f64(), 0.95) as i64;
    let inside = (0..20_000).filter(|_| sampler.discrete_laplace(scale).unwrap().abs() <= width).count();
    // 95% expected; 20,000 draws have a standard error of 0.15%.
    assert!((0.94..0.96).contains(&(inside as f64 / 20_000.0)), "coverage {inside}/20000");
}

#[test]
fn uniform_draws_are_uniform() {
    let mut sampler = Sampler::new();
    let mut counts = [0usize; 10];
    for _ in 0..N {
        counts[sampler.uniform_below(10).unwrap() as usize] += 1;
    }
    let expected = N as f64 / 10.0;
    let chi2: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
    assert!(chi2 < 60.0, "chi-square {chi2:.1} over 10 bins");
}

/// The ratio of the output distributions on two neighbouring inputs, bin by bin, may not
/// exceed `e^ε` beyond sampling error (in the style of Google's DP stochastic tester).
fn worst_ratio_excess(mechanism: Mechanism, epsilon: f64) -> f64 {
    let mut sampler = Sampler::new();
    let run = |sampler: &mut Sampler, value: i64| {
        let mut hist = std::collections::HashMap::<i64, usize>::new();
        for _ in 0..N {
            *hist.entry(mechanism.integer(sampler, value, 0.95).unwrap().value as i64).or_default() += 1;
        }
        hist
    };
    let (d, d_prime) = (run(&mut sampler, 10), run(&mut sampler, 11));
    let mut worst = f64::NEG_INFINITY;
    for (x, &a) in &d {
        let b = *d_prime.get(x).unwrap_or(&0);
        if a.min(b) < 2_000 {
            continue; // too few draws to judge this bin
        }
        let (p, q) = (a as f64 / N as f64, b as f64 / N as f64);
        // Seven standard errors on each estimate.
        let slack = 7.0 * ((p / N as f64).sqrt() + epsilon.exp() * (q / N as f64).sqrt());
        worst = worst.max(p - epsilon.exp() * q - slack).max(q - epsilon.exp() * p - slack);
    }
    worst
}

#[test]
fn the_count_mechanism_respects_e_to_the_epsilon_on_neighbouring_inputs() {
    let epsilon = 1.0;
    let honest = Mechanism::laplace(1.0, 1, epsilon).unwrap();
    assert!(worst_ratio_excess(honest, epsilon) <= 0.0, "the mechanism leaks more than epsilon");
    // The check can fail: noise for twice the epsilon is caught.
    let leaky = Mechanism::laplace(1.0, 1, 2.0 * epsilon).unwrap();
    assert!(worst_ratio_excess(leaky, epsilon) > 0.0, "the tester cannot see a leak of 2 epsilon");
}

/// `P(Z = z)` for the discrete Gaussian with parameter σ.
fn gaussian_pmf(sigma: f64) -> impl Fn(i64) -> f64 {
    let f = move |z: i64| (-(z as f64).powi(2) / (2.0 * sigma * sigma)).exp();
    let reach = (40.0 * sigma) as i64 + 10;
    let total: f64 = (-reach..=reach).map(f).sum();
    move |z| f(z) / total
}

#[test]
fn discrete_gaussian_matches_its_exact_distribution() {
    let mut sampler = Sampler::new();
    for variance in [Rational { num: 9, den: 4 }, Rational { num: 1, den: 3 }, Rational { num: 49, den: 1 }] {
        let pmf = gaussian_pmf(variance.to_f64().sqrt());
        let draws: Vec<i64> = (0..N).map(|_| sampler.discrete_gaussian(variance).unwrap()).collect();
        let reach = (1..).take_while(|&z| pmf(z) * N as f64 >= 50.0).last().unwrap_or(0);
        let mut chi2 = 0.0f64;
        let mut bins = 0.0f64;
        for z in -reach..=reach {
            let observed = draws.iter().filter(|&&d| d == z).count() as f64;
            let expected = pmf(z) * N as f64;
            chi2 += (observed - expected).powi(2) / expected;
            bins += 1.0;
        }
        let limit = bins + 12.0 * (2.0 * bins).sqrt() + 40.0;
        assert!(chi2 < limit, "σ² {variance:?}: chi-square {chi2:.1} over {bins} bins (limit {limit:.1})");
        let mean = draws.iter().map(|&z| z as f64).sum::<f64>() / N as f64;
        let var: f64 = draws.iter().map(|&z| (z as f64).powi(2)).sum::<f64>() / N as f64;
        let exact: f64 = (-reach * 3..=reach * 3).map(|z| (z as f64).powi(2) * pmf(z)).sum();
        assert!(mean.abs() < 7.0 * (exact / N as f64).sqrt(), "mean {mean}");
        assert!((var / exact - 1.0).abs() < 0.05, "variance {var}, exact {exact}");
    }
}

#[test]
fn gaussian_intervals_cover_at_large_scales() {
    let sigma = 3.0e6;
    let variance = Rational::at_least(sigma * sigma).unwrap();
    let mut sampler = Sampler::new();
    let width = gaussian_half_width(variance.to_f64().sqrt(), 0.95) as i64;
    let inside = (0..20_000).filter(|_| sampler.discrete_gaussian(variance).unwrap().abs() <= width).count();
    assert!((0.94..0.96).contains(&(inside as f64 / 20_000.0)), "coverage {inside}/20000");
}

/// The Rényi divergence of order `alpha` between a mechanism's outputs on two neighbouring
/// counts, estimated from histograms over the bins with enough draws on both sides. Merging
/// the thin tails can only lower a divergence, so an estimate above `alpha·ρ` beyond sampling
/// error is a leak.
fn renyi_estimate(mechanism: Mechanism, alpha: f64) -> f64 {
    let mut sampler = Sampler::new();
    let mut run = |value: i64| {
        let mut hist = std::collections::HashMap::<i64, f64>::new();
        for _ in 0..N {
            *hist.entry(mechanism.integer(&mut sampler, value, 0.95).unwrap().value as i64).or_default() += 1.0;
        }
        hist
    };
    let (p, q) = (run(10), run(11));
    let (mut sum, mut tail_p, mut tail_q) = (0.0, 0.0, 0.0);
    for (x, &a) in &p {
        let b = q.get(x).copied().unwrap_or(0.0);
        if a.min(b) < 1_000.0 {
            tail_p += a;
            tail_q += b;
            continue;
        }
        sum += (a / N as f64).powf(alpha) * (b / N as f64).powf(1.0 - alpha);
    }
    tail_q += q.iter().filter(|(x, _)| !p.contains_key(x)).map(|(_, b)| b).sum::<f64>();
    if tail_p > 0.0 && tail_q > 0.0 {
        sum += (tail_p / N as f64).powf(alpha) * (tail_q / N as f64).powf(1.0 - alpha);
    }
    sum.ln() / (alpha - 1.0)
}

#[test]
fn the_gaussian_count_mechanism_respects_its_rho_on_neighbouring_inputs() {
    let rho = 0.125; // σ = 2
    let honest = Mechanism::gaussian(1.0, 1, rho).unwrap();
    for alpha in [2.0, 3.0] {
        let d = renyi_estimate(honest, alpha);
        // Exact: α·ρ; sampling error on 200,000 draws per side is a few percent.
        assert!(d <= 1.25 * alpha * rho, "order {alpha}: divergence {d:.4} above {:.4}", alpha * rho);
    }
    // The check can fail: half the noise (four times the ρ) is caught.
    let leaky = Mechanism::gaussian(1.0, 1, 4.0 * rho).unwrap();
    let d = renyi_estimate(leaky, 2.0);
    assert!(d > 1.25 * 2.0 * rho, "the tester cannot see half the noise: {d:.4}");
}
