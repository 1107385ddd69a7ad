//! Finishing noisy answers: dp mode's measure-then-release (the budget is decided between the
//! two) and aggregate mode's anonymized answers, each run through the analyst's plan above the
//! aggregate, with each value's interval or noise.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Int64Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Column;
use datafusion::datasource::MemTable;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use veil_guard::{DP_ROW, DpPlan};

use crate::Result;
use crate::anon;
use crate::dp::{self, NoisyAggregate};
use crate::engine::{Prepared, QueryEngine, Rows};
use crate::error::internal;
use crate::request::{AnonReport, Answer, DpReport};

/// The column marking the rows a masked filter lets through.
const MATCHED: &str = "__veil_matched";

/// A measuring plan that reads one table, with its filter turned into a mask: every row goes
/// on through the same work (grouping per person, bounding, the top group), the rows the
/// filter would have dropped in groups of their own, dropped only after the last aggregate.
/// A filter on a person's traits let their rows through to that work, and without a join
/// nothing caps how many rows one person has: a red team timed 55 against 48 ms over a
/// target's 20,000 visits, whether they exist in a few queries, no budget. Masked, one
/// person's rows cost the same whether they match or not. `None` when the plan joins (each
/// person's rows are capped at the scan there, `cap_rows` in the guard), has no filter over
/// its scan, or has a node above it this does not carry the mask through.
fn masked(plan: &LogicalPlan) -> datafusion::common::Result<Option<LogicalPlan>> {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::{Aggregate, Filter, Projection, SubqueryAlias, cast, col, lit};
    /// `plan` masked, and whether its output still carries the mask ([`MATCHED`]).
    fn mask(plan: &LogicalPlan) -> datafusion::common::Result<Option<(LogicalPlan, bool)>> {
        let Some(input) = plan.inputs().first().map(|i| mask(i)).transpose()?.flatten() else {
            if let LogicalPlan::Filter(filter) = plan
                && reads_a_table(&filter.input)
            {
                let mut exprs: Vec<Expr> =
                    filter.input.schema().iter().map(|(q, f)| Expr::Column(Column::from((q, f)))).collect();
                // True, false or NULL (undecided): only true is kept.
                let matched = evaluated_whole(filter.predicate.clone()).eq(lit(1i64));
                exprs.push(matched.alias(MATCHED));
                return Ok(Some((
                    LogicalPlan::Projection(Projection::try_new(exprs, Arc::clone(&filter.input))?),
                    true,
                )));
            }
            return Ok(None);
        };
        let (masked, carries) = (Arc::new(input.0), input.1);
        Ok(Some(match plan {
            LogicalPlan::Projection(p) => {
                let mut exprs = p.expr.clone();
                if carries {
                    exprs.push(col(MATCHED));
                }
                (LogicalPlan::Projection(Projection::try_new(exprs, masked)?), carries)
            }
            // A filter above the masked one (the rows low-effect detection leaves out, where
            // the optimizer did not merge it) narrows the mask: its rows go on too.
            LogicalPlan::Filter(f) if carries => {
                let mut exprs: Vec<Expr> = f
                    .input
                    .schema()
                    .iter()
                    .map(|(q, f)| Expr::Column(Column::from((q, f))))
                    .filter(|c| !matches!(c, Expr::Column(c) if c.name == MATCHED))
                    .collect();
                let narrowed = cast(col(MATCHED), DataType::Int64) * evaluated_whole(f.predicate.clone());
                exprs.push(narrowed.eq(lit(1i64)).alias(MATCHED));
                (LogicalPlan::Projection(Projection::try_new(exprs, masked)?), true)
            }
            LogicalPlan::Filter(f) => (LogicalPlan::Filter(Filter::try_new(f.predicate.clone(), masked)?), carries),
            LogicalPlan::SubqueryAlias(a) => {
                (LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(masked, a.alias.clone())?), carries)
            }
            LogicalPlan::Aggregate(a) if !carries => {
                (LogicalPlan::Aggregate(Aggregate::try_new(masked, a.group_expr.clone(), a.aggr_expr.clone())?), false)
            }
            // A total over all groups: its aggregates count only the matched rows, so that it
            // is one row, matched or not, as the total over the filtered rows is.
            LogicalPlan::Aggregate(a) if a.group_expr.is_empty() => {
                let aggregates = a
                    .aggr_expr
                    .iter()
                    .map(|e| {
                        // Under the name a plan above reads it by.
                        let name = e.schema_name().to_string();
                        e.clone().transform_up(only_matched)?.data.alias_if_changed(name)
                    })
                    .collect::<datafusion::common::Result<Vec<_>>>()?;
                (LogicalPlan::Aggregate(Aggregate::try_new(masked, Vec::new(), aggregates)?), false)
            }
            LogicalPlan::Aggregate(a) if !a.group_expr.iter().any(|g| matches!(g, Expr::GroupingSet(_))) => {
                let mut group = a.group_expr.clone();
                group.push(col(MATCHED));
                (LogicalPlan::Aggregate(Aggregate::try_new(masked, group, a.aggr_expr.clone())?), true)
            }
            // Anything else (a sort, a limit, a window) would see the masked rows.
            _ => return Ok(None),
        }))
    }
    /// An aggregate function of `e` counting only the matched rows.
    fn only_matched(e: Expr) -> datafusion::common::Result<datafusion::common::tree_node::Transformed<Expr>> {
        use datafusion::common::tree_node::Transformed;
        Ok(match e {
            Expr::AggregateFunction(mut f) => {
                let matched = col(MATCHED).is_true();
                f.params.filter = Some(Box::new(match f.params.filter.take() {
                    Some(filter) => filter.and(matched),
                    None => matched,
                }));
                Transformed::yes(Expr::AggregateFunction(f))
            }
            other => Transformed::no(other),
        })
    }
    if plan.exists(|node| Ok(matches!(node, LogicalPlan::Join(_))))? {
        return Ok(None);
    }
    let Some((masked, carries)) = mask(plan)? else { return Ok(None) };
    if !carries {
        return Ok(Some(masked));
    }
    let columns: Vec<Expr> = plan.schema().iter().map(|(q, f)| Expr::Column(Column::from((q, f)))).collect();
    let matched = LogicalPlan::Filter(Filter::try_new(col(MATCHED).is_true(), Arc::new(masked))?);
    Ok(Some(LogicalPlan::Projection(Projection::try_new(columns, Arc::new(matched))?)))
}

