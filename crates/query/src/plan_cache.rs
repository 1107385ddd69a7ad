//! Guarded dp plans kept for reuse, keyed by SQL text and everything planning saw.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::{LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use veil_guard::GuardOutcome;

use crate::request::QueryRequest;

/// How many guarded dp plans are kept.
pub(crate) const PLAN_CACHE_ENTRIES: usize = 256;

/// A query as planned, guarded and optimized for one request.
#[derive(Debug, Clone)]
pub(crate) struct GuardedPlan {
    pub(crate) plan: LogicalPlan,
    pub(crate) optimized: LogicalPlan,
    pub(crate) outcome: GuardOutcome,
    /// The physical plan of `optimized`, kept by the first run if it can run again
    /// ([`rerunnable`]).
    pub(crate) physical: Arc<OnceLock<Arc<dyn ExecutionPlan>>>,
}

/// Guarded dp plans, so that a dp query asked again (by anyone, or by the same analyst to get
/// the recorded answer) is not planned, guarded and optimized again: for a small dataset that
/// is most of a dp query's time.
///
/// A plan is reused only for the same SQL text and an equal request: mode, k, privacy
/// parameters and every dataset's file, row count and classification (so a new version, a
/// changed tag or bound plans afresh), and only if the plan reads no clock or random function,
/// whose value the optimizer may have fixed at planning time. Only dp plans are kept: their
/// outcome holds nothing that one run changes (aggregate mode's threshold counts the groups it
/// drops into a counter inside the plan).
#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    by_sql: HashMap<String, Vec<(QueryRequest, GuardedPlan, u64)>>,
    /// Use counter, for dropping the least recently used entry.
    clock: u64,
}

impl PlanCache {
    pub(crate) fn get(&mut self, sql: &str, request: &QueryRequest) -> Option<GuardedPlan> {
        self.clock += 1;
        let entry = self.by_sql.get_mut(sql)?.iter_mut().find(|(r, _, _)| same_plan(r, request))?;
        entry.2 = self.clock;
        Some(entry.1.clone())
    }

    /// Keeps `plan`, first dropping the plans over older files of the same datasets (they would
    /// never be asked for again, and would keep those files' tables in memory).
    pub(crate) fn put(&mut self, sql: &str, request: &QueryRequest, plan: GuardedPlan) {
        let outdated = |kept: &QueryRequest| {
            kept.datasets.iter().any(|k| request.datasets.iter().any(|d| d.dataset == k.dataset && d.path != k.path))
        };
        for entries in self.by_sql.values_mut() {
            entries.retain(|(kept, _, _)| !outdated(kept));
        }
        self.by_sql.retain(|_, entries| !entries.is_empty());
        if self.len() >= PLAN_CACHE_ENTRIES {
            self.drop_oldest();
        }
        self.clock += 1;
        self.by_sql.entry(sql.to_owned()).or_default().push((request.clone(), plan, self.clock));
    }

    /// Plans kept.
    fn len(&self) -> usize {
        self.by_sql.values().map(Vec::len).sum()
    }

    fn drop_oldest(&mut self) {
        let oldest = self
            .by_sql
            .iter()
            .flat_map(|(sql, entries)| entries.iter().enumerate().map(move |(i, e)| (e.2, sql, i)))
            .min()
            .map(|(_, sql, i)| (sql.clone(), i));
        if let Some((sql, i)) = oldest
            && let Some(entries) = self.by_sql.get_mut(&sql)
        {
            entries.swap_remove(i);
            if entries.is_empty() {
                self.by_sql.remove(&sql);
            }
        }
    }
}

/// Whether a plan kept for `kept` serves `request`: everything the guard and the planner saw is
/// equal (the pseudonym key, which only de-identified answers use, and dry running are not
/// planning inputs).
fn same_plan(kept: &QueryRequest, request: &QueryRequest) -> bool {
    kept.mode == request.mode
        && kept.k == request.k
        && kept.dp == request.dp
        && kept.exact_aggregates == request.exact_aggregates
        && kept.datasets == request.datasets
}

