//! How the contribution bounds and the noise treat each aggregate of a dp or anonymized answer:
//! the check classifies them, the rules admit them, the rewrites and the query layer use them.

/// One aggregate of a dp answer, as the contribution bounds and the noise treat it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DpAggregate {
    /// `COUNT(*)` or `COUNT(expr)`: rows, at most `max_rows` per person and group.
    CountRows,
    /// `COUNT(DISTINCT unit)`: people, one per person and group.
    CountPeople,
    /// `SUM(column)` of a column with declared bounds.
    Sum {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// `AVG(column)` of a column with declared bounds: a noisy sum over a noisy count.
    Avg {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
}

impl DpAggregate {
    /// Whether the sum it measures may hold contributions below zero (a lower bound below
    /// zero): an anonymized answer then measures and flattens the contributions below zero as
    /// it does those above (`anonymize.rs`: the two sides of a signed sum).
    #[must_use]
    pub fn signed(&self) -> bool {
        matches!(self, Self::Sum { lo, .. } | Self::Avg { lo, .. } if *lo < 0.0)
    }

    /// The most one person contributes to its `measure` in one group of an anonymized answer
    /// (0: its count or sum; 1: an average's count of values), counting at most `rows` of their
    /// rows: a count of people 1, a count `rows`, a sum `rows` times its larger bound's
    /// magnitude. Each person's contribution is clamped to it (`anonymize.rs`), and the noise's
    /// floor and stated bound follow from it (the query layer's `anon.rs`).
    #[must_use]
    pub fn most_per_person(&self, measure: usize, rows: u64) -> f64 {
        let rows = rows as f64;
        match self {
            Self::CountPeople => 1.0,
            Self::Sum { lo, hi } | Self::Avg { lo, hi } if measure == 0 => rows * lo.abs().max(hi.abs()),
            _ => rows,
        }
    }
}