/// `predicate` as a number that is 1 exactly where it is true, every part of it evaluated on
/// every row: `AND` skips its right side where its left is false for every row of a batch, and
/// `OR` where it is true (an `IN` list is an `OR` of equalities once optimized), so a condition
/// that matches a person's many rows, or nobody, would change how much is evaluated. `AND`
/// becomes a product and `OR` the greatest of its sides, each side an integer (a `BETWEEN` its
/// two bounds); where the predicate is false or NULL, the number is 0 or NULL.
fn evaluated_whole(predicate: Expr) -> Expr {
    use datafusion::logical_expr::expr::Between;
    use datafusion::logical_expr::{BinaryExpr, Operator, cast};
    match predicate {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            evaluated_whole(*left) * evaluated_whole(*right)
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            datafusion::functions::core::expr_fn::greatest(vec![evaluated_whole(*left), evaluated_whole(*right)])
        }
        Expr::Between(Between { expr, negated: false, low, high }) => {
            evaluated_whole(expr.as_ref().clone().gt_eq(*low)) * evaluated_whole(expr.lt_eq(*high))
        }
        other => cast(other, DataType::Int64),
    }
}

/// Whether `plan` is a table's scan, under projections.
fn reads_a_table(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(_) => true,
        LogicalPlan::Projection(p) => reads_a_table(&p.input),
        _ => false,
    }
}

/// Released groups run through the analyst's plan: the rows and their schema, for each output
/// column the aggregate column it copies (if any), and for each row the group it comes from.
struct Finished {
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
    copies: Vec<Option<usize>>,
    row_ids: Int64Array,
}

