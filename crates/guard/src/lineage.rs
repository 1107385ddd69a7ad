//! Column lineage: for every column a plan node outputs, which source columns flow into it and
//! whether it is still a row value or already an aggregate.

use std::collections::BTreeSet;

use veil_common::{Generalization, Tag};

/// Index of a source column in [`Sources`].
pub(crate) type Src = usize;

/// A column of a registered dataset, as read by a table scan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SourceColumn {
    /// `dept.dataset.column`, as messages name it.
    pub(crate) name: String,
    pub(crate) tag: Tag,
    pub(crate) linkable: bool,
    pub(crate) generalize: Option<Generalization>,
    /// Whether it is its dataset's privacy unit.
    pub(crate) unit: bool,
    /// Declared value bounds.
    pub(crate) bounds: Option<(f64, f64)>,
    /// Declared public domain.
    pub(crate) public_values: Option<Vec<String>>,
}

/// The source columns seen in one plan, interned.
#[derive(Debug, Default)]
pub(crate) struct Sources(Vec<SourceColumn>);

impl Sources {
    pub(crate) fn add(&mut self, column: SourceColumn) -> Src {
        if let Some(i) = self.0.iter().position(|c| c.name == column.name) {
            return i;
        }
        self.0.push(column);
        self.0.len() - 1
    }

    pub(crate) fn get(&self, src: Src) -> &SourceColumn {
        &self.0[src]
    }
}

/// Where a plan node's rows stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Grain {
    /// Reads no dataset (VALUES, a constant SELECT).
    NoData,
    /// One row per group of an aggregate over data.
    Groups,
    /// Rows of datasets, not yet aggregated.
    Rows,
}

impl Grain {
    /// The grain of a node combining inputs (join, union): rows if any input is rows.
    pub(crate) fn combine(self, other: Grain) -> Grain {
        self.max(other)
    }
}

/// What one output column carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ColumnLineage {
    /// Every source column that flows into it.
    pub(crate) sources: BTreeSet<Src>,
    /// The source column it is, unchanged but for renames and casts.
    pub(crate) bare: Option<Src>,
    /// Whether a cast that can make two values equal ("7", "07" and "007" all become 7.0)
    /// applies to the bare column: it then no longer names one person, so it links nobody.
    pub(crate) recast: bool,
    /// Whether it is the result of an aggregate function.
    pub(crate) aggregated: bool,
    /// At most how many times the longest source value a text value can be long: 1 for a
    /// column or a constant, added up by concatenation and multiplied by `replace`. Bounded
    /// so that no value, and no query's time or memory, can grow with one person's row
    /// ([`crate::rules::total_expressions`]).
    pub(crate) growth: u64,
}

impl ColumnLineage {
    pub(crate) fn source(src: Src) -> Self {
        Self { sources: BTreeSet::from([src]), bare: Some(src), recast: false, aggregated: false, growth: 1 }
    }

    /// A value computed from `parts`: not bare, aggregated only if every part is.
    pub(crate) fn derived<'a>(parts: impl IntoIterator<Item = &'a ColumnLineage>) -> Self {
        let mut out = Self { sources: BTreeSet::new(), bare: None, recast: false, aggregated: true, growth: 0 };
        let mut any = false;
        for p in parts {
            any = true;
            out.sources.extend(p.sources.iter().copied());
            out.aggregated &= p.aggregated;
            out.growth = out.growth.max(p.growth);
        }
        out.aggregated &= any;
        out
    }

    /// The union of two branches of a set operation.
    pub(crate) fn union(&self, other: &ColumnLineage) -> Self {
        let mut sources = self.sources.clone();
        sources.extend(other.sources.iter().copied());
        let bare = match (self.bare, other.bare) {
            (Some(a), Some(_)) => Some(a),
            _ => None,
        };
        Self {
            sources,
            bare,
            recast: self.recast || other.recast,
            aggregated: self.aggregated && other.aggregated,
            growth: self.growth.max(other.growth),
        }
    }

    /// The first row-level identifier source this column carries, if any.
    pub(crate) fn identifier(&self, sources: &Sources) -> Option<Src> {
        if self.aggregated {
            return None;
        }
        self.sources.iter().copied().find(|s| sources.get(*s).tag == Tag::Identifier)
    }

    /// Whether this column is a bare linkable identifier (a permitted equi-join key), cast at
    /// most one-to-one.
    pub(crate) fn is_linkable_key(&self, sources: &Sources) -> bool {
        !self.aggregated && !self.recast && self.bare.is_some_and(|s| sources.get(s).linkable)
    }

    /// The first source with one of `tags`, if this column is still a row value.
    pub(crate) fn row_source_tagged(&self, sources: &Sources, tags: &[Tag]) -> Option<Src> {
        if self.aggregated {
            return None;
        }
        self.sources.iter().copied().find(|s| tags.contains(&sources.get(*s).tag))
    }
}

/// The lineage of a plan node's output, aligned with its schema.
#[derive(Debug, Clone)]
pub(crate) struct NodeLineage {
    pub(crate) columns: Vec<ColumnLineage>,
    pub(crate) grain: Grain,
}
