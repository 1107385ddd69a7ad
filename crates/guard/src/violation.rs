//! Why the guard refuses a query: a stable rule code and the column it is about. Messages name
//! columns and SQL constructs, never a value read from a dataset.

use std::fmt;

/// The rule a query broke. Each has a stable code (the HTTP error code of the refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Not a single read-only query, or a plan node the guard does not accept.
    UnsupportedSql,
    /// A function outside the allow-list.
    FunctionNotAllowed,
    /// A name in the query uses the prefix the broker reserves for its own columns.
    ReservedName,
    /// A table that is not in the caller's session (never expected: the session holds only
    /// permitted datasets; refused to fail closed).
    UnknownTable,
    /// Aggregate mode: an output column is not an aggregate or a group key.
    RowLevelOutput,
    /// An identifier used in a filter, CASE condition or other condition.
    IdentifierInCondition,
    /// An identifier as a join key, other than an equi-join of two linkable identifiers.
    IdentifierInJoin,
    /// An identifier as a group key.
    IdentifierGroupKey,
    /// An identifier inside an expression (`id + 1`, `substr(id, …)`): only the bare column
    /// may be counted, joined on or pseudonymised.
    IdentifierTransformed,
    /// An identifier in ORDER BY.
    IdentifierInOrder,
    /// An aggregate function outside the allow-list (array_agg, string_agg, first_value, …).
    AggregateNotAllowed,
    /// An aggregate other than COUNT over an identifier.
    IdentifierAggregated,
    /// MIN, MAX, median or a percentile over a column that is not an attribute.
    ExtremeValueOfProtectedColumn,
    /// Aggregate mode: LIMIT or OFFSET applied to rows before they are aggregated.
    LimitBeforeAggregate,
    /// Aggregate mode: a window function over rows before they are aggregated.
    RowLevelWindow,
    /// Aggregate mode: a negation, `<>` or OR over an identifier or quasi-identifier (tracker
    /// and complement conditions).
    ComplementCondition,
    /// A subquery over rows that is not tied to the outer row by a linkable identifier: its
    /// answer (does a row with these values exist?) would escape every threshold.
    UnlinkedSubquery,
    /// De-identified mode: queries read approved extracts, which the broker runs; the guard
    /// admits no query over source datasets in this mode.
    DeidentifiedReadsExtracts,
    /// Dp mode: not one aggregate over the datasets' rows followed only by post-processing.
    DpShape,
    /// Dp mode: an aggregate without a dp mechanism (MIN, MAX, quantiles, …).
    DpAggregateNotSupported,
    /// Dp mode: SUM or AVG of a column without declared bounds.
    DpUnboundedColumn,
    /// Dp mode: datasets about people combined other than by equal privacy units.
    DpPeopleNotLinked,
    /// Any mode: a cross or non-equi join over data about people.
    JoinWithoutKey,
    /// Aggregate mode over people: not one aggregate over rows of the admitted forms.
    AnonShape,
    /// Aggregate mode over people: an aggregate outside COUNT, COUNT(DISTINCT unit) and SUM or
    /// AVG of a bare bounded column, or one with FILTER or ORDER BY.
    AnonAggregate,
    /// Aggregate mode over people: a WHERE condition outside the admitted forms.
    AnonCondition,
    /// Aggregate mode over people: a group key that is neither a column nor an allowed
    /// generalization, or grouping sets.
    AnonGroupKey,
    /// An expression that can fail while running for some values (decimal or date arithmetic
    /// that can overflow, a pattern or a granularity that is not valid): whether the query
    /// fails would say whether such a row exists.
    ExpressionMayFail,
    /// A join over people whose rows per person, bounded per dataset before it, could still
    /// multiply beyond what is admitted (self-joins of event tables).
    JoinRowsPerPerson,
}

impl Rule {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Rule::UnsupportedSql => "unsupported_sql",
            Rule::FunctionNotAllowed => "function_not_allowed",
            Rule::ReservedName => "reserved_name",
            Rule::UnknownTable => "unknown_table",
            Rule::RowLevelOutput => "row_level_output",
            Rule::IdentifierInCondition => "identifier_in_condition",
            Rule::IdentifierInJoin => "identifier_in_join",
            Rule::IdentifierGroupKey => "identifier_group_key",
            Rule::IdentifierTransformed => "identifier_transformed",
            Rule::IdentifierInOrder => "identifier_in_order",
            Rule::AggregateNotAllowed => "aggregate_not_allowed",
            Rule::IdentifierAggregated => "identifier_aggregated",
            Rule::ExtremeValueOfProtectedColumn => "extreme_value_of_protected_column",
            Rule::LimitBeforeAggregate => "limit_before_aggregate",
            Rule::RowLevelWindow => "row_level_window",
            Rule::ComplementCondition => "complement_condition",
            Rule::UnlinkedSubquery => "unlinked_subquery",
            Rule::DeidentifiedReadsExtracts => "deidentified_reads_extracts",
            Rule::DpShape => "dp_shape",
            Rule::DpAggregateNotSupported => "dp_aggregate_not_supported",
            Rule::DpUnboundedColumn => "dp_unbounded_column",
            Rule::DpPeopleNotLinked => "dp_people_not_linked",
            Rule::JoinWithoutKey => "join_without_key",
            Rule::AnonShape => "anon_shape",
            Rule::AnonAggregate => "anon_aggregate",
            Rule::AnonCondition => "anon_condition",
            Rule::AnonGroupKey => "anon_group_key",
            Rule::ExpressionMayFail => "expression_may_fail",
            Rule::JoinRowsPerPerson => "join_rows_per_person",
        }
    }
}

/// A refusal: the rule, the column it is about (`dept.dataset.column`, or an output column
/// name), and a message for the analyst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which rule.
    pub rule: Rule,
    /// The column it is about, if any.
    pub column: Option<String>,
    /// What was wrong and what to do instead.
    pub message: String,
}

impl Violation {
    pub(crate) fn new(rule: Rule, column: Option<String>, message: impl Into<String>) -> Self {
        Self { rule, column, message: message.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule.code(), self.message)
    }
}

impl std::error::Error for Violation {}
