//! Aggregate mode over data about people: the plan that measures, per group, what the query
//! layer needs to release an anonymized answer ([`bound`]). Sums and averages see each value
//! clamped to its column's declared bounds, so one person's extreme value moves an answer by
//! at most the bound; the largest contributions are flattened to the top group's average; the
//! set of people in the group seeds its noise.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, cast, lit};

use crate::DpAggregate;
use crate::exprs::unalias;
use crate::rules::anon_shape::reads_aggregates;

/// How many of a group's largest contributions are outliers, brought down to the top group's
/// average before noise: always three, whatever their slope.
///
/// Why not more: outliers are brought to the top group's average, which moves by a quarter
/// of whoever is first in it; with up to 24, a staircase of planted heavy people made a target
/// after them count many times over (a red team: 60 of 60). Why not fewer: with two, a target
/// third behind two heavy people counted in full (50 of 50). Three bounds the first to three
/// quarters of a contribution (docs/aggregate.md, "Flattening").
///
/// Why always three: where the number changed with the contributions (two, and a third more
/// than twice the next four's average), one person changed it, and the flattened total jumped:
/// four people at the bound beside people of none flatten to 1.75 times it, five to 4.5 times
/// (a red team, 2026-12-06: whether the fifth had a value, 89 of 100 from a count of values and
/// a sum). With three always, one person moves a flattened total by 1.75 times their
/// contribution at most (a search over rankings), and the worst layout a simulation of the
/// rules found calls 75% in one query, where it found 83% before.
pub const ANON_OUTLIERS: i64 = 3;
/// The least middle of an anonymized answer's noisy release threshold, whatever the level's k
/// (the query layer draws the threshold; why this number: its `MIN_THRESHOLD`).
pub const ANON_LEAST_THRESHOLD: u64 = 8;
/// How many contributions after the outliers make up the top group whose average sets both the
/// outliers' flattened value and the noise's scale.
pub(crate) const TOP_GROUP: i64 = 4;

/// The column of the anonymizing plan holding the seed of a group's set of people.
pub const ANON_SEED: &str = "__veil_dp_seed";

/// Builds the plan that measures an anonymized answer's aggregate, and the [`DpPlan`] that
/// finishes it once noise is added (only its aggregate schema, keys, aggregates and the
/// analyst's plan are used).
///
/// ```text
/// rows (privacy unit carried up, as a 64-bit hash)
///   ─► per person and group: COUNT, SUM of values clamped to their bounds, their count, each
///      within the most one person contributes (`DpPlan::rows_per_person` times the bound)
///   ─► per group, for each contribution: the total, and in the same pass (ranked largest first,
///      ties by unit) the total of the ANON_OUTLIERS largest and the average of the TOP_GROUP
///      after them, and the noise's scale (`top.rs`, `Parts::scale`); the number of people; the
///      XOR of their hashes
/// ```
///
/// Output, in order: the group keys; per aggregate, for each contribution it measures (rows for
/// COUNT; the sum for SUM; the sum and the count of values for AVG; nothing for COUNT(DISTINCT
/// unit)), four Float64 columns: total, the outliers' excess over the top group's average (their
/// total without a top group), top group's average (null when the
/// group has no more than `ANON_OUTLIERS` people) and the scale, and for a sum that may be below
/// zero ([`DpAggregate::signed`]) these three of the contributions above zero and then three more
/// of the magnitudes of those below zero; then the Int64 number of people; then the UInt64
/// seed ([`ANON_SEED`]); then, per constant of the query's IN lists (`NoiseLabels::listed`), the
/// UInt64 seed of the group's people whose rows match that constant (0 when none do); last, per
/// constant again, the Int64 number of those people; in a variant over several rows a person
/// ([`super::DpPlan::touched`]), then the Int64 number of people with a row its left-out
/// conditions do not hold and the UInt64 seed of their set; over several rows a person, last,
/// the UInt64 seed of the people with their numbers of rows, and per measured contribution the
/// UInt64 seed of what each person contributes to it (their rows with their count, or with
/// their values). Rows of a (group, constant) pair
/// the query layer drops are left out first (`dropped`: low-effect detection per constant).
///
/// Why per constant: `x IN (D ∪ {c}) … minus x IN (D) …` over fresh random paddings D gives
/// pairs of groups that differ by the people matching `c`, each pair with fresh noise, so the
/// average of many pairs converged on one person's contribution. A layer seeded by `c` and by
/// the people matching it is the same in every pair, and does not average away.
pub(super) fn bound(
    upper: LogicalPlan,
    assessment: &crate::Assessment,
    threshold: &mut super::enforce_min_group_size::Threshold<'_>,
) -> Result<(LogicalPlan, super::DpPlan)> {
    let one_row = threshold.ctx().reach(&lowest_aggregate(&upper)?.input).one_row_per_person;
    let beside = Beside::of(&upper)?;
    let (plan, mut described) = bound_with(upper.clone(), assessment, threshold, one_row, &beside, None, None)?;
    // Low-effect detection: per column the WHERE clause restricts (ranges, equalities, IN
    // lists, boolean columns; a group key's column too: a red team made the income range
    // exempt by grouping on `floor(income / 100000)`, one group for everyone), the same answer
    // without that column's conditions, for the query layer to answer a group with when they
    // remove almost nobody from it.
    //
    // And without every combination of them: a group from which several columns' conditions
    // remove almost nobody is answered without all of those. Measured without each alone and
    // without all of them only, a group whose low-effect columns stood beside another column
    // was withheld: with the target and two known people outside a flag, a range removing
    // nobody and a district list, the twin's group (two removed, always low-effect beside the
    // range) was always withheld and the target's (three: a draw) answered now and then; any
    // answer over 16 paddings told the target, 40 of 40 (a red team, 2026-12-04). At most
    // `MAX_RESTRICTED` columns (`anon_shape`): fifteen variants.
    let restricted = restricted_columns(&lowest_aggregate(&upper)?.input);
    let reads: std::collections::HashMap<String, String> = restricted.iter().cloned().collect();
    let mut columns: Vec<String> = restricted.into_iter().map(|(column, _)| column).collect();
    if columns.len() > crate::rules::anon_shape::MAX_RESTRICTED {
        return plan_err!(
            "conditions restrict at most {} columns, and these restrict {}",
            crate::rules::anon_shape::MAX_RESTRICTED,
            columns.len()
        );
    }
    // A column the claims decide as a key (a range that is a key's bucket, or on a key's own
    // column) has no variant: the claims' cell of every value of the key is its low-effect
    // detection, as for the key. Left out by a variant too, a range's group with few people
    // outside it in the other column's bucket was answered from the claims without it, and
    // those of one dimension fewer decide a contested person otherwise (a red team,
    // 2026-12-05: two ranges, or a range and a key, against two keys, the same labels, apart
    // only with the target, 48 of 50 districts over ten flags).
    columns.retain(|c| !beside.as_keys.contains(c));
    let agg = lowest_aggregate(&upper)?.clone();
    // Every variant measures the answer's IN-list constants, those of lists it leaves out too
    // (`bound_with`).
    let listed = conditions(&agg.input).listed;
    let keys: Vec<usize> = bucketed_keys(&agg, &crate::exprs::group_keys(&agg)?).into_iter().map(|(i, _)| i).collect();
    let joint = beside.joint;
    for subset in 1..(1usize << columns.len()) {
        let chosen: Vec<String> =
            columns.iter().enumerate().filter(|(i, _)| subset & (1 << i) != 0).map(|(_, c)| c.clone()).collect();
        let mut without = upper.clone();
        for column in &chosen {
            without = without_conditions_on(&without, column)?;
        }
        // Over several rows a person, the variant also measures whose rows the conditions it
        // leaves out change: a condition that removes rows of everybody but nobody whole is
        // not low-effect (over a visits register, `WHERE code = 1` was answered with every
        // visit, and a key's group with a person more took every row of its district).
        let (plan, mut measured) = if one_row {
            bound_with(without.clone(), assessment, threshold, one_row, &beside, Some(&listed), None)?
        } else {
            let (marked, holds) = marked_without(&upper, &chosen)?;
            bound_with(marked, assessment, threshold, one_row, &beside, Some(&listed), Some(holds))?
        };
        // Each variant claims over its own rows: claims made with the conditions it leaves out
        // never saw a person those conditions remove. A red team put the target alone in the
        // bucket next to a key's group (born before 1950, the rest of their district after):
        // without a flag the group claimed them, with it the claims did not, and the variant
        // that answered the group without the flag kept those claims, so the keyed query with
        // the flag equalled the one without it exactly when the target passed (60 of 60).
        if !keys.is_empty() || joint {
            measured.buckets = Some(claims(&without, &keys, &beside.reads, threshold, one_row)?);
        }
        let reads = chosen.iter().map(|c| reads.get(c).unwrap_or(c).clone()).collect();
        described.variants.push(super::Variant { columns: chosen, reads, plan, measured });
    }
    // The census of the ranges decided column by column: none when the claims decide them.
    if !joint && !described.ladders.is_empty() {
        described.census = Some(census(&upper, threshold, one_row)?);
    }
    described.rows_capped = super::cap_rows::capped(&agg.input, threshold.ctx())?;
    if !keys.is_empty() || joint {
        described.buckets = Some(claims(&upper, &keys, &beside.reads, threshold, one_row)?);
    }
    Ok((plan, described))
}

/// The claims of `upper`, the answer or a variant of it (`buckets.rs`): its bucket census over
/// the bucketed keys `keys` and the ranges beside them (`reads`, the columns they read), each
/// range by its place among `upper`'s ladders, none where `upper` leaves it out (every row is
/// in it there).
fn claims(
    upper: &LogicalPlan,
    keys: &[usize],
    reads: &[datafusion::common::Column],
    threshold: &mut super::enforce_min_group_size::Threshold<'_>,
    one_row: bool,
) -> Result<super::Buckets> {
    let kept = laddered(&lowest_aggregate(upper)?.input);
    let ranges: Vec<(Option<usize>, datafusion::common::Column)> =
        reads.iter().map(|read| (kept.iter().position(|l| l.read == *read), read.clone())).collect();
    let spelled = ranges
        .iter()
        .enumerate()
        .filter_map(|(r, (at, _))| Some((r, kept.get((*at)?)?.spelled.as_ref()?.1.clone())))
        .collect();
    Ok(super::Buckets {
        census: bucket_census(upper, threshold, one_row, &ranges)?,
        keys: keys.to_vec(),
        ranges: ranges.iter().map(|(at, _)| *at).collect(),
        spelled,
    })
}

/// Whether the answer's laddered columns (`ladders` of them, `spelled` of those a key's bucket,
/// beside `bucketed` keys) are decided region by region with the keys, by the claims
/// (`buckets.rs`), rather than column by column: beside a key, as a key's bucket, or two or
/// more of them.
///
/// Why: decided column by column, each with the others at their ranges, a row in a low-effect
/// cell of each range was let in without anyone counting the corner those cells make. With
/// one person the attacker knew in the corner of every other district and an IN list putting
/// two of them beside the target's district, two ranges let the corner in, while a key beside
/// a range decided it by its people (two: always low-effect; three, with the target: a sticky
/// draw). Four spellings of one question disagreed for the target and never for its twin, 18
/// of 18 on held-out pairs.
///
/// And a range on a key's column, or one that is a key's bucket, is decided as the key's
/// groups are: the rows the key's groups in it hold, what they claim from around it and not
/// what groups outside it claim (`spelled.rs`; a red team, 2026-12-05: a range against the
/// key's group of its bucket differed exactly when a person both it and a group next to it
/// could claim was there).
fn jointly(bucketed: usize, ladders: usize, spelled: usize) -> bool {
    ladders > 0 && (bucketed > 0 || spelled > 0 || ladders > 1)
}

/// The answer's laddered columns besides its keys', and whether the claims decide every
/// laddered column ([`jointly`]). The answer's and every variant's measurements name a row by
/// the same columns.
#[derive(Default)]
struct Beside {
    /// The columns the conditions read of each laddered column no bucketed key generalizes, in
    /// the ladders' order. A key's claims see them as dimensions of their own (`buckets.rs`): a
    /// person outside both a range and a key's bucket is in the cells around both, as ranges
    /// on both columns measure them.
    reads: Vec<datafusion::common::Column>,
    joint: bool,
    /// The laddered columns the claims decide as a key's (where `joint`): a range that is a
    /// key's bucket, or on a bucketed key's column.
    as_keys: Vec<String>,
}

impl Beside {
    fn of(upper: &LogicalPlan) -> Result<Self> {
        let agg = lowest_aggregate(upper)?;
        let keys = crate::exprs::group_keys(agg)?;
        let bucketed = bucketed_keys(agg, &keys);
        let key_columns: Vec<String> = bucketed
            .iter()
            .map(|(i, _)| {
                super::KeyLabel::new(&read_at_source(&keys[*i].clone().unalias(), &agg.input), &agg.input)
                    .column()
                    .to_owned()
            })
            .collect();
        let ladders = laddered(&agg.input);
        let beside = |l: &Laddered| !key_columns.contains(&l.column);
        let spelled = ladders.iter().filter(|l| beside(l) && l.spelled.is_some()).count();
        let joint = jointly(bucketed.len(), ladders.len(), spelled);
        let as_keys =
            ladders.iter().filter(|l| joint && (l.spelled.is_some() || !beside(l))).map(|l| l.column.clone()).collect();
        let reads = ladders.into_iter().filter(|l| beside(l)).map(|l| l.read).collect();
        Ok(Self { reads, joint, as_keys })
    }
}