/// A dp answer's rows, their schema, the intervals of its noisy columns by row, and which
/// aggregate each noisy output column is.
type FinishedDp = (Vec<RecordBatch>, SchemaRef, Vec<(String, Vec<(f64, f64)>)>, Vec<(String, veil_guard::DpAggregate)>);

/// The output columns of `plan` that are copies of one of `dp`'s noisy aggregates (`copies`,
/// as [`DpPlan::finish`] gives them), by name, with that aggregate.
pub(crate) fn noisy_outputs(
    plan: &LogicalPlan,
    dp: &DpPlan,
    copies: &[Option<usize>],
) -> Vec<(String, veil_guard::DpAggregate)> {
    plan.schema()
        .fields()
        .iter()
        .zip(copies)
        .filter_map(|(f, copy)| {
            let aggregate = dp.aggregates.get(copy.as_ref()?.checked_sub(dp.keys)?)?;
            Some((f.name().clone(), *aggregate))
        })
        .collect()
}

/// The noisy aggregate `batch` (columns `c0, c1, …` and [`DP_ROW`]) as a plan whose columns
/// carry the names of the aggregate they stand for.
pub(crate) fn noisy_source(dp: &DpPlan, batch: RecordBatch) -> Result<LogicalPlan> {
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(internal)?;
    let mut exprs = aggregate_columns(dp);
    exprs.push(Expr::Column(Column::from_name(DP_ROW)));
    LogicalPlanBuilder::scan("__veil_dp_noisy", provider_as_source(Arc::new(table)), None)
        .and_then(|b| b.project(exprs))
        .and_then(|b| b.build())
        .map_err(internal)
}

/// The noisy columns `c0, c1, …` under the names (and qualifiers) of the aggregate they stand
/// for, so that the analyst's plan above the aggregate reads them unchanged.
pub(crate) fn aggregate_columns(plan: &DpPlan) -> Vec<Expr> {
    plan.aggregate_schema
        .iter()
        .enumerate()
        .map(|(i, (qualifier, field))| {
            Expr::Column(Column::from_name(format!("c{i}"))).alias_qualified(qualifier.cloned(), field.name())
        })
        .collect()
}