/// Whether `plan` calls a function whose value is not fixed by its arguments (`now()`,
/// `random()`, …), anywhere, subqueries included.
pub(crate) fn reads_clock_or_chance(plan: &LogicalPlan) -> bool {
    let varies = |e: &Expr| {
        e.exists(|e| Ok(matches!(e, Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Immutable)))
    };
    let mut found = false;
    let walked = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            found |= varies(e)?;
            Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
        })
    });
    walked.is_err() || found
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;
    use veil_common::Mode;

    use crate::dp::DpParams;
    use crate::request::SessionDataset;
    use crate::testing::noisy_scan;
    use datafusion::prelude::{col, lit};

    #[test]
    fn plans_that_read_the_clock_or_chance_are_told_apart() {
        let (_, scan) = noisy_scan();
        let fixed = scan.clone().filter(col("c1").gt(lit(20))).and_then(|b| b.build()).expect("plan");
        assert!(!reads_clock_or_chance(&fixed));
        let clock = datafusion::functions::datetime::expr_fn::now();
        let chance = datafusion::functions::math::expr_fn::random();
        for varying in [clock, chance] {
            let plan = scan.clone().project([col("c1"), varying]).and_then(|b| b.build()).expect("plan");
            assert!(reads_clock_or_chance(&plan), "{}", plan.display_indent());
        }
    }

    fn request(files: &[(&str, &str)]) -> QueryRequest {
        let info = veil_guard::DatasetInfo {
            privacy_unit: None,
            columns: HashMap::new(),
            contribution: veil_guard::Contribution { max_groups: 1, max_rows: 1 },
            one_row_per_unit: false,
            capped: Default::default(),
            unique: Vec::new(),
            rows: 0,
        };
        QueryRequest {
            mode: Mode::Dp,
            k: 10,
            datasets: files
                .iter()
                .map(|(name, file)| SessionDataset {
                    dataset: format!("civil.{name}").parse().unwrap(),
                    path: PathBuf::from(file),
                    rows: 1,
                    info: info.clone(),
                    capped_copy: None,
                })
                .collect(),
            dry_run: false,
            dp: Some(DpParams::laplace(1.0, 1e-7)),
            noise_key: [9; 32],
            exact_aggregates: false,
        }
    }

    fn guarded() -> GuardedPlan {
        let (_, scan) = noisy_scan();
        let plan = scan.build().expect("plan");
        let outcome = GuardOutcome {
            assessment: veil_guard::Assessment {
                rules: Vec::new(),
                counts_people: true,
                dp: Vec::new(),
                dp_public_keys: None,
                dp_reach: veil_guard::Reach {
                    contribution: veil_guard::Contribution { max_groups: 1, max_rows: 1 },
                    one_row_per_person: true,
                },
                anonymized: false,
            },
            rewritten: veil_guard::Rewritten {
                plan: plan.clone(),
                suppressed_groups: Arc::default(),
                dp: None,
                anonymized: None,
            },
        };
        GuardedPlan { plan: plan.clone(), optimized: plan, outcome, physical: Arc::default() }
    }

    #[test]
    fn kept_plans_serve_only_an_equal_request_and_leave_with_their_files() {
        let mut cache = PlanCache::default();
        let a1 = request(&[("a", "a-1.parquet"), ("b", "b-1.parquet")]);
        cache.put("q", &a1, guarded());
        cache.put("other", &request(&[("b", "b-1.parquet")]), guarded());
        assert!(cache.get("q", &a1).is_some());
        assert!(cache.get("q", &QueryRequest { k: 5, ..a1.clone() }).is_none(), "another k");
        assert!(cache.get("q", &QueryRequest { dp: Some(DpParams::laplace(0.5, 1e-7)), ..a1.clone() }).is_none());
        assert!(cache.get("Q", &a1).is_none(), "another text");
        // A new version of b: both plans over b's first file go.
        cache.put("third", &request(&[("b", "b-2.parquet")]), guarded());
        assert_eq!(cache.len(), 1);
        assert!(cache.get("q", &a1).is_none() && cache.get("other", &request(&[("b", "b-1.parquet")])).is_none());
        for i in 0..PLAN_CACHE_ENTRIES + 10 {
            cache.put(&format!("q{i}"), &request(&[("b", "b-2.parquet")]), guarded());
        }
        assert_eq!(cache.len(), PLAN_CACHE_ENTRIES);
        assert!(cache.get("q0", &request(&[("b", "b-2.parquet")])).is_none(), "the oldest left first");
        assert!(cache.get(&format!("q{}", PLAN_CACHE_ENTRIES + 9), &request(&[("b", "b-2.parquet")])).is_some());
    }
}