/// The group keys of `agg` whose buckets are claimed from the cells around them (`buckets.rs`):
/// per key, its position and the column it reads at the scan. Every key over one column: one
/// whose buckets have cells of the grid around them, or any other (a boolean, a part of a date
/// that repeats), whose only cell is every value.
///
/// Why: the query without a key holds every row the key's groups do. A group against it
/// differs by the people outside the group; with the target alone outside (the one person of
/// their district not living alone, or not coded I10), the two were one person apart, and
/// beside a district list padded afresh per pair their difference moved with the target
/// while a twin's stayed put. Every key's last cell is every value, NULL too. A part of a date
/// that repeats (`date_part('day', d)`) was left out, having no grid: its group 15 held
/// everyone but the one person born on another day, and `WHERE date_part('day', d) = 15`,
/// which low-effect detection answers without the condition, everyone: equal without that
/// person, apart with them (a red team, 2026-12-06: 59 of 60 districts in two queries).
fn bucketed_keys(agg: &Aggregate, keys: &[Expr]) -> Vec<(usize, datafusion::common::Column)> {
    let mut found = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let at_source = read_at_source(&key.clone().unalias(), &agg.input);
        if let [only] = at_source.column_refs().into_iter().collect::<Vec<_>>().as_slice() {
            found.push((i, (*only).clone()));
        }
    }
    found
}

/// The group keys `keys` of `agg` as every measurement groups rows by them, over `input` (the
/// aggregate's input threaded with the units `unit` hashes): each key with buckets through
/// `__veil_claimed`, the others bare; and `input` with those keys' columns carried up to it.
/// Over one row per person (`one_row`), a row is claimed by its value, not its person. Where
/// the claims decide the laddered columns (`joint`, [`jointly`]; `ranges` the columns of those
/// beside the keys), also the condition a row passes them by, given the one an unclaimed row
/// passes by (in every range): for a claimed row, whether the group that claimed it is one of
/// the answer's.
fn claimed_keys(
    input: &LogicalPlan,
    agg: &Aggregate,
    keys: &[Expr],
    unit: &Expr,
    one_row: bool,
    ranges: &[datafusion::common::Column],
    joint: bool,
) -> Result<(LogicalPlan, Vec<Expr>, Option<Admitted>)> {
    // Over one row per person, rows are claimed by their values alone (the census counts
    // people per combination of values).
    let unit = if one_row { lit(0u64) } else { unit.clone() };
    let bare: Vec<Expr> = keys.iter().map(|k| k.clone().unalias()).collect();
    let bucketed = bucketed_keys(agg, keys);
    if bucketed.is_empty() && !joint {
        return Ok((input.clone(), bare, None));
    }
    // The keys' columns, then the other ranges' columns: a claim names a row by them all.
    let mut columns = bucketed.clone();
    columns.extend(ranges.iter().map(|r| (usize::MAX, r.clone())));
    let (input, values) = carried(input, &columns)?;
    let others: Vec<Expr> = bare
        .iter()
        .enumerate()
        .filter(|(j, _)| !bucketed.iter().any(|(i, _)| i == j))
        .map(|(_, k)| k.clone())
        .collect();
    let mut keyed = bare.clone();
    for (i, _) in &bucketed {
        keyed[*i] = super::buckets::claimed(*i, bare[*i].clone(), unit.clone(), &values, others.clone());
    }
    let admitted = joint.then_some(Admitted { unit, values, others });
    Ok((input, keyed, admitted))
}

/// What a row is named by in the claims where they decide the laddered columns
/// ([`claimed_keys`]).
struct Admitted {
    unit: Expr,
    values: Vec<Expr>,
    others: Vec<Expr>,
}

impl Admitted {
    /// The condition a row passes the laddered columns by, given `own`, the one an unclaimed
    /// row passes them by (`buckets::admitted`).
    fn given(self, own: Expr) -> Expr {
        super::buckets::admitted(own, self.unit, &self.values, self.others)
    }
}

/// `input` with the columns of `bucketed` (their positions and the columns they read at the
/// scan) carried up to it, and each as `input` reads it.
fn carried(input: &LogicalPlan, bucketed: &[(usize, datafusion::common::Column)]) -> Result<(LogicalPlan, Vec<Expr>)> {
    let (mut input, mut values, mut hidden) = (input.clone(), Vec::new(), 0);
    for (_, source) in bucketed {
        let Some((carried, read)) = super::buckets::carry(&input, source, &mut hidden)? else {
            return plan_err!(
                "a group key over `{}`, a column the query does not keep below its aggregate",
                source.name
            );
        };
        input = carried;
        values.push(Expr::Column(read));
    }
    Ok((input, values))
}

/// The census of the bucketed group keys (`buckets.rs`), over the rows of the aggregate's
/// input with the conditions of every laddered column left out: per other keys (in order); per
/// bucketed key, the key and the value of its column; per range beside the keys (`ranges`,
/// as [`Beside::reads`] lists them, by their place among `upper`'s ladders: none where
/// `upper`, a variant, has left its conditions out), its value and the Int64 1 where the row
/// is in its range (0 or NULL elsewhere; 1 on every row for a range left out); per range that
/// is a key's bucket (`spelled.rs`), in the same order, the row's bucket of that key; then the
/// person's hash, 1 and the hash again, once per person; over one row per person, 0, the
/// number of people and the XOR of their hashes.
fn bucket_census(
    upper: &LogicalPlan,
    threshold: &mut super::enforce_min_group_size::Threshold<'_>,
    one_row: bool,
    ranges: &[(Option<usize>, datafusion::common::Column)],
) -> Result<LogicalPlan> {
    use datafusion::functions_aggregate::expr_fn::{bit_xor, count};
    use datafusion::logical_expr::{LogicalPlanBuilder, col};

    use super::bound_contributions::name;
    use super::enforce_min_group_size::Threaded;

    let agg = lowest_aggregate(upper)?.clone();
    let keys = crate::exprs::group_keys(&agg)?;
    let bucketed = bucketed_keys(&agg, &keys);
    let ladders = laddered(&agg.input);
    let (input, lifted) = lift_all(std::sync::Arc::unwrap_or_clone(std::sync::Arc::clone(&agg.input)), &ladders)?;
    let Threaded { plan: input, units } = super::cap_rows::threaded_and_capped(input, threshold)?;
    // The bucketed keys' columns, then those of the ranges left out here, carried up together
    // (hidden names are numbered per call).
    let mut columns = bucketed.clone();
    columns.extend(ranges.iter().filter(|(at, _)| at.is_none()).map(|(_, read)| (usize::MAX, read.clone())));
    let (input, mut values) = carried(&input, &columns)?;
    let mut left_out = values.split_off(bucketed.len()).into_iter();
    let mut range_columns = Vec::with_capacity(ranges.len());
    // Per range that is a key's bucket, the row's bucket of that key.
    let mut spelled = Vec::new();
    // Only the rows in some cell of each range's ladder can be in a region (a text equality's
    // one cell holds none of the other values, which were half of a join's rows). Not so for a
    // key's bucket: its groups around it claim as the key's do, and the key has every row.
    let mut in_cells = Vec::new();
    for (at, _) in ranges {
        let Some(at) = at else {
            // Left out here: every row is in it.
            let Some(value) = left_out.next() else {
                return plan_err!("a range left out without its column");
            };
            range_columns.push((value, lit(1i64)));
            continue;
        };
        let (Some(l), Some(found)) = (ladders.get(*at), lifted.get(*at)) else {
            return plan_err!("a range beside the keys without its ladder");
        };
        let (range, value, _) = l.placed(found)?;
        if let Some((spelling, _)) = &l.spelled {
            spelled.push(spelling.over(value.clone(), &l.ty));
            range_columns.push((value, cast(range, DataType::Int64)));
            continue;
        }
        let least =
            l.cells.iter().map(|(lo, _)| lo).min_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let most =
            l.cells.iter().map(|(_, hi)| hi).max_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        if let (Some(least), Some(most)) = (least, most) {
            in_cells.push(value.clone().gt_eq(lit(least.clone())));
            in_cells.push(value.clone().lt(lit(most.clone())));
        }
        range_columns.push((value, cast(range, DataType::Int64)));
    }
    let input = match whole(in_cells) {
        Some(kept) => LogicalPlanBuilder::from(input).filter(kept)?.build()?,
        None => input,
    };
    let mut group: Vec<Expr> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| !bucketed.iter().any(|(j, _)| j == i))
        .map(|(i, k)| k.clone().unalias().alias(name("key", i)))
        .collect();
    for ((i, _), value) in bucketed.iter().zip(values) {
        group.push(keys[*i].clone().unalias().alias(format!("{}bucket_{i}", super::DP_PREFIX)));
        group.push(value.alias(format!("{}value_{i}", super::DP_PREFIX)));
    }
    for (r, (value, inside)) in range_columns.into_iter().enumerate() {
        group.push(value.alias(format!("{}range_{r}", super::DP_PREFIX)));
        group.push(inside.alias(format!("{}inside_{r}", super::DP_PREFIX)));
    }
    for (s, bucket) in spelled.into_iter().enumerate() {
        group.push(bucket.alias(format!("{}spelled_{s}", super::DP_PREFIX)));
    }
    let unit = unit_of(&units)?;
    let (people, seed) = (format!("{}people", super::DP_PREFIX), ANON_SEED);
    let unit_name = format!("{}unit", super::DP_PREFIX);
    let (mut group, shown) = grouped_once(group)?;
    if one_row {
        // One row per person: the people per combination of values, no person in two (a
        // million people do not make a million rows here).
        let plan = LogicalPlanBuilder::from(input)
            .aggregate(group, vec![count(lit(1)).alias(&people), bit_xor(unit).alias(seed)])?
            .build()?;
        let mut out = shown;
        out.extend([lit(0u64).alias(&unit_name), col(&people), col(seed)]);
        LogicalPlanBuilder::from(plan).project(out)?.build()
    } else {
        group.push(unit.alias(&unit_name));
        let plan = LogicalPlanBuilder::from(input).aggregate(group, Vec::<Expr>::new())?.build()?;
        let mut out = shown;
        out.extend([col(&unit_name), lit(1i64).alias(&people), col(&unit_name).alias(seed)]);
        LogicalPlanBuilder::from(plan).project(out)?.build()
    }
}

/// `group` (each an expression under its name) as the census groups by it, and the
/// expressions above that aggregate that show each under its name: a key that is a column
/// another key already is, or that only reads columns other keys are (a bucket of a value's
/// column, whether a row is in a range on it, a range's bucket of a key), is the same
/// within every group, so it is computed once per group above the aggregate instead of
/// grouped by. The census's groups and columns are what they were.
///
/// Why: a bare column key is both its bucket and its value, and a range's column is its
/// value, its flag and its spelled bucket; grouped by all of them, A5 of the TPC-H questions
/// (two text keys and a text range over 1.5 million joined rows) spent most of its census
/// comparing the same text three times.
fn grouped_once(group: Vec<Expr>) -> Result<(Vec<Expr>, Vec<Expr>)> {
    use std::collections::HashMap;

    use datafusion::common::Column;
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::col;

    let named: Vec<(Expr, String)> = group
        .into_iter()
        .map(|g| {
            let name = g.schema_name().to_string();
            (g.unalias(), name)
        })
        .collect();
    // The keys that are bare columns, each column grouped by once (under its first name).
    let mut columns: HashMap<Column, String> = HashMap::new();
    for (e, name) in &named {
        if let Expr::Column(c) = e {
            columns.entry(c.clone()).or_insert_with(|| name.clone());
        }
    }
    let mut grouped = Vec::new();
    let mut shown = Vec::with_capacity(named.len());
    for (e, name) in named {
        let read = e.column_refs();
        let derived = !read.is_empty() && !e.is_volatile() && read.iter().all(|c| columns.contains_key(c));
        match &e {
            Expr::Column(c) if columns.get(c) == Some(&name) => {
                grouped.push(e.alias(&name));
                shown.push(col(&name));
            }
            _ if derived => {
                let above = e
                    .transform(|e| {
                        Ok(match e {
                            Expr::Column(c) => match columns.get(&c) {
                                Some(n) => Transformed::yes(Expr::Column(Column::from_name(n))),
                                None => Transformed::no(Expr::Column(c)),
                            },
                            other => Transformed::no(other),
                        })
                    })?
                    .data;
                shown.push(above.alias(&name));
            }
            _ => {
                grouped.push(e.alias(&name));
                shown.push(col(&name));
            }
        }
    }
    Ok((grouped, shown))
}

