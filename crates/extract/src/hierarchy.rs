//! Generalization hierarchies: the ladder of ever coarser forms a quasi-identifier can take,
//! ending in `*` (the value withheld).
//!
//! Every step must nest in the next (a month lies in one quarter, a 5-wide band in one 10-wide
//! band, a 4-character prefix in one 2-character prefix): then raising a column's level only
//! merges classes, which is what lets the search prune (see `search`).

use std::fmt;

use crate::{Error, Result};

/// One rung of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// The value as it is (a timestamp to the second, a number as written).
    Exact,
    /// A date or timestamp as its day, `2024-01-05`.
    Day,
    /// `2024-01`.
    Month,
    /// `2024-Q1`.
    Quarter,
    /// `2024`.
    Year,
    /// A span of years aligned on multiples of the width: `2020-2024`.
    Years(u32),
    /// A number as the band `[lo, lo + width)` with `lo` a multiple of the width.
    Band(f64),
    /// Text as its first N characters, the rest masked: `1101**`.
    Prefix(usize),
    /// The value withheld: `*`.
    Suppressed,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Exact => f.write_str("exact"),
            Step::Day => f.write_str("day"),
            Step::Month => f.write_str("month"),
            Step::Quarter => f.write_str("quarter"),
            Step::Year => f.write_str("year"),
            Step::Years(n) => write!(f, "years:{n}"),
            Step::Band(w) => write!(f, "band:{w}"),
            Step::Prefix(n) => write!(f, "prefix:{n}"),
            Step::Suppressed => f.write_str("*"),
        }
    }
}

impl std::str::FromStr for Step {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || {
            format!(
                "unknown step `{}`: expected exact, day, month, quarter, year, years:<n>, band:<width> or prefix:<n>",
                s.chars().take(32).collect::<String>()
            )
        };
        Ok(match s.split_once(':') {
            None => match s {
                "exact" => Step::Exact,
                "day" => Step::Day,
                "month" => Step::Month,
                "quarter" => Step::Quarter,
                "year" => Step::Year,
                "*" => Step::Suppressed,
                _ => return Err(bad()),
            },
            Some(("years", n)) => Step::Years(n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?),
            Some(("band", w)) => {
                Step::Band(w.parse().ok().filter(|w: &f64| w.is_finite() && *w > 0.0).ok_or_else(bad)?)
            }
            Some(("prefix", n)) => Step::Prefix(n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?),
            Some(_) => return Err(bad()),
        })
    }
}

/// What kind of values a column holds, as far as generalization cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Date,
    Timestamp,
    Integer,
    Float,
    Text,
    Boolean,
}

/// A value before generalization.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    /// Days since 1970-01-01, and seconds into the day for timestamps.
    Time {
        days: i32,
        text: String,
    },
    Number(f64),
    Text(String),
}

/// The label of `value` at `step`; `None` for a null (nulls stay null at every level).
pub(crate) fn label(value: &Value, step: Step, integer: bool) -> Option<String> {
    if step == Step::Suppressed {
        return Some("*".into());
    }
    match value {
        Value::Null => None,
        Value::Time { days, text } => Some(match step {
            Step::Exact => text.clone(),
            _ => {
                let (y, m, d) = civil(*days);
                match step {
                    Step::Day => format!("{y:04}-{m:02}-{d:02}"),
                    Step::Month => format!("{y:04}-{m:02}"),
                    Step::Quarter => format!("{y:04}-Q{}", (m - 1) / 3 + 1),
                    Step::Year => format!("{y:04}"),
                    Step::Years(n) => {
                        let lo = y.div_euclid(n as i32) * n as i32;
                        format!("{lo:04}-{:04}", lo + n as i32 - 1)
                    }
                    _ => text.clone(),
                }
            }
        }),
        Value::Number(v) => Some(match step {
            Step::Band(w) => {
                let lo = (v / w).floor() * w;
                if integer && w.fract() == 0.0 {
                    format!("{lo}-{}", lo + w - 1.0)
                } else {
                    format!("[{lo}, {})", lo + w)
                }
            }
            _ => number_text(*v, integer),
        }),
        Value::Text(t) => Some(match step {
            Step::Prefix(n) => {
                let chars = t.chars().count();
                let kept: String = t.chars().take(n).collect();
                format!("{kept}{}", "*".repeat(chars.saturating_sub(n)))
            }
            _ => t.clone(),
        }),
    }
}