impl QueryEngine {
    /// Aggregate mode over data about people: runs the measuring plan, adds sticky noise to its
    /// groups and applies the noisy threshold, then runs the analyst's plan over the noisy
    /// groups (any read-only rework of released numbers).
    pub(crate) async fn anonymized(&self, prepared: Prepared) -> Result<Answer> {
        let Prepared { state, optimized, outcome, request, .. } = prepared;
        let Some(plan) = &outcome.rewritten.anonymized else {
            return Err(internal("anonymizing a query that is not an anonymized one"));
        };
        // The answer's measurements, then each variant's without one column's conditions (for
        // low-effect detection), all within one deadline; each with its batches' schema (the
        // plan's when it gave none).
        let measure = async {
            let mut all = Vec::with_capacity(1 + plan.variants.len());
            // The optimizer alone: `SessionState::optimize` would run the analyzer, and so the
            // guard, again.
            let optimize =
                |plan: &LogicalPlan| state.optimizer().optimize(plan.clone(), &state, |_, _| {}).map_err(internal);
            let mut plans = vec![optimized.clone()];
            for variant in &plan.variants {
                plans.push(optimize(&variant.plan)?);
            }
            let run = |plan: &LogicalPlan| {
                let plan = masked(plan).map_err(internal).map(|m| m.unwrap_or_else(|| plan.clone()));
                async {
                    let plan = plan?;
                    let batches = self.collect(&state, &plan, false, None, Rows::Measurements).await?;
                    let schema = batches.first().map_or_else(|| Arc::clone(plan.schema().inner()), RecordBatch::schema);
                    Ok::<_, crate::Error>((batches, schema))
                }
            };
            // With ladders, a census first finds, per group, the cells of the grid around
            // each range that add only a few people to it (`anon::widened`), and every
            // measurement after it lets those cells' rows through too. It runs whether or not
            // any is found.
            // With bucketed group keys, a census first finds the rows the group of buckets
            // around theirs claims (`anon::claimed`), and the measurement after it groups them
            // there; each variant has its own, over its rows without the conditions it leaves
            // out. It runs whether or not any is found.
            // Per measurement (the answer's, then each variant's), the rows its groups claim.
            let mut claims = vec![HashMap::new(); plans.len()];
            // Per group of the answer, the claims' dimensions that select nobody from it.
            let mut whole = anon::Whole::default();
            // Censuses asked alike are run, and their claims found, once.
            let mut found_before: Vec<(LogicalPlan, anon::ClaimsAsked<'_>, anon::Claims)> = Vec::new();
            // The answer's description, then each variant's, in the order of `plans`.
            let descriptions: Vec<&DpPlan> =
                std::iter::once(plan).chain(plan.variants.iter().map(|v| &v.measured)).collect();
            for (at, described) in descriptions.iter().enumerate() {
                let Some(buckets) = &described.buckets else { continue };
                let census = optimize(&buckets.census)?;
                let asked = anon::ClaimsAsked::of(described, buckets)?;
                let before = found_before.iter().position(|(c, a, _)| *c == census && *a == asked);
                let before = match before {
                    Some(before) => before,
                    None => {
                        let (batches, schema) = run(&census).await?;
                        let (found, along) =
                            anon::claimed(&batches, &schema, &asked, &plan.noise, request.k, &request.noise_key)?;
                        if at == 0 {
                            whole = along;
                        }
                        found_before.push((census, asked, found));
                        found_before.len() - 1
                    }
                };
                // Which of them are this measurement's rows follows from its own conditions.
                let (_, asked, found) = found_before.get(before).ok_or_else(|| internal("claims found before"))?;
                let found = anon::claims_for(found, asked, &described.noise);
                // A variant also takes the rows the answer's claims took, where its own took
                // none: leaving conditions out takes nobody out of a group.
                let found = match claims.first() {
                    Some(answer) if at > 0 => anon::with_claims_of(found, answer),
                    _ => found,
                };
                if let Some(plan) = plans.get_mut(at) {
                    *plan = veil_guard::with_claimed(std::mem::take(plan), &found).map_err(internal)?;
                }
                if let Some(claimed) = claims.get_mut(at) {
                    *claimed = found;
                }
            }
            let mut widened = None;
            if let Some(census) = &plan.census {
                let census = optimize(census)?;
                let answer = claims.first().ok_or_else(|| internal("the answer's claims"))?;
                let census = veil_guard::with_claimed(census, answer).map_err(internal)?;
                let (batches, schema) = run(&census).await?;
                let found = anon::widened(&batches, &schema, plan, &request.noise_key)?;
                for plan in &mut plans {
                    *plan = veil_guard::with_widened(std::mem::take(plan), &found).map_err(internal)?;
                }
                widened = Some(found);
            }
            // With joins to tables about nobody, a census per value looked up finds the values
            // only a few of a group's people have, as an IN list's constants (below), and the
            // measurement leaves their rows out. Each measurement has its own, over its rows
            // (a variant's without the conditions it leaves out), so that the same rows are
            // decided alike however they are asked: a variant that took the answer's found a
            // value the answer's conditions removed nowhere, and `WHERE l.g` answered without
            // the condition held the one person of a code `l.g` leaves out, where the key
            // `l.g` and a flag holding that code dropped them (a red team, 2026-12-06:
            // membership 60 of 60 in two queries). They run whether or not any is found.
            let mut looked_up = vec![HashMap::new(); plans.len()];
            for (at, described) in descriptions.iter().enumerate() {
                for (name, census) in &described.looked_up {
                    let claimed = claims.get(at).ok_or_else(|| internal("claims of a measurement"))?;
                    let mut census = veil_guard::with_claimed(optimize(census)?, claimed).map_err(internal)?;
                    if let Some(widened) = &widened {
                        census = veil_guard::with_widened(census, widened).map_err(internal)?;
                    }
                    let (batches, schema) = run(&census).await?;
                    let found = anon::looked_up(&batches, &schema, described.keys, &request.noise_key)?;
                    if let Some(looked) = looked_up.get_mut(at) {
                        looked.insert(name.clone(), found);
                    }
                }
            }
            for (plan, looked) in plans.iter_mut().zip(&looked_up) {
                if !looked.is_empty() {
                    *plan = veil_guard::with_dropped(std::mem::take(plan), looked).map_err(internal)?;
                }
            }
            // With IN lists, a first measurement finds the constants that only a few of a
            // group's people match (low-effect detection per constant), and every measurement
            // after it leaves their rows out. It runs whether or not any is found, so that the
            // time taken does not say.
            let mut dropped = anon::Dropped::default();
            if !plan.noise.listed.is_empty() {
                let (census, schema) = run(&plans[0]).await?;
                dropped = anon::dropped(&census, &schema, plan, &request.noise_key)?;
                for (plan, looked) in plans.iter_mut().zip(looked_up) {
                    let mut hashes = dropped.hashes.clone();
                    hashes.extend(looked);
                    *plan = veil_guard::with_dropped(std::mem::take(plan), &hashes).map_err(internal)?;
                }
            }
            for plan in &plans {
                all.push(run(plan).await?);
            }
            Ok((all, dropped, whole))
        };
        let (mut measured, dropped, whole) = self.within_deadline(measure).await?;
        if measured.is_empty() {
            return Err(internal("no measurements"));
        }
        let variants = measured.split_off(1);
        let (batches, schema) = measured.swap_remove(0);
        let noisy =
            anon::add_noise(&batches, &schema, plan, &variants, (&dropped, &whole), request.k, &request.noise_key)?;
        // The noise of each output column that copies an aggregate, when the answer's rows are
        // the released groups (projected, sorted, filtered or limited); a rework that mixes
        // groups has none to state.
        let mut answer = match self.finish_released(plan, &noisy.values).await? {
            Some(finished) => {
                // Each output column that copies an aggregate, with that aggregate's index.
                let copies: Vec<(String, usize)> = (finished.schema.fields().iter())
                    .zip(&finished.copies)
                    .filter_map(|(field, copy)| Some((field.name().clone(), copy.as_ref()?.checked_sub(plan.keys)?)))
                    .collect();
                let noise_sd = (copies.iter())
                    .filter_map(|(name, j)| Some((name.clone(), noisy.noise_sd.get(*j).copied().flatten()?)))
                    .collect();
                let flattened = (copies.iter())
                    .filter(|(_, j)| noisy.flattened.get(*j).copied().unwrap_or(false))
                    .map(|(name, _)| name.clone())
                    .collect();
                let mut answer = Answer::rows(finished.schema, finished.batches);
                answer.anonymized = Some(AnonReport { noise_sd, flattened, rows_capped: plan.rows_capped.clone() });
                answer
            }
            None => {
                let rows = noisy.values.num_rows() as u64;
                let table = MemTable::try_new(noisy.values.schema(), vec![vec![noisy.values]]).map_err(internal)?;
                let source = LogicalPlanBuilder::scan("__veil_anon_noisy", provider_as_source(Arc::new(table)), None)
                    .and_then(|b| b.project(aggregate_columns(plan)))
                    .and_then(|b| b.build())
                    .map_err(internal)?;
                let finished = plan.over(source).map_err(internal)?;
                let (state, _) = self.session(None, rows);
                let optimized = state.optimize(&finished).map_err(internal)?;
                let mut answer = self.answer(&state, &optimized, &optimized, false, false).await?;
                answer.anonymized = Some(AnonReport { rows_capped: plan.rows_capped.clone(), ..AnonReport::default() });
                answer
            }
        };
        answer.rules = outcome.assessment.rules.clone();
        answer.suppressed_groups = noisy.suppressed;
        self.within_row_limit(answer)
    }

    /// Dp mode: runs the bounded plan and adds noise to its totals, applying the threshold.
    /// Nothing of it is released yet: the caller charges the budget (or finds the answer an
    /// identical query recorded), then calls [`QueryEngine::release`].
    ///
    /// # Errors
    /// See [`Error`]; [`Error::Internal`] for a prepared query that is not a dp one.
    pub async fn measure(&self, prepared: &Prepared) -> Result<NoisyAggregate> {
        let Prepared { state, optimized, outcome, request, physical, .. } = prepared;
        let (Some(dp), Some(params)) = (&outcome.rewritten.dp, request.dp) else {
            return Err(internal("measuring a query that is not a dp one"));
        };
        let batches = self
            .within_deadline(self.collect(state, optimized, false, Some(physical), Rows::Measurements))
            .await
            .map_err(|e| e.told(request.over_personal_data()))?;
        let schema = batches.first().map(RecordBatch::schema).unwrap_or_else(|| Arc::clone(optimized.schema().inner()));
        dp::add_noise(&batches, &schema, dp, params, request.k)
    }

    /// Dp mode: the answer from a `noisy` aggregate (this query's measurement, or the one
    /// `replayed` from an identical earlier query), with the analyst's post-processing.
    ///
    /// # Errors
    /// See [`Error`]; [`Error::Internal`] for a prepared query that is not a dp one.
    pub async fn release(&self, prepared: Prepared, noisy: NoisyAggregate, replayed: bool) -> Result<Answer> {
        let Prepared { plan, outcome, request, .. } = prepared;
        let (Some(dp), Some(params)) = (&outcome.rewritten.dp, request.dp) else {
            return Err(internal("releasing a query that is not a dp one"));
        };
        let (batches, schema, intervals, outputs) = self.finish_dp(dp, &noisy, &plan).await?;
        let mut report = DpReport::new(dp, params, replayed);
        report.threshold = noisy.threshold;
        report.released_from = dp::released_from(dp, params, request.k)?;
        report.intervals = intervals;
        report.half_widths = dp::half_widths(dp, params, outputs)?;
        let suppressed_groups = noisy.suppressed;
        if !replayed {
            report.noisy = Some(noisy);
        }
        let mut answer = Answer::rows(schema, batches);
        answer.suppressed_groups = suppressed_groups;
        answer.rules = outcome.assessment.rules.clone();
        answer.dp = Some(report);
        self.within_row_limit(answer)
    }

    /// `answer`, unless it has more rows than an answer may hold. Applied to what is released
    /// (the groups past the noisy threshold), not to the groups measured before it.
    fn within_row_limit(&self, answer: Answer) -> Result<Answer> {
        let limit = self.limits().max_result_rows;
        if answer.row_count() > limit {
            return Err(crate::Error::ResultTooLarge { limit });
        }
        Ok(answer)
    }

    /// Dp mode: the 95% half-width of each noisy count and sum column of the answer.
    pub(crate) fn half_widths(&self, prepared: &Prepared) -> Result<Vec<(String, f64)>> {
        let (Some(dp), Some(params)) = (&prepared.outcome.rewritten.dp, prepared.request.dp) else {
            return Ok(Vec::new());
        };
        dp::half_widths(dp, params, prepared.dp_outputs()?)
    }

    /// Runs the analyst's plan over the noisy aggregate: renaming, expressions, HAVING, ORDER
    /// BY and LIMIT are post-processing and cost no privacy. Returns the rows, their schema, the
    /// intervals of the output columns that are noisy values, and those columns' aggregates.
    pub(crate) async fn finish_dp(
        &self,
        dp: &DpPlan,
        noisy: &NoisyAggregate,
        plan: &LogicalPlan,
    ) -> Result<FinishedDp> {
        let values = noisy.values(dp)?;
        let finished = self.finish_released(dp, &values).await?.ok_or_else(|| internal("finishing a dp answer"))?;
        let names = plan.schema().fields().iter().map(|f| f.name().clone());
        let intervals = dp::output_intervals(noisy, &finished.copies, &finished.row_ids)
            .into_iter()
            .zip(names)
            .filter_map(|(i, name)| i.map(|i| (name, i)))
            .collect();
        Ok((finished.batches, finished.schema, intervals, noisy_outputs(plan, dp, &finished.copies)))
    }

    /// The analyst's plan run over the released groups `values` (columns `c0, c1, …`), keeping
    /// track of which group each answer row comes from and which output columns are plain
    /// copies of an aggregate: possible when the plan above the aggregate only projects, sorts,
    /// filters and limits; otherwise `None`.
    async fn finish_released(&self, plan: &DpPlan, values: &RecordBatch) -> Result<Option<Finished>> {
        let rows = Int64Array::from_iter_values(0..values.num_rows() as i64);
        let mut fields: Vec<FieldRef> = values.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(DP_ROW, DataType::Int64, false)));
        let mut arrays = values.columns().to_vec();
        arrays.push(Arc::new(rows));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(internal)?;
        let Ok((finished, copies)) = plan.finish(noisy_source(plan, batch.clone())?) else { return Ok(None) };
        let done = match selected(&finished, &batch) {
            Some(done) => done,
            None => {
                let (state, _) = self.session(None, values.num_rows() as u64);
                let optimized = state.optimize(&finished).map_err(internal)?;
                self.answer(&state, &optimized, &optimized, false, false).await?
            }
        };
        let width = done.schema.fields().len().saturating_sub(1);
        let keep: Vec<usize> = (0..width).collect();
        let schema = Arc::new(done.schema.project(&keep).map_err(internal)?);
        let mut batches = Vec::with_capacity(done.batches.len());
        let mut row_ids = Vec::new();
        for b in &done.batches {
            let ids = b.column(width).as_primitive_opt::<Int64Type>().ok_or_else(|| internal("row ids"))?;
            row_ids.extend(ids.values().iter().copied());
            batches.push(b.project(&keep).map_err(internal)?);
        }
        Ok(Some(Finished { batches, schema, copies, row_ids: Int64Array::from(row_ids) }))
    }
}

