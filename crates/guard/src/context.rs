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
}

impl GuardContext {
    pub(crate) fn dataset(&self, schema: Option<&str>, table: &str) -> Option<&DatasetInfo> {
        let schema = schema?;
        self.datasets.get(&(schema.to_owned(), table.to_owned()))
    }
}
