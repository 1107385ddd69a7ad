//! What the guard knows about a request: the mode, `k`, and the classification of every dataset
//! the caller's session contains. Built per request by the query layer; never from SQL.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::logical_expr::{Expr, Join, LogicalPlan, Operator, TableSource};
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
    /// Aggregate mode: the caller may have exact aggregates of these datasets about people (all
    /// of their own department, and a policy line says so); otherwise answers over people are
    /// anonymized.
    pub exact_aggregates: bool,
    /// The stored copies of datasets whose [`DatasetInfo::capped`] is [`CapAt::Stored`].
    pub capped_copies: CappedCopies,
}

/// Where a query that caps each person's rows at a dataset's scan (`max_groups × max_rows`:
/// dp answers, anonymized joins) finds them capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CapAt {
    /// While it runs, over every stored row: the work grows with one person's rows.
    #[default]
    Query,
    /// Nobody has more rows than the cap (measured at registration): nothing to cap.
    Within,
    /// In a copy of the version stored at registration ([`GuardContext::capped_copies`]):
    /// each person's rows read are at most the cap.
    Stored,
}

/// The stored capped copies of datasets, by `(department, name)`, as the engine opened them.
#[derive(Clone, Default)]
pub struct CappedCopies(pub HashMap<(String, String), Arc<dyn TableSource>>);

impl std::fmt::Debug for CappedCopies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// One dataset's classification.
#[derive(Debug, Clone, PartialEq)]
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
    /// Rows in the dataset's version (public in the catalogue): for a dataset about nobody, the
    /// most rows one row of another table can meet in a join with it.
    pub rows: u64,
    /// Where each person's rows are found capped.
    pub capped: CapAt,
    /// For a dataset about nobody, the columns each value of which is on one row at most
    /// (measured when it was registered): an inner join on one meets one row of it at most, so
    /// it repeats no row of the other side.
    pub unique: Vec<String>,
}

/// The contribution bounds of dp mode, declared per dataset by its steward (design §3): each
/// person counts in at most `max_groups` groups of an answer, with at most `max_rows` rows in
/// each. A query over several datasets uses the largest of each among those whose rows reach
/// the aggregate ([`GuardContext::reach`]), so that a join does not cut what one dataset
/// legitimately holds per person; the noise follows the bounds used.
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

/// How the rows of the datasets about people reach a dp answer's aggregate
/// ([`GuardContext::reach`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// The contribution bounds the answer enforces and its noise follows.
    pub contribution: Contribution,
    /// Whether each person is already at most one row of the aggregate's input: one dataset
    /// about people, registered with one row per person, and no join that could repeat its rows.
    pub one_row_per_person: bool,
}

/// Whether a join of this type only keeps or drops the rows of one side (EXISTS, IN, NOT
/// EXISTS after decorrelation), never repeating them or adding the other side's.
fn filters_only(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::RightSemi
            | JoinType::RightAnti
            | JoinType::LeftMark
            | JoinType::RightMark
    )
}

/// The equalities of a join's `ON` (its filter until the optimizer extracts them), each as
/// `(left, right)` with each side over one input's columns.
pub(crate) fn equalities(join: &Join) -> Vec<(Expr, Expr)> {
    let mut pairs: Vec<(Expr, Expr)> = join.on.clone();
    for c in join.filter.iter().flat_map(datafusion::logical_expr::utils::split_conjunction) {
        if let Expr::BinaryExpr(b) = crate::exprs::unalias(c)
            && b.op == Operator::Eq
        {
            let over = |e: &Expr, plan: &LogicalPlan| e.column_refs().iter().all(|c| plan.schema().has_column(c));
            let (l, r) = (b.left.as_ref(), b.right.as_ref());
            if over(l, &join.left) && over(r, &join.right) {
                pairs.push((l.clone(), r.clone()));
            } else if over(r, &join.left) && over(l, &join.right) {
                pairs.push((r.clone(), l.clone()));
            }
        }
    }
    pairs
}