/// The answer of `plan` over `batch` without running it, when `plan` only selects and renames
/// columns of its scan of `batch`, as the analyst's part of most dp queries does
/// (`SELECT key, COUNT(*) AS n … GROUP BY key`): a second planning and run would copy the same
/// columns at many times the cost.
fn selected(plan: &LogicalPlan, batch: &RecordBatch) -> Option<Answer> {
    fn columns(plan: &LogicalPlan) -> Option<Vec<usize>> {
        match plan {
            LogicalPlan::TableScan(scan) if scan.filters.is_empty() && scan.fetch.is_none() => {
                Some(scan.projection.clone().unwrap_or_else(|| (0..scan.projected_schema.fields().len()).collect()))
            }
            LogicalPlan::SubqueryAlias(alias) => columns(&alias.input),
            LogicalPlan::Projection(p) => {
                let below = columns(&p.input)?;
                p.expr
                    .iter()
                    .map(|e| {
                        let Expr::Column(c) = e.clone().unalias_nested().data else { return None };
                        below.get(p.input.schema().maybe_index_of_column(&c)?).copied()
                    })
                    .collect()
            }
            _ => None,
        }
    }
    let arrays = columns(plan)?.into_iter().map(|i| batch.columns().get(i).cloned()).collect::<Option<Vec<_>>>()?;
    let schema = Arc::clone(plan.schema().inner());
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).ok()?;
    Some(Answer::rows(schema, vec![batch]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::noisy_scan;
    use datafusion::prelude::{col, lit};

    #[test]
    fn selecting_and_renaming_columns_is_answered_without_running_a_plan() {
        let (batch, scan) = noisy_scan();
        let plan = scan
            .project([col("c1").alias("n"), col("c0").alias("district")])
            .and_then(|b| b.alias("q"))
            .and_then(|b| b.project([col("district"), col("n").alias("people")]))
            .and_then(|b| b.build())
            .expect("plan");
        let answer = selected(&plan, &batch).expect("answered directly");
        let names: Vec<&str> = answer.schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["district", "people"]);
        assert_eq!(answer.batches[0].columns(), [batch.column(0).clone(), batch.column(1).clone()]);
    }

    /// A filter turned into a mask answers exactly what the filter did: totals over all groups
    /// (one row even when nothing matches), totals per group (none for a group nothing matches),
    /// conditions that are NULL on some rows, every row or none matching.
    #[tokio::test]
    async fn a_masked_filter_measures_what_the_filter_did() {
        use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
        use datafusion::functions_aggregate::expr_fn::{bit_xor, count, max, sum};
        use datafusion::logical_expr::{cast, when};
        use datafusion::prelude::SessionContext;
        let district: ArrayRef =
            Arc::new(StringArray::from(vec![Some("甲"), Some("甲"), None, Some("乙"), Some("乙"), Some("丙")]));
        let person: ArrayRef = Arc::new(Int64Array::from(vec![1, 1, 2, 3, 4, 5]));
        let age: ArrayRef = Arc::new(Int64Array::from(vec![Some(30), Some(30), Some(41), None, Some(52), Some(67)]));
        let batch = RecordBatch::try_from_iter([("district", district), ("person", person), ("age", age)]).unwrap();
        let table = Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap());
        let ctx = SessionContext::new();
        let conditions = [
            col("district").eq(lit("甲")).and(col("age").gt_eq(lit(30))),
            col("age").between(lit(40), lit(60)),
            col("district").eq(lit("丁")),
            col("age").gt_eq(lit(0)).or(col("district").is_null()),
            col("district").in_list(vec![lit("乙"), lit("丙")], false).and(col("age").lt(lit(60))),
        ];
        for condition in conditions {
            for grouped in [false, true] {
                let per_person = LogicalPlanBuilder::scan("t", provider_as_source(table.clone()), None)
                    .and_then(|b| b.filter(condition.clone()))
                    .and_then(|b| {
                        b.aggregate(
                            vec![col("district"), col("person")],
                            vec![
                                count(lit(1)).alias("rows"),
                                sum(col("age")).alias("ages"),
                                // A mark of the rows a constant matches, as the anonymizing
                                // plan makes for each constant of an IN list.
                                max(cast(col("district").eq(lit("甲")), DataType::Int64)).alias("marked"),
                            ],
                        )
                    })
                    .unwrap();
                let keys = if grouped { vec![col("district")] } else { Vec::new() };
                // The totals read above the aggregate by their names, one of them not aliased.
                let plan = per_person
                    .aggregate(
                        keys.clone(),
                        vec![
                            sum(col("rows")),
                            count(col("person")).alias("people"),
                            bit_xor(when(col("marked").eq(lit(1i64)), col("person")).end().unwrap()).alias("marks"),
                        ],
                    )
                    .and_then(|b| {
                        b.project(keys.into_iter().chain([col("sum(rows)").alias("rows"), col("people"), col("marks")]))
                    })
                    .and_then(|b| b.build())
                    .unwrap();
                // As the engine does: the plan analyzed (and optimized), masked, and planned
                // without optimizing again.
                let state = ctx.state();
                let plan = state.analyzer().execute_and_check(plan, state.config_options(), |_, _| {}).unwrap();
                let masked = masked(&plan).unwrap().expect("masked");
                let run = |p: LogicalPlan| {
                    let state = state.clone();
                    async move {
                        let physical = state.query_planner().create_physical_plan(&p, &state).await.unwrap();
                        let batches = datafusion::physical_plan::collect(physical, state.task_ctx()).await.unwrap();
                        let mut rows: Vec<String> = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                            .unwrap()
                            .to_string()
                            .lines()
                            .map(str::to_owned)
                            .collect();
                        rows.sort();
                        rows
                    }
                };
                assert_eq!(run(masked).await, run(plan).await, "{condition} (grouped: {grouped})");
            }
        }
    }

    #[test]
    fn anything_more_than_selecting_columns_runs_the_plan() {
        let (batch, scan) = noisy_scan();
        let sorted = scan.clone().sort([col("c1").sort(false, true)]).and_then(|b| b.build()).expect("plan");
        let computed = scan.clone().project([col("c1") + lit(1)]).and_then(|b| b.build()).expect("plan");
        let filtered = scan.filter(col("c1").gt(lit(20))).and_then(|b| b.build()).expect("plan");
        for plan in [sorted, computed, filtered] {
            assert!(selected(&plan, &batch).is_none(), "{}", plan.display_indent());
        }
    }
}