/// A column whose conditions select one interval of it, with the cells of the grid around
/// that interval (`ladder.rs`).
struct Laddered {
    column: String,
    /// Each cell as `[lo, hi)` in the column's type, narrowest first.
    cells: Vec<(datafusion::common::ScalarValue, datafusion::common::ScalarValue)>,
    /// The range's least value (`ladder::split`).
    split: datafusion::common::ScalarValue,
    /// The column its conditions read, as the input of their filter names it.
    read: datafusion::common::Column,
    /// The key one of whose buckets is its interval, with its label (`spelled.rs`), when it
    /// has one; the column's type.
    spelled: Option<(super::spelled::Spelling, super::KeyLabel)>,
    ty: DataType,
}

/// The conditions on a laddered column that one filter had, and the column they read as the
/// aggregate's input names it ([`lift`]).
type Lifted = Vec<(Vec<Expr>, datafusion::common::Column)>;

/// The lifted conditions, each reading its column as the aggregate's input names it.
fn placed_conditions(lifted: &Lifted) -> Result<Vec<Expr>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let mut conditions = Vec::new();
    for (found, column) in lifted {
        for c in found {
            let read = c.clone().transform(|x| match x {
                Expr::Column(_) => Ok(Transformed::yes(Expr::Column(column.clone()))),
                other => Ok(Transformed::no(other)),
            })?;
            conditions.push(read.data);
        }
    }
    Ok(conditions)
}

impl Laddered {
    /// The range (the lifted conditions together, [`placed_conditions`]), the column there,
    /// and each cell as a condition on it.
    fn placed(&self, lifted: &Lifted) -> Result<(Expr, Expr, Vec<Expr>)> {
        let conditions = placed_conditions(lifted)?;
        let (Some(range), Some((_, column))) = (whole(conditions), lifted.first()) else {
            return plan_err!("a range on `{}` without conditions", self.column);
        };
        let value = Expr::Column(column.clone());
        let cells = self
            .cells
            .iter()
            .filter_map(|(lo, hi)| whole(vec![value.clone().gt_eq(lit(lo.clone())), value.clone().lt(lit(hi.clone()))]))
            .collect();
        Ok((range, value, cells))
    }
}

/// `conditions` all true, as a condition whose every part is evaluated on every row: `AND`
/// skips its right side where its left is false for a whole batch, so a person's many rows
/// outside a range cost less than inside it (the timing test's filter on a person's traits
/// over their 100,000 rows: slower with the person in 11 of 12 rounds, twice, once ranges
/// were measured through their ladder's cells). A product of ones and zeros is 1 exactly where
/// every condition is true (NULL where one is NULL: not true either).
fn whole(conditions: Vec<Expr>) -> Option<Expr> {
    Some(ones(conditions)?.eq(lit(1i64)))
}

/// The product of `conditions` as Int64 ones and zeros ([`whole`]).
fn ones(conditions: Vec<Expr>) -> Option<Expr> {
    let mut conditions = conditions.into_iter().map(|c| cast(c, DataType::Int64));
    let first = conditions.next()?;
    Some(conditions.fold(first, |product, c| product * c))
}

/// `plan` (below the answer's aggregate) without the conditions on `column`, and per filter
/// that had some, those conditions with the column they read carried up to `plan`'s output:
/// under a hidden name through a projection that drops it (`WITH r AS (SELECT * FROM t WHERE
/// subsidy >= 0 AND subsidy < 10000) SELECT d, count(*) FROM (SELECT district AS d FROM r)`).
fn lift(plan: LogicalPlan, column: &str, hidden: &mut usize, prefix: &str) -> Result<(LogicalPlan, Lifted)> {
    use datafusion::logical_expr::utils::{conjunction, split_conjunction};
    use datafusion::logical_expr::{Filter, Projection, SubqueryAlias};
    let mut lifted: Lifted = Vec::new();
    let mut inputs = Vec::new();
    for input in plan.inputs() {
        let (input, found) = lift(input.clone(), column, hidden, prefix)?;
        inputs.push(input);
        lifted.extend(found);
    }
    let matching = |f: &Filter| {
        split_conjunction(&f.predicate).iter().any(|c| condition_column(c, &f.input).as_deref() == Some(column))
    };
    if lifted.is_empty() && !matches!(&plan, LogicalPlan::Filter(f) if !reads_aggregates(&f.input) && matching(f)) {
        return Ok((plan, lifted));
    }
    let single = |inputs: Vec<LogicalPlan>| match <[LogicalPlan; 1]>::try_from(inputs) {
        Ok([only]) => Ok(std::sync::Arc::new(only)),
        Err(_) => plan_err!("a node with one input had several"),
    };
    let plan = match plan {
        LogicalPlan::Filter(f) if !reads_aggregates(&f.input) => {
            let input = single(inputs)?;
            let (mut found, mut kept) = (Vec::new(), Vec::new());
            let mut read = None;
            for c in split_conjunction(&f.predicate) {
                if condition_column(c, &f.input).as_deref() == Some(column) {
                    match c.column_refs().into_iter().collect::<Vec<_>>().as_slice() {
                        [only] => read = read.or_else(|| Some((*only).clone())),
                        _ => return plan_err!("a condition on `{column}` that reads several columns"),
                    }
                    found.push(c.clone());
                } else {
                    kept.push(c.clone());
                }
            }
            if let Some(read) = read {
                lifted.push((found, read));
            }
            match conjunction(kept) {
                Some(predicate) => LogicalPlan::Filter(Filter::try_new(predicate, input)?),
                None => std::sync::Arc::unwrap_or_clone(input),
            }
        }
        LogicalPlan::Projection(p) => {
            let mut exprs = p.expr;
            for (_, read) in &mut lifted {
                if !exprs.iter().any(|e| matches!(e, Expr::Column(c) if c == read)) {
                    let name = format!("{}{prefix}_{}", super::DP_PREFIX, *hidden);
                    *hidden += 1;
                    exprs.push(Expr::Column(read.clone()).alias(&name));
                    *read = datafusion::common::Column::from_name(name);
                }
            }
            LogicalPlan::Projection(Projection::try_new(exprs, single(inputs)?)?)
        }
        LogicalPlan::SubqueryAlias(a) => {
            for (_, read) in &mut lifted {
                *read = datafusion::common::Column::new(Some(a.alias.clone()), read.name.clone());
            }
            LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(single(inputs)?, a.alias)?)
        }
        // Nodes that keep their inputs' columns.
        plan @ (LogicalPlan::Filter(_) | LogicalPlan::Join(_) | LogicalPlan::Sort(_) | LogicalPlan::Limit(_)) => {
            plan.with_new_exprs(plan.expressions(), inputs)?
        }
        _ => return plan_err!("a range on `{column}` below a node that does not keep its column"),
    };
    Ok((plan, lifted))
}

