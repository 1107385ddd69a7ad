//! The grid of number bands and ranges in aggregate mode, in decimal: a band of width
//! w = m × 10ᵉ (m = 1, 2 or 5) holds `[k·w, (k+1)·w)`, each end the float nearest the decimal
//! k·w, which is the float a range's constant (`x >= 0.29`) is read as.
//!
//! Why: computed in floats, `floor(x / w)` and `k * w` disagreed with the ranges the guard
//! labels them as. `floor(0.29 / 0.01)` is 28, so a value of 0.29 was counted in the band
//! labelled `[0.28, 0.29)`, the label a range that excludes it carries: with two or three
//! planted look-alikes the key's group and the range `x >= 0.28 AND x < 0.29` answered apart
//! when the target was there, 65–70% of districts in two queries (a red team, 2026-12-08). And
//! `3 * 0.1` is 0.30000000000000004, so a band's own start, a range's end and the cells
//! around a range were one float apart: the range `[0.2, 0.3)` cut the key's buckets while
//! `[0.2, 0.30000000000000004)` did not. Every band, label, grid check and cell now takes its
//! ends from [`Step::edge`], and the query runs bands through [`band`], which puts a value in
//! the band those ends say.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, cast, lit,
};

/// The name of the band function in a plan.
pub(crate) const BAND: &str = "__veil_band";

/// Exact powers of ten: every one up to 10²² is a float exactly.
const POWERS: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// Products of an integer and 1, 2 or 5 below this are floats exactly (2⁵¹ × 5 < 2⁵⁴, and
/// such a product below 2⁵¹ is one).
const EXACT: f64 = (1u64 << 51) as f64;

/// Integers below this are floats exactly, and so is the next one up.
const INTEGERS: f64 = (1u64 << 53) as f64;

/// A grid step: 1, 2 or 5 times 10ᵉ, with |e| ≤ 22.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Step {
    mantissa: f64,
    exponent: i32,
}

impl Step {
    /// The step a positive width is, within a relative 10⁻⁹ (a width computed as a range's
    /// `hi - lo` is a float or two off); `None` for any other width.
    pub(crate) fn of(width: f64) -> Option<Self> {
        if !(width.is_finite() && width > 0.0) {
            return None;
        }
        let exponent = width.log10().floor() as i32;
        [exponent - 1, exponent, exponent + 1].into_iter().find_map(|exponent| {
            let power = *POWERS.get(usize::try_from(exponent.unsigned_abs()).ok()?)?;
            let scaled = if exponent >= 0 { width / power } else { width * power };
            [1.0, 2.0, 5.0]
                .into_iter()
                .find(|m| (scaled - m).abs() <= 1e-9 * m)
                .map(|mantissa| Self { mantissa, exponent })
        })
    }

    /// The width, as the float nearest it.
    pub(crate) fn width(self) -> f64 {
        self.edge(1.0)
    }

    /// The float nearest the decimal `k` × the step, for an integer `k`: the start of band k.
    pub(crate) fn edge(self, k: f64) -> f64 {
        let power = POWERS[self.exponent.unsigned_abs() as usize];
        let units = k * self.mantissa;
        if units.abs() < EXACT {
            // Both operands are floats exactly, so the one rounding is the product's or the
            // quotient's: the float nearest the decimal, as a literal is read.
            if self.exponent >= 0 { units * power } else { units / power }
        } else {
            // Far from zero: the decimal k × m × 10ᵉ read as a literal would be (k is an integer,
            // and i128 holds its product with m exactly).
            #[allow(clippy::cast_possible_truncation)] // an integer-valued float, saturating past i128
            let units = (k as i128).saturating_mul(self.mantissa as i128);
            format!("{units}e{}", self.exponent).parse().unwrap_or(k * self.mantissa * 10f64.powi(self.exponent))
        }
    }

    /// The band `x` lies in: the greatest integer k with `edge(k) <= x`.
    pub(crate) fn index(self, x: f64) -> f64 {
        let mut k = (x / self.width()).floor();
        if !k.is_finite() || k.abs() >= INTEGERS {
            // Past 2⁵³ bands from zero the floats are further apart than a band: left as divided.
            return k;
        }
        // The division is within a float of the true quotient: one step either way at most.
        for _ in 0..2 {
            if self.edge(k + 1.0) <= x {
                k += 1.0;
            } else if self.edge(k) > x {
                k -= 1.0;
            }
        }
        k
    }
}

/// The band of `x` (a number) in the grid of `width` as an expression, where SQL's
/// `floor(x / width)` divides in floats: `__veil_band(x, width, false)`, the band's number (a
/// Float64 integer), or with `scaled` its start ([`Step::edge`]), where `floor(x / width) *
/// width` multiplies in floats (3 × 0.1 is 0.30000000000000004, not the 0.3 a query names).
pub(crate) fn band(x: Expr, width: f64, scaled: bool) -> Expr {
    let args = vec![cast(x, DataType::Float64), lit(width), lit(scaled)];
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(&BAND_UDF), args))
}

/// `(x, width)` of SQL's `floor(x / width)`, through casts.
pub(crate) fn floor_parts(e: &Expr) -> Option<(&Expr, &Expr)> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let Expr::ScalarFunction(f) = crate::exprs::uncast(e) else { return None };
    let ([arg], "floor") = (f.args.as_slice(), f.name()) else { return None };
    match crate::exprs::uncast(arg) {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Divide, right }) => Some((left, right)),
        _ => None,
    }
}