/// A day number as `YYYY-MM-DD`.
pub(crate) fn day_text(days: i32) -> String {
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A number as written: integers without a decimal point.
pub(crate) fn number_text(v: f64, integer: bool) -> String {
    if integer { format!("{}", v as i64) } else { format!("{v}") }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`; arrow offers no calendar arithmetic on bare day numbers).
fn civil(days: i32) -> (i32, u32, u32) {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// The default ladder for a column of `kind`, starting no finer than `floor`. `range` is the
/// span of the column's values (declared bounds, else the data's), `codes` the common length of
/// fixed-length codes when every value is one.
pub(crate) fn default_ladder(
    column: &str,
    kind: Kind,
    floor: Option<Step>,
    range: Option<f64>,
    codes: Option<usize>,
) -> Result<Vec<Step>> {
    let mut steps = match kind {
        Kind::Date => vec![Step::Day, Step::Month, Step::Quarter, Step::Year, Step::Years(5), Step::Years(10)],
        Kind::Timestamp => {
            vec![Step::Exact, Step::Day, Step::Month, Step::Quarter, Step::Year, Step::Years(5), Step::Years(10)]
        }
        Kind::Integer | Kind::Float => {
            let mut steps = vec![Step::Exact];
            steps.extend(band_ladder(range.unwrap_or(0.0), kind == Kind::Integer).into_iter().map(Step::Band));
            steps
        }
        Kind::Text => match codes {
            Some(len) => {
                let step = if len >= 4 { 2 } else { 1 };
                let mut steps = vec![Step::Exact];
                let mut n = len.saturating_sub(step);
                while n >= 1 {
                    steps.push(Step::Prefix(n));
                    n = n.saturating_sub(step);
                }
                steps
            }
            None => vec![Step::Exact],
        },
        Kind::Boolean => vec![Step::Exact],
    };
    steps.push(Step::Suppressed);
    from_floor(column, kind, floor, steps)
}

/// The ladder cut to start at `floor` (the finest form the column may take: the steward's
/// declared generalization, or the level the dataset's base release uses): the floor, then the
/// ladder's steps that contain it.
pub(crate) fn from_floor(column: &str, kind: Kind, floor: Option<Step>, steps: Vec<Step>) -> Result<Vec<Step>> {
    let Some(floor) = floor else { return Ok(steps) };
    if floor == Step::Suppressed {
        return Ok(vec![Step::Suppressed]);
    }
    if rank(floor, kind).is_none() {
        return Err(Error::Hierarchy {
            column: column.to_owned(),
            reason: format!("the declared generalization `{floor}` does not apply to this column's type"),
        });
    }
    let mut out = vec![floor];
    out.extend(steps.into_iter().filter(|s| *s != floor && contains(floor, *s)));
    Ok(out)
}

/// Whether every class of `fine` lies inside one class of `coarse`.
pub(crate) fn contains(fine: Step, coarse: Step) -> bool {
    use Step::*;
    match (fine, coarse) {
        (_, Suppressed) | (Exact, _) => true,
        (Day, Day | Month | Quarter | Year | Years(_)) => true,
        (Month, Month | Quarter | Year | Years(_)) => true,
        (Quarter, Quarter | Year | Years(_)) => true,
        (Year, Year | Years(_)) => true,
        (Years(a), Years(b)) => b % a == 0,
        (Band(a), Band(b)) => nests(a, b),
        (Prefix(a), Prefix(b)) => b <= a,
        _ => false,
    }
}

/// The coarser of two steps of one column, when one contains the other (else `a`).
pub(crate) fn coarser(a: Step, b: Step) -> Step {
    if contains(a, b) { b } else { a }
}

/// Where a step sits among the steps that apply to `kind`; `None` when it does not apply.
fn rank(step: Step, kind: Kind) -> Option<u32> {
    match (step, kind) {
        (Step::Exact, _) => Some(0),
        (Step::Day, Kind::Date | Kind::Timestamp) => Some(1),
        (Step::Month, Kind::Date | Kind::Timestamp) => Some(2),
        (Step::Quarter, Kind::Date | Kind::Timestamp) => Some(3),
        (Step::Year, Kind::Date | Kind::Timestamp) => Some(4),
        (Step::Years(n), Kind::Date | Kind::Timestamp) => Some(4 + n),
        (Step::Band(_), Kind::Integer | Kind::Float) => Some(1),
        (Step::Prefix(_), Kind::Text) => Some(1),
        (Step::Suppressed, _) => Some(u32::MAX),
        _ => None,
    }
}

/// Band widths on a {1, 5} × 10ⁿ ladder, from about a hundredth of the range up to the range.
fn band_ladder(range: f64, integer: bool) -> Vec<f64> {
    if !(range.is_finite() && range > 0.0) {
        return Vec::new();
    }
    let mut w = 10f64.powf((range / 100.0).log10().floor());
    if integer {
        w = w.max(1.0);
    }
    let mut out = Vec::new();
    while out.len() < 6 {
        if !(integer && w <= 1.0) {
            out.push(w);
        }
        if w >= range {
            break;
        }
        // 1 → 5 → 10 → 50 → 100: each width a whole multiple of the one before.
        let lead = w / 10f64.powf(w.log10().floor());
        w *= if (lead - 1.0).abs() < 1e-9 { 5.0 } else { 2.0 };
    }
    out
}

/// Whether every `fine`-wide band lies inside one `coarse`-wide band.
fn nests(fine: f64, coarse: f64) -> bool {
    let ratio = coarse / fine;
    ratio >= 1.0 && (ratio - ratio.round()).abs() < 1e-9
}

/// Checks that a ladder given in a spec suits the column and that each step nests in the next;
/// appends `*`.
pub(crate) fn checked_ladder(column: &str, kind: Kind, steps: &[Step]) -> Result<Vec<Step>> {
    let bad = |why: String| Error::Hierarchy { column: column.to_owned(), reason: why };
    let mut out: Vec<Step> = Vec::with_capacity(steps.len() + 1);
    for step in steps.iter().copied().filter(|s| *s != Step::Suppressed) {
        rank(step, kind).ok_or_else(|| bad(format!("step `{step}` does not apply to this column's type")))?;
        if let Some(prev) = out.last()
            && (*prev == step || !contains(*prev, step))
        {
            return Err(bad(format!("step `{step}` must be coarser than `{prev}` and contain it whole")));
        }
        out.push(step);
    }
    out.push(Step::Suppressed);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dates_climb_day_month_quarter_year() {
        let v = Value::Time { days: 19_727, text: "2024-01-05".into() };
        let got: Vec<_> = [Step::Day, Step::Month, Step::Quarter, Step::Year, Step::Years(10), Step::Suppressed]
            .into_iter()
            .map(|s| label(&v, s, false).unwrap())
            .collect();
        assert_eq!(got, ["2024-01-05", "2024-01", "2024-Q1", "2024", "2020-2029", "*"]);
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(-1), (1969, 12, 31));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[test]
    fn bands_and_prefixes_label_what_they_cover() {
        assert_eq!(label(&Value::Number(63.0), Step::Band(5.0), true).unwrap(), "60-64");
        assert_eq!(label(&Value::Number(-3.5), Step::Band(10.0), false).unwrap(), "[-10, 0)");
        assert_eq!(label(&Value::Text("110105".into()), Step::Prefix(4), false).unwrap(), "1101**");
        assert_eq!(label(&Value::Null, Step::Month, false), None);
        assert_eq!(label(&Value::Null, Step::Suppressed, false).unwrap(), "*");
    }

    #[test]
    fn default_ladders_nest_and_end_in_a_star() {
        let ages = default_ladder("age", Kind::Integer, None, Some(100.0), None).unwrap();
        assert_eq!(
            ages,
            [Step::Exact, Step::Band(5.0), Step::Band(10.0), Step::Band(50.0), Step::Band(100.0), Step::Suppressed]
        );
        let codes = default_ladder("district", Kind::Text, None, None, Some(6)).unwrap();
        assert_eq!(codes, [Step::Exact, Step::Prefix(4), Step::Prefix(2), Step::Suppressed]);
        let declared = default_ladder("birth", Kind::Date, Some(Step::Year), None, None).unwrap();
        assert_eq!(declared, [Step::Year, Step::Years(5), Step::Years(10), Step::Suppressed]);
        let banded = default_ladder("age", Kind::Integer, Some(Step::Band(10.0)), Some(100.0), None).unwrap();
        assert_eq!(banded, [Step::Band(10.0), Step::Band(50.0), Step::Band(100.0), Step::Suppressed]);
        let odd = default_ladder("age", Kind::Integer, Some(Step::Band(20.0)), Some(100.0), None).unwrap();
        assert_eq!(odd, [Step::Band(20.0), Step::Band(100.0), Step::Suppressed], "only bands that contain the floor");
        assert!(default_ladder("x", Kind::Text, Some(Step::Month), None, None).is_err());
    }

    #[test]
    fn a_spec_ladder_must_nest() {
        assert!(checked_ladder("age", Kind::Integer, &[Step::Band(5.0), Step::Band(10.0)]).is_ok());
        let e = checked_ladder("age", Kind::Integer, &[Step::Band(20.0), Step::Band(50.0)]).unwrap_err();
        assert!(e.to_string().contains("age"), "{e}");
        assert!(checked_ladder("d", Kind::Date, &[Step::Year, Step::Month]).is_err());
        assert!(checked_ladder("d", Kind::Date, &[Step::Prefix(2)]).is_err());
        assert!(checked_ladder("d", Kind::Date, &[Step::Month, Step::Years(5), Step::Years(10)]).is_ok());
    }
}
