//! Generalization rules for quasi-identifiers (GB/T 37964-2019 §A.3, 泛化): how a steward declares
//! that a column is coarsened before it appears in a de-identified result.

use std::fmt;
use std::str::FromStr;

/// How a quasi-identifier column is coarsened in `deidentified` results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Generalization {
    /// A date or timestamp becomes its month, `YYYY-MM`.
    Month,
    /// A date or timestamp becomes its year, `YYYY`.
    Year,
    /// A number becomes the band `lo-hi` of the given width (ages to 5-year bands: `band:5`).
    Band(u32),
    /// Text keeps only its first N characters (an address to its district: `prefix:6`).
    Prefix(u32),
    /// The value is withheld.
    Suppress,
}

/// A generalization rule that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadGeneralization(pub String);

impl fmt::Display for BadGeneralization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown generalization `{}`: expected month, year, band:<width>, prefix:<characters> or suppress",
            self.0
        )
    }
}

impl std::error::Error for BadGeneralization {}

impl FromStr for Generalization {
    type Err = BadGeneralization;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadGeneralization(s.chars().take(32).collect());
        let width = |n: &str| n.parse::<u32>().ok().filter(|w| *w > 0).ok_or_else(bad);
        match s.split_once(':') {
            None => match s {
                "month" => Ok(Self::Month),
                "year" => Ok(Self::Year),
                "suppress" => Ok(Self::Suppress),
                _ => Err(bad()),
            },
            Some(("band", n)) => Ok(Self::Band(width(n)?)),
            Some(("prefix", n)) => Ok(Self::Prefix(width(n)?)),
            Some(_) => Err(bad()),
        }
    }
}

impl fmt::Display for Generalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Month => f.write_str("month"),
            Self::Year => f.write_str("year"),
            Self::Band(w) => write!(f, "band:{w}"),
            Self::Prefix(n) => write!(f, "prefix:{n}"),
            Self::Suppress => f.write_str("suppress"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_and_bad_ones_are_named() {
        for text in ["month", "year", "band:5", "prefix:6", "suppress"] {
            let rule: Generalization = text.parse().unwrap();
            assert_eq!(rule.to_string(), text);
        }
        for bad in ["week", "band:0", "band:x", "prefix", "mask:3"] {
            let err = bad.parse::<Generalization>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