/// `(x, width, scaled)` of a [`band`] call.
pub(crate) fn band_parts(e: &Expr) -> Option<(&Expr, &Expr, bool)> {
    match e {
        Expr::ScalarFunction(f) if f.name() == BAND => match f.args.as_slice() {
            [x, w, Expr::Literal(ScalarValue::Boolean(Some(scaled)), _)] => Some((x, w, *scaled)),
            _ => None,
        },
        _ => None,
    }
}

static BAND_UDF: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    Arc::new(ScalarUDF::new_from_impl(Band {
        signature: Signature::exact(
            vec![DataType::Float64, DataType::Float64, DataType::Boolean],
            Volatility::Immutable,
        ),
    }))
});

/// [`band`]'s function.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Band {
    signature: Signature,
}

impl ScalarUDFImpl for Band {
    fn name(&self) -> &str {
        BAND
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [x, width, scaled] = args.args.as_slice() else {
            return exec_err!("{BAND} takes a value, a width and whether to scale");
        };
        let (
            ColumnarValue::Scalar(ScalarValue::Float64(Some(width))),
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(scaled))),
        ) = (width, scaled)
        else {
            return exec_err!("{BAND}'s width and scale are constants");
        };
        let Some(step) = Step::of(*width) else { return exec_err!("{BAND}'s width is off the grid") };
        let x: ArrayRef = x.to_array(args.number_rows)?;
        let Some(x) = x.as_primitive_opt::<Float64Type>() else { return exec_err!("{BAND} of a value not Float64") };
        let banded: Float64Array =
            if *scaled { x.unary(|v| step.edge(step.index(v))) } else { x.unary(|v| step.index(v)) };
        Ok(ColumnarValue::Array(Arc::new(banded)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_read_from_widths_a_float_or_two_off() {
        let step = |w: f64| Step::of(w).map(Step::width);
        assert_eq!(step(0.01), Some(0.01));
        assert_eq!(step(0.3 - 0.2), Some(0.1), "0.09999999999999998");
        assert_eq!(step(500.0), Some(500.0));
        assert_eq!(step(2e-5), Some(2e-5));
        assert_eq!(step(1e22), Some(1e22));
        for off in [0.3, 3.0, 0.25, 1e-30, 0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(step(off), None, "{off}");
        }
    }

    #[test]
    fn a_band_holds_what_its_decimal_ends_say() {
        let cents = Step::of(0.01).unwrap();
        // As floats, 0.29 / 0.01 is 28.999999999999996: floor put 0.29 in the band of 0.28.
        assert_eq!((0.29f64 / 0.01).floor(), 28.0);
        assert_eq!(cents.index(0.29), 29.0);
        for (x, k) in [(0.35, 35.0), (0.41, 41.0), (0.58, 58.0), (0.7, 70.0), (0.82, 82.0), (0.95, 95.0)] {
            assert_eq!(cents.index(x), k, "{x}");
        }
        // The float just below an edge is in the band before it.
        let below = f64::from_bits(0.29f64.to_bits() - 1);
        assert_eq!(cents.index(below), 28.0);
        // Ends are the floats a literal is read as: 3 × 0.1 is 0.30000000000000004.
        let tenths = Step::of(0.1).unwrap();
        assert_eq!(tenths.edge(3.0), 0.3);
        let starts = |x: f64| tenths.edge(tenths.index(x)) == x;
        assert!(starts(0.3) && !starts(0.30000000000000004));
        assert_eq!(tenths.index(0.30000000000000004), 3.0);
        // Below zero, and in whole numbers.
        assert_eq!(cents.index(-0.29), -29.0);
        assert_eq!(cents.index(-0.285), -29.0);
        let fives = Step::of(500.0).unwrap();
        assert_eq!((fives.index(-1.0), fives.index(499.0), fives.index(500.0)), (-1.0, 0.0, 1.0));
        // Far from zero the ends are still the literals', and values fall between them.
        assert_eq!(cents.edge(1e17), "1e15".parse::<f64>().unwrap());
        let far = (1u64 << 52) as f64 + 7.0;
        let edge = Step::of(0.05).unwrap().edge(far);
        assert_eq!(edge, format!("{}e-2", (far as u128) * 5).parse::<f64>().unwrap());
        assert_eq!(Step::of(0.05).unwrap().index(edge), far);
        assert_eq!(Step::of(1e-20).unwrap().edge(3.0), "3e-20".parse::<f64>().unwrap());
    }

    #[test]
    fn every_float_near_an_edge_is_in_the_band_its_ends_say() {
        // Over the first thousand bands of each width below one, each edge and its float
        // neighbours fall where `edge` puts them.
        for width in [0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001, 1e-6] {
            let step = Step::of(width).unwrap();
            for k in -1000..1000 {
                let k = f64::from(k);
                let edge = step.edge(k);
                assert_eq!(step.edge(k), format!("{}e{}", k * step.mantissa, step.exponent).parse::<f64>().unwrap());
                let before = if edge > 0.0 {
                    f64::from_bits(edge.to_bits() - 1)
                } else {
                    -f64::from_bits((-edge).to_bits() + 1)
                };
                assert_eq!(step.index(edge), k, "{width} {k}");
                if edge != 0.0 {
                    assert_eq!(step.index(before), k - 1.0, "{width} {k} below");
                }
            }
        }
    }
}
