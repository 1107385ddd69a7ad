//! Result modes: what a query may return (design §2). There is no raw mode.

/// How a query's answer is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Aggregates only, every group holding at least k distinct people.
    Aggregate,
    /// Differentially private aggregates, charged to a privacy budget.
    Dp,
    /// Rows with identifiers pseudonymised and quasi-identifiers generalised.
    Deidentified,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 3] = [Mode::Aggregate, Mode::Dp, Mode::Deidentified];

    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Aggregate => "aggregate",
            Mode::Dp => "dp",
            Mode::Deidentified => "deidentified",
        }
    }
}

code_enum!(Mode, UnknownMode, "mode");