/// The columns below `agg`'s input whose conditions select one interval with a ladder: not a
/// column an IN list also compares (its constants are detected one by one instead).
fn laddered(input: &LogicalPlan) -> Vec<Laddered> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::ExprSchemable;
    use datafusion::logical_expr::utils::split_conjunction;
    let Conditions { listed, ranges, .. } = conditions(input);
    let listed: Vec<String> = listed
        .iter()
        .map(|(e, _, _)| super::KeyLabel::new(&read_at_source(e, input), input).column().to_owned())
        .collect();
    let mut found = Vec::new();
    for (column, span) in ranges {
        if listed.contains(&column) {
            continue;
        }
        let mut ty = None;
        let _ = input.apply(|node| {
            if let LogicalPlan::Filter(f) = node {
                for c in split_conjunction(&f.predicate) {
                    if ty.is_none()
                        && condition_column(c, &f.input).as_deref() == Some(column.as_str())
                        && let [only] = c.column_refs().into_iter().collect::<Vec<_>>().as_slice()
                    {
                        let read = (*only).clone();
                        let source = read_at_source(&Expr::Column(read.clone()), &f.input);
                        ty = Expr::Column(read.clone()).get_type(f.input.schema()).ok().map(|t| (t, read, source));
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        let Some((ty, read, source)) = ty else { continue };
        let cells = super::ladder::cells(&span, &ty);
        let Some(split) = super::ladder::split(&span, &ty) else { continue };
        let spelled = super::spelled::spelled(&span, &ty, &source, input);
        // A boolean has no cells of a grid; it is the bucket of the key on its column, whose
        // only cell is every value, and the claims decide it as that key's group.
        if !cells.is_empty() || (ty == DataType::Boolean && spelled.is_some()) {
            found.push(Laddered { column, cells, split, read, spelled, ty });
        }
    }
    found.extend(repeating_parts(input, &listed));
    found
}

/// The conditions below `agg`'s input that are one value of a part of a date that repeats
/// (`date_part('month', d) = 3`, a month of every year; `IN (3)` too), each as the bucket of
/// the key on that part, whose only cell is every value; none on a column an IN list of
/// several values compares (`listed`).
///
/// Why: such a condition was decided by its variant (the answer without it) and the key on the
/// part by the claims. Beside a flag the target fails too, with three known people who fail
/// the part alone, `WHERE a AND date_part('month', d) = 3` decided the known people and the
/// target in other draws than the key's group 3 under `WHERE a`: alike without the target,
/// apart with them, 59 of 60 districts over four copies of the date. As the key's bucket the
/// claims decide both alike.
fn repeating_parts(input: &LogicalPlan, listed: &[String]) -> Vec<Laddered> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::ExprSchemable;
    use datafusion::logical_expr::expr::ScalarFunction;
    use datafusion::logical_expr::utils::split_conjunction;
    let mut found: Vec<Laddered> = Vec::new();
    let _ = input.apply(|node| {
        let LogicalPlan::Filter(f) = node else { return Ok(TreeNodeRecursion::Continue) };
        for c in split_conjunction(&f.predicate) {
            // One value however spelled (`= 3`, `IN (3)`, `IN (3, 3)`), as the labels take it.
            let mut one = Conditions::default();
            one.add(c, &f.input);
            let [(key, value)] = one.equalities.as_slice() else { continue };
            let Expr::ScalarFunction(ScalarFunction { func, args }) = crate::exprs::uncast(key) else { continue };
            let unit = match args.first() {
                Some(Expr::Literal(u, _)) if func.name() == "date_part" => super::DateUnit::of(u),
                _ => None,
            };
            let unit = match unit {
                // The year is an interval of the column, a range's.
                Some(super::DateUnit::Year) | None => continue,
                Some(unit) => unit.name(),
            };
            let refs: Vec<_> = c.column_refs().into_iter().collect();
            let (Some(column), [only], Some(stored)) = (condition_column(c, &f.input), refs.as_slice(), args.get(1))
            else {
                continue;
            };
            if listed.contains(&column) || found.iter().any(|l| l.column == column) {
                continue;
            }
            let read = (*only).clone();
            let Ok(ty) = Expr::Column(read.clone()).get_type(f.input.schema()) else { continue };
            let spelling = super::spelled::Spelling::Part(unit);
            let label = super::KeyLabel::new(&spelling.over(stored.clone(), &ty), input);
            // No cells: the claims alone decide it (it is spelled, so always beside them), and
            // its split is the part's value, not the column's.
            found.push(Laddered {
                column,
                cells: Vec::new(),
                split: value.clone(),
                read,
                spelled: Some((spelling, label)),
                ty,
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The plan the query layer runs before the others when the answer has ladders: per person
/// and group (per row over one row per person), per laddered column the nearest values on
/// either side of its range among their rows in the other columns' ranges. Every cell of a
/// ladder holds its range, so the person has a row in a cell outside the range exactly when
/// their greatest value below it is at least the cell's start, or their least value above it
/// is below the cell's end: the query layer counts each cell's people from these
/// (`anon::widened`), where a flag per person and cell cost a pass over every row per cell (a
/// date's ladder has 16 cells, a number's up to 60: most of an answer's time). Output: the
/// group keys; the UInt64 hash of the person; then per laddered column, its greatest value
/// below the range and its least value above it (NULL for none), in the column's type.
fn census(
    upper: &LogicalPlan,
    threshold: &mut super::enforce_min_group_size::Threshold<'_>,
    one_row: bool,
) -> Result<LogicalPlan> {
    use datafusion::functions_aggregate::expr_fn::{max, min};
    use datafusion::logical_expr::{LogicalPlanBuilder, when};

    use super::bound_contributions::name;
    use super::enforce_min_group_size::Threaded;

    let agg = lowest_aggregate(upper)?.clone();
    let ladders = laddered(&agg.input);
    let group_keys = crate::exprs::group_keys(&agg)?;
    let (input, lifted) = lift_all(std::sync::Arc::unwrap_or_clone(std::sync::Arc::clone(&agg.input)), &ladders)?;
    let Threaded { plan: input, units } = super::cap_rows::threaded_and_capped(input, threshold)?;
    let unit = unit_of(&units)?;
    // Decided column by column: no key has buckets (they would decide it with their claims).
    let (input, keyed, _) = claimed_keys(&input, &agg, &group_keys, &unit, one_row, &[], false)?;
    let placed = ladders.iter().zip(&lifted).map(|(l, found)| l.placed(found)).collect::<Result<Vec<_>>>()?;
    let ranges: Vec<Expr> = placed.iter().map(|(range, _, _)| range.clone()).collect();
    if ranges.is_empty() {
        return plan_err!("a census without ranges");
    }
    let mut measures = Vec::new();
    for (l, (range, value, _)) in placed.iter().enumerate() {
        let split = lit(ladders[l].split.clone());
        let others: Vec<Expr> = ranges.iter().enumerate().filter(|(m, _)| *m != l).map(|(_, r)| r.clone()).collect();
        // Below the range's least value is outside it; at or above it and outside it, above.
        // `CASE WHEN … THEN column END` is DataFusion's `nullif` of the column where the
        // condition is not true: the same work whichever rows match.
        let below = whole([vec![value.clone().lt(split.clone())], others.clone()].concat());
        let above =
            whole([vec![value.clone().gt_eq(split), datafusion::logical_expr::not(range.clone())], others].concat());
        let (Some(below), Some(above)) = (below, above) else {
            return plan_err!("a census without conditions");
        };
        measures.push((when(below, value.clone()).end()?, true));
        measures.push((when(above, value.clone()).end()?, false));
    }
    let unit_name = format!("{}unit", super::DP_PREFIX);
    let mut group: Vec<Expr> = keyed.into_iter().enumerate().map(|(i, k)| k.alias(name("key", i))).collect();
    group.push(unit.alias(&unit_name));
    let measures = measures.into_iter().enumerate().map(|(i, (m, greatest))| {
        let m = if one_row {
            m
        } else if greatest {
            max(m)
        } else {
            min(m)
        };
        m.alias(name("mark", i))
    });
    if one_row {
        LogicalPlanBuilder::from(input).project(group.into_iter().chain(measures))?.build()
    } else {
        LogicalPlanBuilder::from(input).aggregate(group, measures.collect::<Vec<_>>())?.build()
    }
}

/// The values of people columns that the joins below the aggregate (`agg_input`) look up in a
/// table about nobody (a code table), each with the name of its `__veil_dropped` calls; and
/// `input` with those columns carried up to it.
///
/// Why: a code table's column selects a set of the people column's values, an IN list in all
/// but name. Two of its flags that agree on every code but the target's, `WHERE l.g` against
/// `WHERE l.g2`, differed by exactly the target, and a column's low-effect detection does not
/// see it (without `l.g` a group gains every other code's people): over many such flags their
/// answers' spread told the target 46 of 50 in 16 queries (a red team, 2026-12-05). Each value
/// looked up is now decided per group as an IN list's constant: the rows of a value only a few
/// of the group's people have are left out, in every measurement.
fn looked_up_values(
    input: LogicalPlan,
    agg_input: &LogicalPlan,
    ctx: &crate::GuardContext,
) -> Result<(LogicalPlan, Vec<(String, Expr)>)> {
    use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
    let personal = |plan: &LogicalPlan| {
        plan.exists(|node| {
            Ok(matches!(node, LogicalPlan::TableScan(scan) if crate::rules::anon_shape::about_people(scan, ctx)))
        })
        .unwrap_or(true)
    };
    let mut values: Vec<Expr> = Vec::new();
    agg_input.apply(|node| {
        if let LogicalPlan::Join(j) = node {
            let (left, right) = (personal(&j.left), personal(&j.right));
            for (l, r) in crate::context::equalities(j) {
                let people = match (left, right) {
                    (true, false) => l,
                    (false, true) => r,
                    _ => continue,
                };
                if !values.contains(&people) {
                    values.push(people);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let (mut input, mut hidden, mut found) = (input, 0, Vec::new());
    for value in values {
        let name = format!("looked up {}", value.schema_name());
        let mut carried = value;
        for column in carried.column_refs().into_iter().cloned().collect::<Vec<_>>() {
            let Some((with, read)) = super::buckets::carry(&input, &column, &mut hidden)? else {
                return plan_err!(
                    "a join to a table about nobody on `{}`, a column the query does not keep below its aggregate",
                    column.name
                );
            };
            input = with;
            carried = carried
                .transform(|e| match e {
                    Expr::Column(c) if c == column => Ok(Transformed::yes(Expr::Column(read.clone()))),
                    other => Ok(Transformed::no(other)),
                })?
                .data;
        }
        found.push((name, carried));
    }
    Ok((input, found))
}

/// The census of a value looked up (`looked_up_values`) over the measurement's rows `input`:
/// per group (`keys`, as the measurement groups them) and value, the Int64 number of people
/// with a row of it and the UInt64 XOR of their hashes (`unit`), in that order after the keys
/// and the value.
fn looked_up_census(
    input: &LogicalPlan,
    keys: &[Expr],
    value: &Expr,
    unit: &Expr,
    one_row: bool,
) -> Result<LogicalPlan> {
    use datafusion::functions_aggregate::expr_fn::{bit_xor, count};
    use datafusion::logical_expr::{LogicalPlanBuilder, col};

    use super::bound_contributions::name;
    let unit_name = format!("{}unit", super::DP_PREFIX);
    let value_name = format!("{}value", super::DP_PREFIX);
    let mut group: Vec<Expr> = keys.iter().enumerate().map(|(i, k)| k.clone().alias(name("key", i))).collect();
    group.push(value.clone().alias(&value_name));
    let by: Vec<Expr> = (0..keys.len()).map(|i| col(name("key", i))).chain([col(&value_name)]).collect();
    group.push(unit.clone().alias(&unit_name));
    // One row per person, group and value: over one row per person each row is one already.
    let people = if one_row {
        LogicalPlanBuilder::from(input.clone()).project(group)?
    } else {
        LogicalPlanBuilder::from(input.clone()).aggregate(group, Vec::<Expr>::new())?
    };
    people
        .aggregate(
            by,
            vec![count(lit(1i64)).alias(name("people", 0)), bit_xor(col(&unit_name)).alias(name("seed", 0))],
        )?
        .build()
}

/// [`lift`] for each of `ladders` in turn.
fn lift_all(mut input: LogicalPlan, ladders: &[Laddered]) -> Result<(LogicalPlan, Vec<Lifted>)> {
    let (mut all, mut hidden) = (Vec::with_capacity(ladders.len()), 0);
    for l in ladders {
        let (lifted_input, found) = lift(input, &l.column, &mut hidden, "ladder")?;
        input = lifted_input;
        all.push(found);
    }
    Ok((input, all))
}

/// One hash per row for the privacy unit of the datasets `units` names (the first that is not
/// NULL, when a join carries several).
fn unit_of(units: &[super::enforce_min_group_size::Unit]) -> Result<Expr> {
    use datafusion::functions::core::expr_fn::coalesce;
    match units {
        [] => plan_err!("an anonymized answer must read a dataset about people"),
        [only] => Ok(only.hash()),
        many => Ok(coalesce(many.iter().map(|u| u.hash()).collect())),
    }
}

/// `e` with each column the schema of the aggregate's input does not have by its qualifier
/// named as the one column of the schema with its name: a condition below a projection (a
/// CTE, a subquery in FROM) names its column by the source's qualifier, the aggregate's input
/// by the projection's.
fn resolved(e: Expr, schema: &datafusion::common::DFSchema) -> Result<Expr> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    Ok(e.transform(|x| match x {
        Expr::Column(column) if !schema.has_column(&column) => {
            let same: Vec<_> = schema.columns().into_iter().filter(|f| f.name == column.name).collect();
            match same.as_slice() {
                [only] => Ok(Transformed::yes(Expr::Column(only.clone()))),
                _ => plan_err!(
                    "a condition over `{}`, a column the query does not keep below its aggregate: select it where the condition is",
                    column.name
                ),
            }
        }
        other => Ok(Transformed::no(other)),
    })?
    .data)
}

/// What the answer says about low-effect detection, when the query has conditions it applies
/// to: which columns' conditions may be left out of a group. It names what the query allows,
/// not what happened to any group: which groups were answered without their conditions is a
/// noisy count of the people the conditions remove, and stays in the answer's numbers alone.
pub(crate) fn low_effect_note(plan: &super::DpPlan) -> Option<crate::AppliedRule> {
    let columns: Vec<String> =
        plan.variants.iter().filter(|v| v.columns.len() == 1).map(|v| format!("`{}`", v.columns[0])).collect();
    let ladders: Vec<String> = plan.ladders.iter().map(|l| format!("`{}`", l.column)).collect();
    let cells = format!(
        "the range on {} is measured, per group, together with the wider cells of its grid around it that add almost nobody to the group",
        ladders.join(", ")
    );
    let detail = match (columns.is_empty(), ladders.is_empty()) {
        (true, true) => return None,
        (true, false) => format!("{cells} (low-effect detection, against differencing)"),
        (false, _) => {
            let all = if columns.len() > 1 {
                "; a group from which each removes almost nobody, without all of them"
            } else {
                ""
            };
            let cells = if ladders.is_empty() { String::new() } else { format!("; {cells}") };
            format!(
                "where the conditions on {} remove almost nobody from a group (a few people, decided with sticky noise), the group is answered as if the query did not have them (low-effect detection, against differencing){all}{cells}",
                columns.join(", ")
            )
        }
    };
    Some(crate::AppliedRule { code: "low_effect", detail })
}

/// `upper` without the conditions on `column` below its aggregate.
fn without_conditions_on(upper: &LogicalPlan, column: &str) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::Filter;
    use datafusion::logical_expr::utils::{conjunction, split_conjunction};
    let stripped = upper.clone().transform_up(|node| match node {
        LogicalPlan::Filter(f) if !reads_aggregates(&f.input) => {
            let all = split_conjunction(&f.predicate);
            let kept: Vec<Expr> = all
                .iter()
                .filter(|c| condition_column(c, &f.input).as_deref() != Some(column))
                .map(|c| (*c).clone())
                .collect();
            if kept.len() == all.len() {
                return Ok(Transformed::no(LogicalPlan::Filter(f)));
            }
            match conjunction(kept) {
                Some(predicate) => Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(predicate, f.input)?))),
                // Nothing left: the filter's rows are its input's.
                None => Ok(Transformed::yes(std::sync::Arc::unwrap_or_clone(f.input))),
            }
        }
        other => Ok(Transformed::no(other)),
    })?;
    Ok(stripped.data)
}

/// `upper` without the conditions on `columns`, as [`without_conditions_on`] leaves them out,
/// but with the columns they read carried up to the aggregate's input; and per row there, the
/// Int64 1 where the row holds every condition left out, 0 where it does not (NULL counts as
/// not, as a filter has it): for a variant over several rows a person
/// ([`super::DpPlan::touched`]).
fn marked_without(upper: &LogicalPlan, columns: &[String]) -> Result<(LogicalPlan, Expr)> {
    use std::sync::Arc;

    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::Aggregate;
    let agg = lowest_aggregate(upper)?.clone();
    let (mut input, mut hidden, mut holds) = (Arc::unwrap_or_clone(Arc::clone(&agg.input)), 0, Vec::new());
    for column in columns {
        let (lifted, found) = lift(input, column, &mut hidden, "left_out")?;
        input = lifted;
        holds.extend(placed_conditions(&found)?.into_iter().map(|c| cast(c.is_true(), DataType::Int64)));
    }
    let Some(holds) = holds.into_iter().reduce(|product, h| product * h) else {
        return plan_err!("a variant without conditions to leave out");
    };
    let agg = Aggregate::try_new(Arc::new(input), agg.group_expr, agg.aggr_expr)?;
    let marked = upper
        .clone()
        .transform_up(|node| match node {
            LogicalPlan::Aggregate(a) if !reads_aggregates(&a.input) => {
                Ok(Transformed::yes(LogicalPlan::Aggregate(agg.clone())))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data;
    Ok((marked, holds))
}

/// The column `condition` (a conjunct of a filter over `input`) restricts, if it restricts one
/// column: to an interval, or to the constants of an IN list (a red team read a target's trait
/// off `band IN (0, 10000, 30000)` minus `band IN (0, 10000)` when IN lists were not checked).
fn condition_column(condition: &Expr, input: &LogicalPlan) -> Option<String> {
    if let Expr::InList(list) = unalias(condition)
        && !list.negated
    {
        let key = super::KeyLabel::new(&read_at_source(&list.expr, input), input);
        return Some(key.column().to_owned());
    }
    let mut one = Conditions::default();
    one.add(condition, input);
    match (one.ranges.as_slice(), one.fixed.as_slice(), one.listed.is_empty()) {
        ([(column, _)], [], true) => Some(column.clone()),
        // A condition that is no interval of its column, as a month of the year
        // (`date_part('month', day) = 3`): restricted all the same, by the one column it reads.
        // Left out of low-effect detection, it removed the target alone (their visits in
        // April, everybody else's in March) and the group with it and without it were two sets
        // of people (found reading the shape: 47 of 60 districts told by the difference).
        ([], [_], true) => match scanned([condition], input).as_slice() {
            [only] => Some(label(&Expr::Column(only.clone()))),
            _ => None,
        },
        _ => None,
    }
}

/// Every column the WHERE clauses of `input` restrict, each once, with the stored column its
/// conditions read, named as a key over it is (`KeyLabel::reads`).
///
/// Why the stored column: an IN list is named by its expression (`date_part('day', d)`), the
/// equality beside it by the column it reads (`d`), and the selection layer, seeded by the
/// columns that select a group, drew apart for the two over the same rows, which told whether
/// the condition was left out (a red team, 2026-12-06: 55 of 60 districts with three known
/// people at the margin).
fn restricted_columns(input: &LogicalPlan) -> Vec<(String, String)> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::utils::split_conjunction;
    let mut columns: Vec<(String, String)> = Vec::new();
    let _ = input.apply(|node| {
        if let LogicalPlan::Filter(f) = node {
            for condition in split_conjunction(&f.predicate) {
                let Some(column) = condition_column(condition, &f.input) else { continue };
                if columns.iter().any(|(c, _)| *c == column) {
                    continue;
                }
                let reads = match unalias(condition) {
                    Expr::InList(list) => {
                        super::KeyLabel::new(&read_at_source(&list.expr, &f.input), &f.input).reads().to_owned()
                    }
                    _ => column.clone(),
                };
                columns.push((column, reads));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    // In the labels' order, not the query's: where several columns' conditions each remove
    // almost nobody but not together, the group is answered without the first of them, and
    // the order of the conditions decided which. `WHERE fa AND fb` against `WHERE fb AND fa`,
    // one label, measured the target (failing fa alone) in one and not the other: bit-identical
    // exactly when the target was absent (a red team, 2026-12-05: 56 of 60 districts in two
    // queries, 58 of 60 reading a trait).
    columns.sort();
    columns
}

/// [`bound`], told whether every person is one row of the aggregate's input (one dataset about
/// people, declared so because measured at registration, and no join that could repeat its
/// rows): then each row is a person's whole contribution to its one group, and step 1 is a
/// projection of each row's contribution instead of an aggregate over people (the same values,
/// without hashing every row into a second table).
fn bound_with(
    upper: LogicalPlan,
    assessment: &crate::Assessment,
    threshold: &mut super::enforce_min_group_size::Threshold<'_>,
    one_row: bool,
    beside: &Beside,
    answers: Option<&[(Expr, Expr, String)]>,
    holds: Option<Expr>,
) -> Result<(LogicalPlan, super::DpPlan)> {
    use std::sync::Arc;

    use datafusion::functions::core::expr_fn::coalesce;
    use datafusion::functions_aggregate::expr_fn::{bit_xor, count, sum};
    use datafusion::logical_expr::{ExprSchemable, LogicalPlanBuilder, col};

    use super::top::{PARTS, top};
    use datafusion::functions::core::expr_fn::get_field;

    use super::bound_contributions::name;
    use super::enforce_min_group_size::Threaded;

    let kinds = assessment.dp.as_slice();
    let agg = lowest_aggregate(&upper)?.clone();
    if agg.aggr_expr.len() != kinds.len() {
        return plan_err!("the privacy guard classified a different number of aggregates");
    }
    let Conditions { listed: own, mut fixed, ranges, .. } = conditions(&agg.input);
    let group_keys = crate::exprs::group_keys(&agg)?;
    let (measures, joined) =
        measured_quantities(&agg.aggr_expr, kinds, one_row, &agg.input, &group_keys, threshold.ctx());
    fixed.extend(joined);
    fixed.sort();
    fixed.dedup();
    // A variant (`answers`: the answer's constants) measures, per group, the people matching
    // each of the answer's IN-list constants, also of a list it leaves out, though it leaves
    // out no rows of those: a group answered from it keeps the query's IN-list layers, seeded by
    // its own people. Without them, two lists differing by a constant low-effect detection left
    // out answered bit-identically wherever the list's column was left out too (a red team
    // with two decoys on the target's rare value: equal without the target, and not when a
    // draw kept the value, 59 of 60).
    let listed = answers.map_or_else(|| own.clone(), <[_]>::to_vec);
    let keys = group_keys.len();
    let mut described = super::DpPlan {
        aggregate_schema: Arc::clone(&agg.schema),
        keys,
        aggregates: kinds.to_vec(),
        contribution: crate::Contribution::default(),
        one_row_per_person: one_row,
        measures: same_sums(&agg.aggr_expr),
        variants: Vec::new(),
        ladders: Vec::new(),
        census: None,
        buckets: None,
        looked_up: Vec::new(),
        touched: holds.is_some(),
        rows_capped: Vec::new(),
        rows_per_person: if one_row { 1 } else { super::cap_rows::rows_per_person(&agg.input, threshold.ctx())? },
        public_keys: None,
        noise: super::NoiseLabels {
            listed: listed.iter().map(|(_, _, label)| label.clone()).collect(),
            listed_values: Vec::new(),
            fixed,
            ranges,
            keys: group_keys.iter().map(|k| super::KeyLabel::new(&read_at_source(k, &agg.input), &agg.input)).collect(),
            measures,
            values: agg.aggr_expr.iter().zip(kinds).map(|(e, kind)| counts_values(e, *kind)).collect(),
            bounds: Vec::new(),
        },
        upper: upper.clone(),
    };
    described.noise.bounds = declared_bounds(&described.noise, threshold.ctx());
    // A laddered column's conditions are left where the query has them and applied at the
    // aggregate's input instead, through `__veil_within` (below), which may let a group's
    // rows in the cells around its range through too.
    let ladders = laddered(&agg.input);
    described.ladders =
        ladders.iter().map(|l| super::Ladder { column: l.column.clone(), cells: l.cells.clone() }).collect();
    let (input, lifted) = lift_all(Arc::unwrap_or_clone(Arc::clone(&agg.input)), &ladders)?;
    let Threaded { plan: input, units } = super::cap_rows::threaded_and_capped(input, threshold)?;
    let unit = unit_of(&units)?;
    // Rows claimed by the group of a bucket around theirs are grouped there (`buckets.rs`).
    let (input, keyed, admitted) =
        claimed_keys(&input, &agg, &group_keys, &unit, one_row, &beside.reads, beside.joint)?;
    let listed = listed
        .into_iter()
        .map(|(e, c, _)| {
            let filters = own.iter().any(|(o, _, _)| *o == e);
            Ok((resolved(e, input.schema())?, c, filters))
        })
        .collect::<Result<Vec<_>>>()?;
    // Each list's rows of a (group, constant) pair the query layer finds low-effect are left
    // out (`dropped`): one call per list this plan filters by, named by its compared expression.
    let mut lists: Vec<&Expr> = Vec::new();
    for (e, c, filters) in &listed {
        let Expr::Literal(value, _) = c else {
            return plan_err!("an IN-list constant that is not a value");
        };
        let value = value.cast_to(&e.get_type(input.schema())?)?;
        described.noise.listed_values.push((e.schema_name().to_string(), value));
        if *filters && !lists.contains(&e) {
            lists.push(e);
        }
    }
    let bare_keys = keyed.clone();
    let mut kept: Vec<Expr> = lists
        .iter()
        .map(|e| {
            datafusion::logical_expr::not(super::dropped::dropped(
                &e.schema_name().to_string(),
                bare_keys.clone(),
                (*e).clone(),
            ))
        })
        .collect();
    // Each value a join looks up in a table about nobody is low-effect detected per group as
    // an IN list's constant is (`looked_up`).
    let (input, looked) = looked_up_values(input, &agg.input, threshold.ctx())?;
    kept.extend(looked.iter().map(|(name, value)| {
        datafusion::logical_expr::not(super::dropped::dropped(name, bare_keys.clone(), value.clone()))
    }));
    let mut joint = Vec::new();
    for (l, found) in ladders.iter().zip(&lifted) {
        let (range, _, cells) = l.placed(found)?;
        if admitted.is_some() {
            joint.push(range);
        } else {
            kept.push(super::ladder::within(&l.column, bare_keys.clone(), range, cells));
        }
    }
    // The ranges the claims decide: an unclaimed row in all of them, a claimed one where one of
    // the answer's groups claimed it. Decided in one call, on every row, whichever rows match.
    if let (Some(admitted), Some(inside)) = (admitted, whole(joint)) {
        kept.push(admitted.given(inside));
    }
    let input = match datafusion::logical_expr::utils::conjunction(kept) {
        Some(kept) => LogicalPlanBuilder::from(input).filter(kept)?.build()?,
        None => input,
    };
    let unit_name = format!("{}unit", super::DP_PREFIX);
    for (name, value) in &looked {
        let census = looked_up_census(&input, &bare_keys, value, &unit, one_row)?;
        described.looked_up.push((name.clone(), census));
    }

    // 1. Per person and group: an aggregate over each person's rows, or each row as it is
    // when every person is one row (a row's count is 1 or 0, its sum its clamped value).
    let mut group = vec![unit.alias(&unit_name)];
    group.extend(keyed.into_iter().enumerate().map(|(i, k)| k.alias(name("key", i))));
    // A condition as 1 or 0 (NULL where it is NULL: these are only summed when never NULL, or
    // compared with 1), a cast rather than a CASE, which skips its THEN where no row of a batch
    // matches: a person's many rows matching a listed constant, or nobody's, would cost
    // different time (a red team timed an IN list holding a rare value, 70 against 65 ms).
    let one_or_zero = |condition: Expr| cast(condition, DataType::Int64);
    let mut partial = Vec::new();
    // Each measure's name, whether it is signed, and the most one person contributes to it in
    // a group (`DpAggregate::most_per_person`).
    let mut measured = Vec::new();
    // Over several rows a person, per measured contribution (as `measured`), what a person's
    // part of its seed is made from besides their number of rows (`every`, below): the count
    // itself, or for a sum the wrapping sum of its rows' values hashed (the multiset of those
    // values, whatever order they are read in).
    let mut contents: Vec<Expr> = Vec::new();
    let rows_per_person = described.rows_per_person;
    for (j, (e, kind)) in agg.aggr_expr.iter().zip(kinds).enumerate() {
        let Expr::AggregateFunction(f) = unalias(e) else {
            return plan_err!("an aggregate expression that is not a function call");
        };
        match kind {
            DpAggregate::CountRows => {
                let rows = match f.params.args.first() {
                    _ if !one_row => unalias(e).clone(),
                    None | Some(Expr::Literal(..)) => lit(1i64),
                    Some(arg) => one_or_zero(arg.clone().is_not_null()),
                };
                partial.push(rows.alias(name("rows", j)));
                contents.push(col(name("rows", j)));
                measured.push((name("rows", j), false, kind.most_per_person(0, rows_per_person)));
            }
            DpAggregate::CountPeople => {}
            DpAggregate::Sum { lo, hi } | DpAggregate::Avg { lo, hi } => {
                let Some(arg) = f.params.args.first() else { return plan_err!("SUM without an argument") };
                let clamped = super::bound_contributions::clamped(arg, *lo, *hi)?;
                let total = if one_row { clamped.clone() } else { sum(clamped.clone()) };
                partial.push(total.alias(name("sum", j)));
                if !one_row {
                    partial.push(sum(super::people::row_hash(vec![clamped.clone()])).alias(name("values", j)));
                }
                contents.push(col(name("values", j)));
                measured.push((name("sum", j), kind.signed(), kind.most_per_person(0, rows_per_person)));
                if matches!(kind, DpAggregate::Avg { .. }) {
                    let values = if one_row { one_or_zero(clamped.is_not_null()) } else { count(clamped) };
                    partial.push(values.alias(name("n", j)));
                    contents.push(col(name("n", j)));
                    measured.push((name("n", j), false, kind.most_per_person(1, rows_per_person)));
                }
            }
        }
    }
    // Each person's rows, whatever they hold: in every seed of what they contribute, so that
    // rows left out draw every people layer afresh, those a NULL keeps out of a sum too.
    if !one_row {
        partial.push(count(lit(1i64)).alias(name("every", 0)));
    }
    // Whether the person has a row matching each listed constant.
    for (i, (e, c, _)) in listed.iter().enumerate() {
        let matches = one_or_zero(e.clone().eq(c.clone()));
        let matches = if one_row { matches } else { datafusion::functions_aggregate::expr_fn::max(matches) };
        partial.push(matches.alias(name("cond", i)));
    }
    // A variant's: whether every row of the person holds the conditions it leaves out.
    let touched = match holds {
        Some(_) if one_row => return plan_err!("a variant over one row a person measures whom it removes"),
        Some(holds) => {
            let holds = resolved(holds, input.schema())?;
            partial.push(datafusion::functions_aggregate::expr_fn::min(holds).alias(name("kept", 0)));
            true
        }
        None => false,
    };
    let per_person = if one_row {
        // One row a person: a count is 1 or 0 and a sum within its bounds already.
        LogicalPlanBuilder::from(input).project(group.into_iter().chain(partial))?.build()?
    } else {
        // Each person's contribution within the most one person may contribute (their rows
        // beyond the caps of joins, as a code table repeating a key repeats them), so that the
        // noise's floor at that over e³ bounds every term of its scale ([`super::top::Parts::scale`],
        // `anon.rs`).
        let per_person = LogicalPlanBuilder::from(input).aggregate(group, partial)?.build()?;
        let within: Vec<Expr> = (per_person.schema().columns().into_iter())
            .map(|c| match measured.iter().find(|(m, _, _)| *m == c.name) {
                Some((m, _, bound)) => {
                    Ok(super::bound_contributions::clamped(&Expr::Column(c.clone()), -bound, *bound)?.alias(m.as_str()))
                }
                None => Ok(Expr::Column(c)),
            })
            .collect::<Result<_>>()?;
        LogicalPlanBuilder::from(per_person).project(within)?.build()?
    };
    let measured: Vec<(String, bool)> = measured.into_iter().map(|(m, signed, _)| (m, signed)).collect();

    // 2. Per group; each contribution ranked within its group in the same pass, largest first,
    // ties broken by the unit's hash, so that the ranking (and so the answer) is the same every
    // time (`top.rs`: a window sorting every group's people cost several times the query).
    let key_cols: Vec<Expr> = (0..keys).map(|i| col(name("key", i))).collect();
    let plan = LogicalPlanBuilder::from(per_person);
    let mut totals = Vec::new();
    // Per ranked side, its parts' struct and the columns it is split into after the aggregate.
    let mut ranked: Vec<(String, [String; 3])> = Vec::new();
    let outliers = super::top::Outliers { count: ANON_OUTLIERS as usize, top: TOP_GROUP as usize };
    for (c, signed) in &measured {
        let value = cast(col(c.as_str()), DataType::Float64);
        let unit = col(unit_name.as_str());
        totals.push(sum(value.clone()).alias(c.as_str()));
        // A signed sum: the contributions above zero and those below, each ranked and
        // flattened on its own (x's part above zero is (x + |x|) / 2, below (|x| − x) / 2,
        // exact in floating point, without a CASE whose branches cost different time).
        // Flattened from above only, a person far below the rest counted in full against
        // noise the size of the others' (a red team: membership 60 of 60 in one query).
        let sides = if *signed {
            use datafusion::functions::math::expr_fn::abs;
            let above = (value.clone() + abs(value.clone())) / lit(2.0);
            vec![(above, ""), ((abs(value.clone()) - value) / lit(2.0), "_below")]
        } else {
            vec![(value, "")]
        };
        for (side, suffix) in sides {
            let parts = format!("{c}_parts{suffix}");
            totals.push(top(outliers, side, unit.clone()).alias(&parts));
            ranked
                .push((parts, [format!("{c}_out{suffix}"), format!("{c}_top{suffix}"), format!("{c}_scale{suffix}")]));
        }
    }
    totals.push(count(lit(1)).alias(format!("{}people", super::DP_PREFIX)));
    totals.push(bit_xor(col(unit_name.as_str())).alias(ANON_SEED));
    for i in 0..listed.len() {
        let matching =
            datafusion::logical_expr::when(col(name("cond", i)).eq(lit(1i64)), col(unit_name.as_str())).end()?;
        totals.push(coalesce(vec![bit_xor(matching), lit(0u64)]).alias(format!("{ANON_SEED}_{i}")));
    }
    for i in 0..listed.len() {
        let people = coalesce(vec![sum(col(name("cond", i))), lit(0i64)]);
        totals.push(people.alias(format!("{}people_{i}", super::DP_PREFIX)));
    }
    if touched {
        let kept = col(name("kept", 0));
        totals.push(sum(lit(1i64) - kept.clone()).alias(format!("{}touched", super::DP_PREFIX)));
        let whose = datafusion::logical_expr::when(kept.eq(lit(0i64)), col(unit_name.as_str())).end()?;
        totals.push(coalesce(vec![bit_xor(whose), lit(0u64)]).alias(format!("{ANON_SEED}_touched")));
    }
    // Over several rows a person, the seed of the group's people with their numbers of rows,
    // and per measured contribution the seed of what they contribute to it: each person's unit
    // and parts hashed together, XORed over the group. The people's seed alone was one draw
    // for every question over the same people, though their rows differ: `WHERE code = 0`
    // against no condition, removing a visit of eight people and none whole, drew the people
    // layer alike, and the difference of the two answers was the rows removed to about two (a
    // red team: 50 of 50 districts in two queries). Seeded by a sum's values alone, rows
    // left out whose values are NULL changed nobody's part but the target's, or nobody's but
    // that of a person all of whose values are NULL (who a range over every declared value
    // removes whole): the people layer was one draw or another exactly with the target (a red
    // team, the same day: 100 of 100). Over one row a person the people are the rows.
    if !one_row {
        let every = col(name("every", 0));
        let parts = std::iter::once(vec![col(unit_name.as_str()), every.clone()])
            .chain(contents.into_iter().map(|c| vec![col(unit_name.as_str()), every.clone(), c]));
        for (i, part) in parts.enumerate() {
            let part = super::people::row_hash(part);
            totals.push(coalesce(vec![bit_xor(part), lit(0u64)]).alias(format!("{ANON_SEED}_content_{i}")));
        }
    }
    let plan = plan.aggregate(key_cols, totals)?.build()?;
    // Each ranking's parts as columns of their own, where the struct stood.
    let split: Vec<Expr> = plan
        .schema()
        .columns()
        .into_iter()
        .flat_map(|c| match ranked.iter().find(|(parts, _)| *parts == c.name) {
            Some((_, names)) => PARTS
                .iter()
                .zip(names)
                .map(|(field, name)| get_field(Expr::Column(c.clone()), *field).alias(name.as_str()))
                .collect(),
            None => vec![Expr::Column(c)],
        })
        .collect();
    let plan = LogicalPlanBuilder::from(plan).project(split)?.build()?;
    Ok((plan, described))
}

/// The declared bounds of each column the labels restrict (conditions or keys), the widest
/// where several datasets of the session declare a column of that name.
fn declared_bounds(noise: &super::NoiseLabels, ctx: &crate::GuardContext) -> Vec<(String, (f64, f64))> {
    let columns = noise.ranges.iter().map(|(c, _)| c.as_str()).chain(noise.keys.iter().map(super::KeyLabel::column));
    let mut bounds: Vec<(String, (f64, f64))> = Vec::new();
    for column in columns {
        let declared = ctx.datasets.values().filter_map(|d| d.columns.get(column)?.bounds);
        for (lo, hi) in declared {
            match bounds.iter_mut().find(|(c, _)| c == column) {
                Some((_, b)) => *b = (b.0.min(lo), b.1.max(hi)),
                None => bounds.push((column.to_owned(), (lo, hi))),
            }
        }
    }
    bounds
}

/// For each aggregate, the first one whose argument is the same expression: SUM(x) beside
/// AVG(x) measures the same sum, and independent noise on each was one more sample of it (a red
/// team saw them disagree).
fn same_sums(aggregates: &[Expr]) -> Vec<usize> {
    // AVG's argument is cast to a float by type coercion where SUM's is not: the same column.
    use crate::exprs::uncast;
    let argument = |e: &Expr| match unalias(e) {
        Expr::AggregateFunction(f) => f.params.args.first().map(|a| uncast(a).clone()),
        _ => None,
    };
    let args: Vec<Option<Expr>> = aggregates.iter().map(argument).collect();
    args.iter()
        .enumerate()
        .map(|(j, a)| match a {
            Some(a) => args.iter().position(|b| b.as_ref() == Some(a)).unwrap_or(j),
            None => j,
        })
        .collect()
}

/// The conditions of the WHERE clauses below the answer's aggregate, for the noise's seeds.
#[derive(Default)]
struct Conditions {
    /// Each IN-list constant with the expression it is compared with, each value once, and its
    /// label.
    listed: Vec<(Expr, Expr, String)>,
    /// The labels of the other conditions that select no interval of one column
    /// ([`super::NoiseLabels::fixed`]), sorted, each once.
    fixed: Vec<String>,
    /// Per column the other conditions restrict, the interval they allow together.
    ranges: Vec<(String, super::Span)>,
    /// The equalities among `fixed` (a key that selects no interval, equal to one value), each
    /// as the key it compares (read at the source) and the value.
    equalities: Vec<(Expr, datafusion::common::ScalarValue)>,
}

/// The conditions below the answer's aggregate: each constant as its value in the compared
/// expression's type (a red team spelled one date fourteen ways, `'1950-6-15'`,
/// `'1950-06-15T00:00:01'`, …, each matching the same person with a layer of its own, and
/// averaged the layers away), each condition on a column or a generalization of one as the
/// interval of the column it allows.
fn conditions(input: &LogicalPlan) -> Conditions {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::utils::split_conjunction;
    let mut conditions = Conditions::default();
    let _ = input.apply(|node| {
        if let LogicalPlan::Filter(f) = node {
            for c in split_conjunction(&f.predicate) {
                conditions.add(c, &f.input);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    conditions.fixed.sort();
    conditions.fixed.dedup();
    conditions
}

impl Conditions {
    /// Adds `c`, one conjunct of a filter over `input`.
    fn add(&mut self, c: &Expr, input: &LogicalPlan) {
        use datafusion::logical_expr::expr::InList;
        use datafusion::logical_expr::{BinaryExpr, ExprSchemable, Operator};
        let schema = input.schema();
        let typed = |e: &Expr, v: &Expr| canonical(v, e.get_type(schema).ok().as_ref());
        // Labels name what a condition reads at the source, not a name given on the way.
        let source = |e: &Expr| read_at_source(e, input);
        match unalias(c) {
            Expr::InList(InList { expr, list, negated: false }) => {
                let mut values: Vec<Expr> = Vec::new();
                for v in list.iter().map(|v| typed(expr, v)) {
                    if !values.contains(&v) {
                        values.push(v);
                    }
                }
                // One value is an equality, however written (`IN ('a', 'a')` too).
                if let [only] = values.as_slice() {
                    self.narrow(&source(expr), only, None, input);
                    return;
                }
                for v in values {
                    if !self.listed.iter().any(|(e, c, _)| e == &**expr && *c == v) {
                        let label = equality(&source(expr), &v, input);
                        self.listed.push(((**expr).clone(), v, label));
                    }
                }
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (key, op, value) = if constant_on_left(left, right) {
                    (right, op.swap().unwrap_or(*op), left)
                } else {
                    (left, *op, right)
                };
                let value = typed(key, value);
                match op {
                    Operator::Eq => self.narrow(&source(key), &value, None, input),
                    Operator::GtEq => self.narrow(&source(key), &value, Some(true), input),
                    Operator::Lt => self.narrow(&source(key), &value, Some(false), input),
                    op => self.fixed.push(format!("{} {op} {}", label(&source(key)), shown(&value))),
                }
            }
            Expr::Not(inner) => self.narrow(&source(inner), &lit(false), None, input),
            other => self.narrow(&source(other), &lit(true), None, input),
        }
    }

    /// Narrows the interval of `key`'s column to where `key` equals `value` (`at_least`
    /// `None`), is at least it (`Some(true)`) or below it (`Some(false)`); names the condition
    /// instead when that is no interval of one column.
    fn narrow(&mut self, key: &Expr, value: &Expr, at_least: Option<bool>, plan: &LogicalPlan) {
        let labelled = super::KeyLabel::new(key, plan);
        let span = match value {
            Expr::Literal(v, _) => labelled.compared(v, at_least),
            _ => None,
        };
        match (span, at_least) {
            (Some(span), _) => super::labels::restrict(&mut self.ranges, labelled.column(), span),
            (None, None) => {
                if let Expr::Literal(v, _) = value {
                    self.equalities.push((key.clone(), v.clone()));
                }
                self.fixed.push(equality(key, value, plan));
            }
            (None, Some(true)) => self.fixed.push(format!("{} >= {}", label(key), shown(value))),
            (None, Some(false)) => self.fixed.push(format!("{} < {}", label(key), shown(value))),
        }
    }
}

/// `e`, an expression over `plan`'s output, with each column replaced by what it reads at the
/// scan: through renaming projections (`district AS d1`), computed ones (`date_part('year',
/// birth_date) AS y`) and subquery aliases. A red team named one column `d0` … `d199` in a
/// subquery and got 200 draws of one group's label layer.
fn read_at_source(e: &Expr, plan: &LogicalPlan) -> Expr {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    e.clone()
        .transform(|x| match x {
            Expr::Column(c) => Ok(Transformed::yes(column_at_source(&c, plan))),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
        .unwrap_or_else(|_| e.clone())
}

/// What column `c` of `plan`'s output reads at the scan ([`read_at_source`]).
fn column_at_source(c: &datafusion::common::Column, plan: &LogicalPlan) -> Expr {
    match plan {
        LogicalPlan::Projection(p) => match p.schema.index_of_column(c) {
            Ok(i) => read_at_source(unalias(&p.expr[i]), &p.input),
            Err(_) => Expr::Column(c.clone()),
        },
        LogicalPlan::SubqueryAlias(a) => match a.schema.index_of_column(c) {
            Ok(i) => {
                let (qualifier, field) = a.input.schema().qualified_field(i);
                column_at_source(&datafusion::common::Column::new(qualifier.cloned(), field.name()), &a.input)
            }
            Err(_) => Expr::Column(c.clone()),
        },
        LogicalPlan::TableScan(_) => Expr::Column(c.clone()),
        other => match other.inputs().into_iter().find(|i| i.schema().has_column(c)) {
            Some(input) => column_at_source(c, input),
            None => Expr::Column(c.clone()),
        },
    }
}

/// Whether `left <op> right` has its constant on the left only (`'a' = district`).
fn constant_on_left(left: &Expr, right: &Expr) -> bool {
    let is_literal = |e: &Expr| matches!(canonical(e, None), Expr::Literal(..));
    is_literal(left) && !is_literal(right)
}

/// The label `key = value`, as a group with that key value labels itself (so that `WHERE
/// district = 'a'` and the group `a` of `GROUP BY district` are one label).
fn equality(key: &Expr, value: &Expr, plan: &LogicalPlan) -> String {
    match value {
        Expr::Literal(v, _) => super::KeyLabel::new(key, plan).of(v),
        other => format!("{} = {}", label(key), shown(other)),
    }
}

/// A constant as a label shows it: its value, without its type.
pub(crate) fn shown(value: &Expr) -> String {
    match value {
        Expr::Literal(v, _) => super::labels::value_text(v),
        other => other.schema_name().to_string(),
    }
}

/// An expression as a label names it: without qualifiers (a table alias is the analyst's free
/// choice), casts (type coercion's, or the analyst's `CAST(x AS …)`) or aliases, every number
/// as a 64-bit float (`5000` and `5000.0` are one width) and a date unit in lower case
/// (`date_part('YEAR', …)` is `extract(year FROM …)`). A red team found each of these giving the
/// same group a fresh draw of its label layer.
pub(crate) fn label(e: &Expr) -> String {
    canonical_label(&unqualified(e))
}

/// [`label`] keeping the columns' qualifiers: for a column read at its scan
/// ([`read_at_source`]), the dataset's name, which no alias changes.
fn canonical_label(e: &Expr) -> String {
    use datafusion::common::ScalarValue;
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::expr::ScalarFunction;
    let bare = e.clone().transform_up(|x| match x {
        Expr::Cast(c) => Ok(Transformed::yes(*c.expr)),
        Expr::TryCast(c) => Ok(Transformed::yes(*c.expr)),
        Expr::Alias(a) => Ok(Transformed::yes(*a.expr)),
        Expr::Literal(v, _) if v.data_type().is_numeric() => match v.cast_to(&DataType::Float64) {
            Ok(f) => Ok(Transformed::yes(Expr::Literal(super::labels::signless(f), None))),
            Err(_) => Ok(Transformed::no(Expr::Literal(v, None))),
        },
        // The guard's own guarded division of a constant width (`nullif(500, 0)`) is the width.
        Expr::ScalarFunction(ScalarFunction { func, args })
            if func.name() == "nullif"
                && matches!(args.as_slice(), [Expr::Literal(a, _), Expr::Literal(b, _)] if a != b && !a.is_null()) =>
        {
            Ok(Transformed::yes(args.into_iter().next().unwrap_or_else(|| lit(0))))
        }
        Expr::ScalarFunction(ScalarFunction { func, mut args })
            if matches!(func.name(), "date_part" | "date_trunc") && !args.is_empty() =>
        {
            if let Expr::Literal(unit, _) = &args[0]
                && let Some(text) = unit.try_as_str().flatten()
            {
                args[0] = Expr::Literal(ScalarValue::Utf8(Some(text.to_lowercase())), None);
            }
            Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction { func, args })))
        }
        other => Ok(Transformed::no(other)),
    });
    bare.map(|t| t.data).unwrap_or_else(|_| e.clone()).schema_name().to_string()
}

/// Per aggregate, the quantity it measures ([`super::NoiseLabels::measures`]): what it adds up,
/// named by where it is read (a sum by its dataset's column, whatever the analyst's alias), and,
/// for every aggregate, the joins its rows come through.
///
/// Why the dataset and the joins: a quantity's name seeds its people layer, so two aggregates
/// of one name over one group's people draw one noise, and their difference is exact. Named by
/// the column alone, `sum(a.x)` and `sum(b.x)` over two datasets with a column `x`, or `sum(l.x)`
/// over a lookup table joined through two of its key columns, or through two person columns,
/// were one name over different rows: a red team read membership 120 of 120 and a value 63 of
/// 63 off their differences, never wrongly.
///
/// And, over joins, the datasets' columns its conditions and keys read where another dataset
/// of the join has a column of the name ([`columns_read`]): labels name a column without its
/// dataset (an alias must change nothing), so over a register joined with a copy of itself
/// registered under another name, `WHERE b.flag` and `WHERE a.flag AND b.flag` were one label
/// and one quantity over other rows (each person's rows multiplied differently).
///
/// A join with a table about nobody whose columns no aggregate adds up is named by the
/// people's column it goes through alone (`civil.visits.code = a table`), the whole pair being
/// a bucket's label (returned beside the names, `joined <pair>`): named by the pair, each code
/// table joined on one column gave the same rows another people layer at the group's scale,
/// and a register beside three code tables, joined one at a time, told a heavy target by the
/// spread of four answers (50 of 60 districts). Without the people's column in the name, two
/// routes to one code table's values (`ON v.code = l.k` against `ON v.code2 = l.k` under one
/// label `chapter = A`) shared their people layer, told apart by the label layers alone, which
/// ranges that remove nobody redraw: a red team averaged them away, a target's three rows
/// 60 of 60 districts in sixteen queries.
fn measured_quantities(
    aggregates: &[Expr],
    kinds: &[DpAggregate],
    one_row: bool,
    input: &LogicalPlan,
    keys: &[Expr],
    ctx: &crate::GuardContext,
) -> (Vec<String>, Vec<String>) {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    // The tables about nobody whose columns no aggregate reads.
    let summed: Vec<String> =
        scanned(aggregates, input).iter().filter_map(|c| Some(c.relation.as_ref()?.to_string())).collect();
    let mut labelled = Vec::new();
    let _ = input.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let table = scan.table_name.to_string();
            let about_nobody = ctx
                .dataset(scan.table_name.schema(), scan.table_name.table())
                .is_some_and(|d| d.privacy_unit.is_none());
            if about_nobody && !summed.contains(&table) {
                labelled.push(table);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let (signature, joined) = join_signature(input, &labelled);
    // Which dataset a column of a shared name is read from, with or without joins in the name:
    // a code table's `region` and the people's, under one label, are other rows.
    let joins = match (signature, columns_read(input, keys)) {
        (joins, read) if read.is_empty() => joins,
        (joins, read) if joins.is_empty() => format!("reading {read}"),
        (joins, read) => format!("{joins}; reading {read}"),
    };
    let names = aggregates
        .iter()
        .zip(kinds)
        .map(|(e, kind)| {
            let what = match kind {
                DpAggregate::CountRows if !counts_values(e, *kind) => "rows".to_string(),
                // Over one row per person, people and rows are the same count.
                DpAggregate::CountPeople if one_row => "rows".to_string(),
                DpAggregate::CountPeople => "people".to_string(),
                // COUNT(column) is the count of values of the column's sum (the query layer draws
                // it as an average's).
                DpAggregate::CountRows | DpAggregate::Sum { .. } | DpAggregate::Avg { .. } => match unalias(e) {
                    Expr::AggregateFunction(f) => format!(
                        "sum {}",
                        f.params.args.first().map(|a| canonical_label(&read_at_source(a, input))).unwrap_or_default()
                    ),
                    other => format!("sum {}", canonical_label(&read_at_source(other, input))),
                },
            };
            if joins.is_empty() { what } else { format!("{what} via {joins}") }
        })
        .collect();
    (names, joined)
}

/// Whether the aggregate `e` (of kind `kind`) is `COUNT(column)`: a count of rows whose
/// argument is no constant.
fn counts_values(e: &Expr, kind: DpAggregate) -> bool {
    matches!((kind, unalias(e)), (DpAggregate::CountRows, Expr::AggregateFunction(f))
        if matches!(f.params.args.as_slice(), [arg] if !matches!(arg, Expr::Literal(..))))
}

/// The equi-join pairs of `plan`, each side named by the column it reads at its scan, each pair
/// and the list sorted: how the rows an aggregate reads are put together, whatever the spelling;
/// and apart, as labels (`joined <pair>`), the pairs with a side in one of the tables `labelled`.
fn join_signature(plan: &LogicalPlan, labelled: &[String]) -> (String, Vec<String>) {
    /// Names and labels as collected: the pairs in the name, and the labels.
    type Collected = (Vec<String>, Vec<String>);
    /// Adds the pair `l = r` of a join over `plan`: to the name, or, with a side in a table of
    /// `labelled`, to the labels, its other side (the people's column a code table is reached
    /// through) staying in the name.
    fn pair(l: &Expr, r: &Expr, plan: &LogicalPlan, labelled: &[String], (named, joined): &mut Collected) {
        let sides = [l, r].map(|e| {
            let read = read_at_source(e, plan);
            let of_labelled = matches!(&read, Expr::Column(c)
                if c.relation.as_ref().is_some_and(|table| labelled.contains(&table.to_string())));
            (canonical_label(&read), of_labelled)
        });
        let mut text = [sides[0].0.as_str(), sides[1].0.as_str()];
        text.sort_unstable();
        let text = text.join(" = ");
        if sides.iter().any(|(_, of_labelled)| *of_labelled) {
            named.extend(
                sides.iter().filter(|(_, of_labelled)| !of_labelled).map(|(side, _)| format!("{side} = a table")),
            );
            joined.push(format!("joined {text}"));
        } else {
            named.push(text);
        }
    }
    fn collect(plan: &LogicalPlan, labelled: &[String], collected: &mut Collected) {
        if let LogicalPlan::Join(join) = plan {
            for (l, r) in &join.on {
                pair(l, r, plan, labelled, collected);
            }
            // Before the optimizer, `ON a = b` is the join's filter.
            for condition in join.filter.iter().flat_map(datafusion::logical_expr::utils::split_conjunction) {
                match condition {
                    Expr::BinaryExpr(b) if b.op == datafusion::logical_expr::Operator::Eq => {
                        pair(&b.left, &b.right, plan, labelled, collected);
                    }
                    other => collected.0.push(canonical_label(&read_at_source(other, plan))),
                }
            }
        }
        for input in plan.inputs() {
            collect(input, labelled, collected);
        }
    }
    let mut collected = (Vec::new(), Vec::new());
    collect(plan, labelled, &mut collected);
    let (mut named, mut joined) = collected;
    for list in [&mut named, &mut joined] {
        list.sort();
        list.dedup();
    }
    (named.join("; "), joined)
}

/// The columns `plan`'s filters and the group `keys` read whose name another dataset of `plan`
/// has too, each named by its dataset's column, sorted: which of the two a label (which names a
/// column without its dataset) reads.
///
/// Why only those: every column read was in the name, so keys and conditions that change
/// nobody's rows named fresh quantities over one group's people, each a fresh draw of its
/// people layer at the group's scale: a code table's columns holding one value for a whole
/// group (a district's region, province, …), grouped by in every subset, or conditions that
/// remove nobody in every subset (a red team: 53 of 60 districts told by their spread). A
/// column of a name no other dataset of the query has is named by its label already.
fn columns_read(plan: &LogicalPlan, keys: &[Expr]) -> String {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut datasets_with: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            for field in scan.source.schema().fields() {
                *datasets_with.entry(field.name().clone()).or_default() += 1;
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let mut read: Vec<String> = conditions_and_keys(plan)
        .into_iter()
        .chain(scanned(keys, plan))
        .filter(|c| datasets_with.get(&c.name).is_some_and(|n| *n > 1))
        .map(|c| canonical_label(&Expr::Column(c)))
        .collect();
    read.sort();
    read.dedup();
    read.join(", ")
}

/// Calls `f` with each condition (a conjunct of a WHERE clause) and group key of `plan` and its
/// inputs, the plan its columns read from, and whether it is a key. A join's own conditions are
/// not among them ([`join_signature`] names those).
fn each_condition_and_key<'a>(plan: &'a LogicalPlan, f: &mut impl FnMut(&'a Expr, &'a LogicalPlan, bool)) {
    let (exprs, key): (Vec<&Expr>, bool) = match plan {
        LogicalPlan::Filter(filter) => (datafusion::logical_expr::utils::split_conjunction(&filter.predicate), false),
        LogicalPlan::Aggregate(a) => (a.group_expr.iter().collect(), true),
        _ => (Vec::new(), false),
    };
    if let [input] = plan.inputs().as_slice() {
        exprs.into_iter().for_each(|e| f(e, input, key));
    }
    for input in plan.inputs() {
        each_condition_and_key(input, f);
    }
}

/// The columns the filters and grouping keys of `plan` and its inputs read, each as the
/// dataset's column it reads at its scan ([`scanned`]).
pub(crate) fn conditions_and_keys(plan: &LogicalPlan) -> Vec<datafusion::common::Column> {
    let mut read = Vec::new();
    each_condition_and_key(plan, &mut |e, input, _| read.extend(scanned([e], input)));
    read
}

/// Every condition (each conjunct of a WHERE clause) and group key of `plan`, each as it reads
/// at the scan ([`read_at_source`]), the conditions first, then the keys: `date_trunc('week',
/// d)` computed in a CTE and grouped by its alias is the generalization of `d` it is.
pub(crate) fn conditions_and_keys_read(plan: &LogicalPlan) -> (Vec<Expr>, Vec<Expr>) {
    let (mut conditions, mut keys) = (Vec::new(), Vec::new());
    each_condition_and_key(plan, &mut |e, input, key| {
        if key { &mut keys } else { &mut conditions }.push(read_at_source(e, input));
    });
    (conditions, keys)
}

/// Both sides of every join below `plan`'s aggregate over rows, as read at the scan. A join
/// compares values as a condition does, and casts them as a condition may: one to one (a
/// person's text code joined to a code table's integer key was cast to an integer, which merged
/// `'007'` into 7, and a code table registered again with its key's type changed answered the
/// target's code apart: a red team, 2026-12-06, 60 of 60 districts in two queries).
pub(crate) fn join_sides_read(plan: &LogicalPlan) -> Vec<Expr> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::utils::split_conjunction;
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let mut sides = Vec::new();
    let _ = lowest_aggregate_node(plan).unwrap_or(plan).apply(|node| {
        if let LogicalPlan::Join(j) = node {
            let filtered = j.filter.iter().flat_map(split_conjunction).flat_map(|e| match e {
                Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => vec![left.as_ref(), right.as_ref()],
                other => vec![other],
            });
            for side in j.on.iter().flat_map(|(l, r)| [l, r]).chain(filtered) {
                sides.push(read_at_source(side, node));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    sides
}

/// The columns `exprs` read, each resolved through `plan` to the dataset's column it reads at
/// its scan ([`read_at_source`]); a column of no dataset (an aggregate's output) is left out.
fn scanned<'a>(exprs: impl IntoIterator<Item = &'a Expr>, plan: &LogicalPlan) -> Vec<datafusion::common::Column> {
    exprs
        .into_iter()
        .flat_map(|e| e.column_refs())
        .filter_map(|c| match read_at_source(&Expr::Column(c.clone()), plan) {
            Expr::Column(c) if c.relation.is_some() => Some(c),
            _ => None,
        })
        .collect()
}

/// `e` with its columns' qualifiers dropped, for a seed's label: a table alias is the analyst's
/// free choice, and a label that changed with it gave a fresh draw per alias (a red team averaged
/// an IN constant's layer away by renaming the table).
fn unqualified(e: &Expr) -> Expr {
    use datafusion::common::Column;
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let stripped = e.clone().transform(|x| match x {
        Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))),
        other => Ok(Transformed::no(other)),
    });
    stripped.map(|t| t.data).unwrap_or_else(|_| e.clone())
}

/// A constant as a literal of `target`'s type, when it is a literal or casts of one that convert;
/// else as written.
fn canonical(e: &Expr, target: Option<&DataType>) -> Expr {
    fn value(e: &Expr) -> Option<datafusion::common::ScalarValue> {
        use datafusion::logical_expr::expr::{Cast, TryCast};
        match e {
            Expr::Literal(v, _) => Some(v.clone()),
            Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                value(expr)?.cast_to(field.data_type()).ok()
            }
            Expr::Alias(a) => value(&a.expr),
            _ => None,
        }
    }
    value(e)
        .and_then(|v| match target {
            Some(t) => v.cast_to(t).ok(),
            None => Some(v),
        })
        .map_or_else(|| e.clone(), |v| Expr::Literal(v, None))
}

/// [`conditions_and_keys_read`] where an anonymized answer measures: the lowest aggregate's
/// keys and the conditions below it, not a HAVING over the released groups above it (a red team
/// found `HAVING sum(x) > 110.5` refused as a cast of a person's value: the released sum,
/// compared with a decimal constant, is cast to a float). The whole plan where it has no one
/// lowest aggregate, so that no condition goes unchecked.
pub(crate) fn measured_conditions_and_keys(plan: &LogicalPlan) -> (Vec<Expr>, Vec<Expr>) {
    conditions_and_keys_read(lowest_aggregate_node(plan).unwrap_or(plan))
}

/// A group key of `plan`'s aggregate over rows (as read at the scan) one of whose buckets the
/// conditions on its column cut, and that column's label: `code = 'K550'` beside
/// `substr(code, 1, 3)`, a day beside `date_trunc('month', d)`, a range beside a band it does
/// not hold whole.
pub(crate) fn key_cut_by_conditions(plan: &LogicalPlan) -> Option<(Expr, String)> {
    let Some(LogicalPlan::Aggregate(agg)) = lowest_aggregate_node(plan) else { return None };
    let intervals = conditions(&agg.input).ranges;
    let keys = crate::exprs::group_keys(agg).ok()?;
    keys.iter().find_map(|key| {
        let key = read_at_source(&key.clone().unalias(), &agg.input);
        let label = super::KeyLabel::new(&key, &agg.input);
        let (column, span) = intervals.iter().find(|(c, _)| c == label.column())?;
        label.cuts(span).then(|| (key.clone(), column.clone()))
    })
}

/// The answer's aggregate over rows: the aggregate whose input aggregates nothing.
pub(super) fn lowest_aggregate(plan: &LogicalPlan) -> Result<&Aggregate> {
    match lowest_aggregate_node(plan) {
        Some(LogicalPlan::Aggregate(agg)) => Ok(agg),
        _ => plan_err!("an anonymized answer must end in one aggregate over rows"),
    }
}

/// The aggregate over rows (none below it) that `plan` reaches through nodes of one input, if
/// any.
fn lowest_aggregate_node(plan: &LogicalPlan) -> Option<&LogicalPlan> {
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Aggregate(agg) if !reads_aggregates(&agg.input) => return Some(node),
            _ => match node.inputs()[..] {
                [input] => node = input,
                _ => return None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use veil_common::{Mode, Tag};

    use super::*;
    use crate::{ColumnInfo, Contribution, DatasetInfo, GuardContext};

    /// A census grouped by each column once, with the keys that repeat a column or read only
    /// columns grouped by computed above the aggregate, has the rows and columns of one grouped
    /// by every key.
    #[tokio::test]
    async fn a_census_groups_by_each_column_once_and_shows_every_key() {
        use datafusion::logical_expr::{LogicalPlanBuilder, col};
        let n = 500;
        let districts: ArrayRef =
            Arc::new(StringArray::from_iter((0..n).map(|i| (i % 7 != 0).then(|| ["a", "b", "c"][i % 3]))));
        let x: ArrayRef = Arc::new(Int64Array::from_iter((0..n).map(|i| (i % 13 != 0).then_some(i as i64 % 90 - 20))));
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values((0..n).map(|i| i as i64 % 41)));
        let batch = RecordBatch::try_from_iter([("d", districts), ("x", x), ("id", ids)]).unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("t", Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap())).unwrap();
        let scan = ctx.table("t").await.unwrap().into_unoptimized_plan();
        let in_range = cast(col("x").gt_eq(lit(0i64)).and(col("x").lt(lit(50i64))), DataType::Int64);
        let group = vec![
            col("d").alias("bucket_0"),
            col("d").alias("value_0"),
            (col("x") / lit(10i64) * lit(10i64)).alias("bucket_1"),
            col("x").alias("value_1"),
            col("x").alias("range_0"),
            in_range.alias("inside_0"),
            (col("id") + col("x")).alias("mixed"),
            (col("id") * lit(3i64)).alias("unit"),
        ];
        let (grouped, shown) = grouped_once(group.clone()).unwrap();
        let names: Vec<String> = grouped.iter().map(|g| g.schema_name().to_string()).collect();
        // Each column once, and the keys that read more than the grouped columns.
        assert_eq!(names, ["bucket_0", "value_1", "mixed", "unit"]);
        let every_key = LogicalPlanBuilder::from(scan.clone()).aggregate(group, Vec::<Expr>::new()).unwrap();
        let once = LogicalPlanBuilder::from(scan).aggregate(grouped, Vec::<Expr>::new()).unwrap().project(shown);
        let mut answers = Vec::new();
        for plan in [every_key.build().unwrap(), once.unwrap().build().unwrap()] {
            let batches = ctx.execute_logical_plan(plan).await.unwrap().collect().await.unwrap();
            let text = pretty_format_batches(&batches).unwrap().to_string();
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            answers.push(lines);
        }
        assert!(answers[0].len() > 100, "the census has its groups");
        assert_eq!(answers[0], answers[1]);
    }

    #[test]
    fn a_sum_and_an_average_of_one_column_are_one_measure() {
        use datafusion::functions_aggregate::expr_fn::{avg, count, sum};
        use datafusion::logical_expr::col;
        let aggregates = [
            sum(col("x")),
            avg(cast(col("x"), DataType::Float64)).alias("mean"),
            count(lit(1)),
            sum(col("y")),
            avg(col("y")),
        ];
        assert_eq!(same_sums(&aggregates), [0, 0, 2, 3, 3]);
    }

    /// The measuring plan over one row per person gives the same totals with each row taken as
    /// it is as with an aggregate over people.
    #[tokio::test]
    async fn one_row_per_person_measures_the_same_without_the_aggregate_over_people() {
        let n = 300;
        let ids: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("p{i}"))));
        let districts: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| ["a", "b", "c", "d"][i % 4])));
        // Nulls, values above the bound and ties among the largest.
        let subsidy: ArrayRef = Arc::new(Int64Array::from_iter((0..n).map(|i| match i % 11 {
            0 => None,
            1 => Some(9_000),
            r => Some((r as i64 % 5) * 400),
        })));
        let batch = RecordBatch::try_from_iter([("id", ids), ("district", districts), ("subsidy", subsidy)]).unwrap();
        let ctx = SessionContext::new();
        ctx.sql("CREATE SCHEMA civil").await.unwrap();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table("civil.people", Arc::new(table)).unwrap();
        let column = |tag, bounds| ColumnInfo { tag, linkable: false, generalize: None, bounds, public_values: None };
        let people = DatasetInfo {
            privacy_unit: Some("id".into()),
            columns: HashMap::from([
                ("id".into(), column(Tag::Identifier, None)),
                ("district".into(), column(Tag::QuasiIdentifier, None)),
                ("subsidy".into(), column(Tag::Sensitive, Some((0.0, 3000.0)))),
            ]),
            contribution: Contribution::default(),
            one_row_per_unit: true,
            capped: Default::default(),
            unique: Vec::new(),
            rows: n as u64,
        };
        let guard = GuardContext {
            mode: Mode::Aggregate,
            k: 5,
            datasets: HashMap::from([(("civil".into(), "people".into()), people)]),
            exact_aggregates: false,
            capped_copies: Default::default(),
        };
        let sql = "SELECT district, count(*) AS n, count(DISTINCT id) AS p, sum(subsidy) AS s, avg(subsidy) AS a
                   FROM civil.people WHERE district IN ('a', 'b', 'c') GROUP BY district";
        let state = ctx.state();
        let plan = state.create_logical_plan(sql).await.unwrap();
        let plan = state.analyzer().execute_and_check(plan, state.config_options(), |_, _| {}).unwrap();
        let assessment = crate::check(&plan, &guard).unwrap();
        let mut answers = Vec::new();
        for one_row in [false, true] {
            let mut threshold =
                super::super::enforce_min_group_size::Threshold::new(&guard, Arc::new(AtomicU64::new(0)));
            let (measuring, _) =
                bound_with(plan.clone(), &assessment, &mut threshold, one_row, &Beside::default(), None, None).unwrap();
            // Over several rows a person, the aggregate per person, then its contributions
            // clamped (a projection), below the groups' totals (an aggregate, whose rankings'
            // parts a projection splits).
            let below_totals = measuring.inputs().into_iter().flat_map(|totals| totals.inputs()).collect::<Vec<_>>();
            let has_aggregate_over_people = below_totals.iter().any(
                |i| matches!(i, LogicalPlan::Projection(p) if matches!(p.input.as_ref(), LogicalPlan::Aggregate(_))),
            );
            assert_eq!(has_aggregate_over_people, !one_row, "{}", measuring.display_indent());
            // Over several rows a person, the seeds of what the people contribute follow: one of
            // their rows, and one per measured contribution (rows, the sum, the average's sum and
            // count of values); over one row a person the people are the rows.
            let (contents, rest): (Vec<_>, Vec<_>) = (measuring.schema().columns().into_iter())
                .partition(|c| c.name.starts_with(&format!("{ANON_SEED}_content_")));
            assert_eq!(contents.len(), if one_row { 0 } else { 5 });
            let sorted = datafusion::logical_expr::LogicalPlanBuilder::from(measuring)
                .project(rest.into_iter().map(Expr::Column))
                .unwrap()
                .sort([datafusion::logical_expr::col("__veil_dp_key_0").sort(true, true)])
                .unwrap()
                .build()
                .unwrap();
            let batches = ctx.execute_logical_plan(sorted).await.unwrap().collect().await.unwrap();
            answers.push(pretty_format_batches(&batches).unwrap().to_string());
        }
        assert!(answers[0].contains("| a "), "{}", answers[0]);
        assert_eq!(answers[0], answers[1]);
    }
}
