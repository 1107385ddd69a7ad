//! What the guard knows about a request: the mode, `k`, and the classification of every dataset
//! the caller's session contains. Built per request by the query layer; never from SQL.

use std::collections::HashMap;

use veil_common::{Generalization, Mode, Tag};

/// Everything the guard decides on, besides the plan.
#[derive(Debug, Clone)]
pub struct GuardContext {
    /// The requested result mode.
    pub mode: Mode,
    /// The fewest distinct privacy units a released group or equivalence class must hold, at the
    /// strictest level among the datasets the query may touch (就高从严).
    pub k: u64,
    /// The datasets in the session, by `(department, name)`, the SQL schema and table.
    pub datasets: HashMap<(String, String), DatasetInfo>,
}

/// One dataset's classification.
#[derive(Debug, Clone)]
pub struct DatasetInfo {
    /// The privacy unit column, if the dataset is about people.
    pub privacy_unit: Option<String>,
    /// Column classifications by name.
    pub columns: HashMap<String, ColumnInfo>,
    /// How much one person may contribute to a dp answer (dp mode).
    pub contribution: Contribution,
    /// Whether every privacy unit value occurs in one row of the file (measured when it was
    /// registered): then any contribution bound already holds for a query over it alone.
    pub one_row_per_unit: bool,
}

/// The contribution bounds of dp mode, declared per dataset by its steward (DESIGN §3): each
/// person counts in at most `max_groups` groups of an answer, with at most `max_rows` rows in
/// each. A query over several datasets uses the largest of each, so that a join does not cut
/// what one dataset legitimately holds per person; the noise follows the bounds used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contribution {
    /// Groups one person may appear in.
    pub max_groups: u64,
    /// Rows one person may contribute to one group.
    pub max_rows: u64,
}

impl Default for Contribution {
    /// One group, one row: a registry with one row per person.
    fn default() -> Self {
        Self { max_groups: 1, max_rows: 1 }
    }
}

/// One column's classification.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    /// Its tag.
    pub tag: Tag,
    /// Whether it is an identifier that may serve as a join key across departments.
    pub linkable: bool,
    /// How it is coarsened in de-identified results, if the steward declared it.
    pub generalize: Option<Generalization>,
    /// The value bounds `[lo, hi]` the steward declared: dp mode clamps to them, and sums or
    /// averages a column only if it has them.
    pub bounds: Option<(f64, f64)>,
    /// Every value it can take, if the steward declared that list public: dp answers grouped
    /// only by such columns release every listed group without a threshold.
    pub public_values: Option<Vec<String>>,
}

impl GuardContext {
    /// The contribution bounds of a query over the session's datasets about people: the
    /// largest declared of each.
    pub fn contribution(&self) -> Contribution {
        let people = self.datasets.values().filter(|d| d.privacy_unit.is_some());
        people.fold(Contribution { max_groups: 1, max_rows: 1 }, |acc, d| Contribution {
            max_groups: acc.max_groups.max(d.contribution.max_groups),
            max_rows: acc.max_rows.max(d.contribution.max_rows),
        })
    }

    /// Whether the session holds one dataset about people and it has one row per person.
    pub fn one_row_per_person(&self) -> bool {
        let mut people = self.datasets.values().filter(|d| d.privacy_unit.is_some());
        matches!((people.next(), people.next()), (Some(d), None) if d.one_row_per_unit)
    }

    pub(crate) fn dataset(&self, schema: Option<&str>, table: &str) -> Option<&DatasetInfo> {
        let schema = schema?;
        self.datasets.get(&(schema.to_owned(), table.to_owned()))
    }
}