/// Visits `plan` and every node whose rows flow into it: the kept side of a semi or anti join,
/// not the tested one; subqueries in expressions are tests too and are not visited.
fn rows_from<'a>(plan: &'a LogicalPlan, visit: &mut impl FnMut(&'a LogicalPlan)) {
    visit(plan);
    match plan {
        LogicalPlan::Join(join) if filters_only(join.join_type) => {
            let kept = match join.join_type {
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => &join.right,
                _ => &join.left,
            };
            rows_from(kept, visit);
        }
        _ => plan.inputs().into_iter().for_each(|input| rows_from(input, visit)),
    }
}

impl GuardContext {
    /// How people's rows reach a dp answer whose aggregate reads `input`. The bounds are the
    /// largest declared by the datasets about people whose rows reach the aggregate; a dataset
    /// read only to test rows (EXISTS, IN, a semi or anti join) adds no rows to it, so its bounds
    /// do not widen the noise. (Such a test must be tied to the outer person, so it changes
    /// nothing but that person's own rows, which the bounds already cover.)
    pub fn reach(&self, input: &LogicalPlan) -> Reach {
        let mut people = Vec::new();
        let mut repeats = false;
        rows_from(input, &mut |node| match node {
            LogicalPlan::TableScan(scan) => {
                if let Some(d) = self.dataset(scan.table_name.schema(), scan.table_name.table())
                    && d.privacy_unit.is_some()
                {
                    people.push(d);
                }
            }
            LogicalPlan::Join(join) if !filters_only(join.join_type) && !self.looks_up_one_row(join) => {
                repeats = true;
            }
            _ => {}
        });
        let contribution = people.iter().fold(Contribution::default(), |acc, d| Contribution {
            max_groups: acc.max_groups.max(d.contribution.max_groups),
            max_rows: acc.max_rows.max(d.contribution.max_rows),
        });
        let one_row_per_person = !repeats && matches!(people.as_slice(), [d] if d.one_row_per_unit);
        Reach { contribution, one_row_per_person }
    }

    /// Whether `join` meets each row of one side with one row of the other at most, so that it
    /// repeats no row of that side: an inner join on an equality with a column of the other
    /// side whose values are each on one row of a dataset about nobody ([`DatasetInfo::unique`]),
    /// read through filters, aliases and projections of bare columns.
    ///
    /// Why: a code table joined on its key (a nation's name by its code) left a registry of one
    /// row a person counted as repeating, and its answers grouped every person's one row first.
    fn looks_up_one_row(&self, join: &Join) -> bool {
        if join.join_type != JoinType::Inner {
            return false;
        }
        let unique = |side: &LogicalPlan, key: &Expr| match (key, self.looked_up(side)) {
            (Expr::Column(c), Some(d)) => d.unique.contains(&c.name),
            _ => false,
        };
        equalities(join).iter().any(|(l, r)| unique(&join.right, r) || unique(&join.left, l))
    }

    /// The dataset about nobody `plan` reads, through filters, aliases and projections of bare
    /// columns (which keep each column's name); `None` for any other plan.
    fn looked_up(&self, plan: &LogicalPlan) -> Option<&DatasetInfo> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                self.dataset(scan.table_name.schema(), scan.table_name.table()).filter(|d| d.privacy_unit.is_none())
            }
            LogicalPlan::Filter(f) => self.looked_up(&f.input),
            LogicalPlan::SubqueryAlias(a) => self.looked_up(&a.input),
            LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
                self.looked_up(&p.input)
            }
            _ => None,
        }
    }

    pub(crate) fn dataset(&self, schema: Option<&str>, table: &str) -> Option<&DatasetInfo> {
        let schema = schema?;
        self.datasets.get(&(schema.to_owned(), table.to_owned()))
    }

    /// The stored capped copy of a dataset in the session, by SQL schema and table, if opened.
    pub(crate) fn capped_copy(&self, schema: Option<&str>, table: &str) -> Option<&Arc<dyn TableSource>> {
        self.capped_copies.0.get(&(schema?.to_owned(), table.to_owned()))
    }
}
