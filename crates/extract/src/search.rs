//! The search for the generalization with the least information loss that meets `k` and `l`
//! within the allowed suppression.
//!
//! A node of the lattice gives each quasi-identifier a level. Because every step nests in the
//! next, raising a level only merges classes: a node that meets the requirements stays met by
//! every node above it, and a node that fails makes every node below it fail (ARX's
//! monotonicity). Loss is not monotone (a coarser node may suppress fewer records), so nodes are
//! visited in the order of a lower bound on their loss, the loss of their generalization alone,
//! and the search stops when that bound cannot beat the best node found (branch and bound);
//! nodes below a failed node are skipped without evaluating them.

use std::collections::HashMap;

use crate::columns::{NULL_CODE, Sensitive, Table, View};
use crate::{Error, MAX_LATTICE, Progress, Result, Spec};

/// One node, evaluated.
pub(crate) struct Eval {
    /// The level of each quasi-identifier.
    pub(crate) levels: Vec<usize>,
    /// Per row: its equivalence class.
    pub(crate) class: Vec<u32>,
    /// Per class: distinct people.
    pub(crate) people: Vec<u64>,
    /// Per class: whether it is released (meets `k` and `l`).
    pub(crate) kept: Vec<bool>,
    /// Rows in classes that are not released.
    pub(crate) suppressed_rows: u64,
    /// Mean loss over all rows, a suppressed row losing everything.
    pub(crate) loss: f64,
    /// Per quasi-identifier: mean loss over all rows.
    pub(crate) column_loss: Vec<f64>,
}

/// The chosen node and how the search went.
pub(crate) struct Found {
    pub(crate) eval: Eval,
    pub(crate) evaluated: usize,
    pub(crate) lattice: usize,
}

impl Eval {
    /// Whether the node meets the requirements within `allowed` suppressed rows.
    fn meets(&self, allowed: u64) -> bool {
        self.suppressed_rows <= allowed
    }
}

/// Rows that may be suppressed.
pub(crate) fn allowed(table: &Table, spec: &Spec) -> u64 {
    (spec.max_suppression * table.rows() as f64).floor() as u64
}

pub(crate) fn search(table: &Table, spec: &Spec, progress: &mut dyn FnMut(Progress)) -> Result<Found> {
    let heights: Vec<usize> = table.qis.iter().map(|q| q.ladder.len()).collect();
    let lattice = heights.iter().try_fold(1usize, |n, h| n.checked_mul(*h)).filter(|n| *n <= MAX_LATTICE).ok_or_else(
        || Error::Spec(format!("the generalization lattice has more than {MAX_LATTICE} nodes: use fewer quasi-identifiers or shorter hierarchies")),
    )?;
    let allowed = allowed(table, spec);
    let mut nodes: Vec<(f64, Vec<usize>)> = (0..lattice)
        .map(|mut i| {
            let levels: Vec<usize> = heights
                .iter()
                .map(|h| {
                    let l = i % h;
                    i /= h;
                    l
                })
                .collect();
            (bound(table, &levels), levels)
        })
        .collect();
    nodes.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.iter().sum::<usize>().cmp(&b.1.iter().sum())));
    let mut failed: Vec<Vec<usize>> = Vec::new();
    let mut best: Option<Eval> = None;
    let mut evaluated = 0;
    for (visited, (lower, levels)) in nodes.iter().enumerate() {
        if best.as_ref().is_some_and(|b| b.loss <= *lower) {
            break;
        }
        if failed.iter().any(|f| levels.iter().zip(f).all(|(l, f)| l <= f)) {
            continue;
        }
        let eval = evaluate(table, spec, levels);
        evaluated += 1;
        progress(Progress { stage: "search", done: visited as u64 + 1, total: lattice as u64 });
        if !eval.meets(allowed) {
            failed.push(levels.clone());
        } else if best.as_ref().is_none_or(|b| eval.loss < b.loss) {
            best = Some(eval);
        }
    }
    match best {
        Some(eval) => Ok(Found { eval, evaluated, lattice }),
        None => Err(infeasible(table, spec)),
    }
}

/// The loss of a node's generalization alone: a lower bound of its loss, since a suppressed row
/// loses 1, at least as much as its generalization.
fn bound(table: &Table, levels: &[usize]) -> f64 {
    if table.qis.is_empty() {
        return 0.0;
    }
    table.qis.iter().zip(levels).map(|(q, l)| q.mean_loss[*l]).sum::<f64>() / table.qis.len() as f64
}

/// Why even the top of the lattice (every quasi-identifier `*`, one class) fails: too few people,
/// or a sensitive column with too few distinct values.
fn infeasible(table: &Table, spec: &Spec) -> Error {
    if (table.people as u64) < spec.k {
        return Error::Infeasible {
            column: None,
            reason: format!("the dataset holds fewer than k = {} people", spec.k),
        };
    }
    for s in &table.sensitive {
        let mut distinct: Vec<u32> = s.codes.iter().copied().filter(|c| *c != NULL_CODE).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if (distinct.len() as u64) < spec.l {
            return Error::Infeasible {
                column: Some(s.name.clone()),
                reason: format!("sensitive column `{}` has fewer than l = {} distinct values", s.name, spec.l),
            };
        }
    }
    // The top of the lattice: which sensitive column keeps too many records from being released.
    let top: Vec<usize> = table.qis.iter().map(|q| q.ladder.len() - 1).collect();
    let allowed = allowed(table, spec);
    if evaluate_with(table, spec, &top, &[], &[]).meets(allowed) {
        for s in &table.sensitive {
            if !evaluate_with(table, spec, &top, &[s], &[]).meets(allowed) {
                return Error::Infeasible {
                    column: Some(s.name.clone()),
                    reason: format!(
                        "sensitive column `{}` is not {}-diverse even with every quasi-identifier withheld: too many people share their values",
                        s.name, spec.l
                    ),
                };
            }
        }
    }
    // Or what one dataset's staff know exactly splits the classes.
    let sensitive: Vec<&Sensitive> = table.sensitive.iter().collect();
    if evaluate_with(table, spec, &top, &sensitive, &[]).meets(allowed) {
        for view in &table.views {
            if !evaluate_with(table, spec, &top, &sensitive, &[view]).meets(allowed) {
                let names = view.known_names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
                return Error::Infeasible {
                    column: view.known_names.first().cloned(),
                    reason: format!(
                        "{names} would be released as they are, and whoever knows them (the staff of the datasets they come from, or anyone holding a copy) would tell apart fewer than k people by them, or read another sensitive column; leave some out of the extract"
                    ),
                };
            }
        }
    }
    Error::Infeasible {
        column: None,
        reason: "no combination of levels suppresses few enough records (people's numbers of rows, or the values they share, set them apart)".into(),
    }
}

/// Evaluates one node.
pub(crate) fn evaluate(table: &Table, spec: &Spec, levels: &[usize]) -> Eval {
    let views: Vec<&View> = table.views.iter().collect();
    evaluate_with(table, spec, levels, &table.sensitive.iter().collect::<Vec<_>>(), &views)
}

/// Evaluates one node, checking `l` on `sensitive` only, and what `views` know.
fn evaluate_with(table: &Table, spec: &Spec, levels: &[usize], sensitive: &[&Sensitive], views: &[&View]) -> Eval {
    let rows = table.rows();
    let row_class = row_classes(table, levels);
    // To whoever tells a class's rows apart by the values a view knows, every part must still
    // hold k people and l values of the columns it protects.
    let parts: Vec<(Vec<u32>, usize, Vec<&Sensitive>)> = views
        .iter()
        .map(|view| {
            let refined = refine(&row_class, &view.known);
            let (part, parts) = if table.linked { profiles(table, &refined) } else { refined };
            (part, parts, view.protected.iter().map(|i| &table.sensitive[*i]).collect())
        })
        .collect();
    let (mut class, classes) = if table.linked { profiles(table, &row_class) } else { row_class };
    let (mut people, mut kept) = meeting(table, spec, &class, classes, sensitive, None);
    if !parts.is_empty() {
        // The rows of a part that falls short are suppressed, which can leave a class or
        // another part short in turn: repeated until nothing changes (rows only leave, so it
        // ends).
        let mut alive = vec![true; rows];
        loop {
            let mut next: Vec<bool> = class.iter().zip(&alive).map(|(c, a)| *a && kept[*c as usize]).collect();
            for (part, count, protected) in &parts {
                let (_, ok) = meeting(table, spec, part, *count, protected, Some(&next));
                for (n, p) in next.iter_mut().zip(part) {
                    *n &= ok[*p as usize];
                }
            }
            if next == alive {
                break;
            }
            alive = next;
            (people, kept) = meeting(table, spec, &class, classes, sensitive, Some(&alive));
        }
        // Rows suppressed from a released class form a class of their own, not released.
        let out = classes as u32;
        for (c, a) in class.iter_mut().zip(&alive) {
            if !*a {
                *c = out;
            }
        }
        people.push(0);
        kept.push(false);
    }
    let mut suppressed_rows = 0u64;
    let mut column_loss = vec![0.0f64; table.qis.len()];
    for (row, c) in class.iter().enumerate() {
        if kept[*c as usize] {
            for (q, (qi, level)) in table.qis.iter().zip(levels).enumerate() {
                column_loss[q] += qi.loss[*level][qi.base[row] as usize];
            }
        } else {
            suppressed_rows += 1;
        }
    }
    let n = rows.max(1) as f64;
    for l in &mut column_loss {
        *l = (*l + suppressed_rows as f64) / n;
    }
    let loss = if table.qis.is_empty() {
        suppressed_rows as f64 / n
    } else {
        column_loss.iter().sum::<f64>() / table.qis.len() as f64
    };
    Eval { levels: levels.to_vec(), class, people, kept, suppressed_rows, loss, column_loss }
}

/// Per class: its distinct people, and whether it holds `k` of them and `l` values of each of
/// `sensitive`; counting only the rows `alive` says (all when `None`).
fn meeting(
    table: &Table,
    spec: &Spec,
    class: &[u32],
    classes: usize,
    sensitive: &[&Sensitive],
    alive: Option<&[bool]>,
) -> (Vec<u64>, Vec<bool>) {
    let counted = |values| counted(class, values, alive);
    let mut people = vec![0u64; classes];
    if table.people == table.rows() {
        // One row per person: people are rows.
        for (c, _) in counted(&table.units) {
            people[c as usize] += 1;
        }
    } else {
        for pair in distinct_pairs(counted(&table.units)) {
            people[(pair >> 32) as usize] += 1;
        }
    }
    let mut kept: Vec<bool> = people.iter().map(|p| *p >= spec.k).collect();
    for s in sensitive {
        let mut values = vec![0u64; classes];
        for pair in distinct_pairs(counted(&s.codes)) {
            if pair as u32 != NULL_CODE {
                values[(pair >> 32) as usize] += 1;
            }
        }
        for (k, v) in kept.iter_mut().zip(values) {
            *k &= v >= spec.l;
        }
        if table.people < table.rows() && spec.l > 1 {
            // People with several rows can all hold one value beside others: then distinct
            // values alone would let that value be read off everyone in the class.
            let triples = counted(&s.codes).zip(counted(&table.units)).map(|((c, v), (_, u))| (c, v, u));
            for (k, ok) in kept.iter_mut().zip(spread_over_people(triples, classes, spec.l)) {
                *k &= ok;
            }
        }
    }
    (people, kept)
}

/// `(class, value)` of each row `alive` counts (every row when `None`).
fn counted<'a>(
    class: &'a [u32],
    values: &'a [u32],
    alive: Option<&'a [bool]>,
) -> impl Iterator<Item = (u32, u32)> + 'a {
    class
        .iter()
        .zip(values)
        .enumerate()
        .filter(move |(row, _)| alive.is_none_or(|a| a[*row]))
        .map(|(_, (c, v))| (*c, *v))
}

/// Row classes split further by the values of `known` columns.
fn refine((class, classes): &(Vec<u32>, usize), known: &[Vec<u32>]) -> (Vec<u32>, usize) {
    let mut class = class.clone();
    let mut classes = *classes;
    for codes in known {
        let mut ids: HashMap<u64, u32> = HashMap::with_capacity(classes);
        for (c, v) in class.iter_mut().zip(codes) {
            let key = (u64::from(*c) << 32) | u64::from(*v);
            let next = ids.len() as u32;
            *c = *ids.entry(key).or_insert(next);
        }
        classes = ids.len();
    }
    (class, classes)
}

/// Per class, for one sensitive column whose people may have several rows: whether every value
/// is lacked by at least `l - 1` of the class's people who have a value at all (with one row per
/// person, that is what `l` distinct values mean).
fn spread_over_people(rows: impl Iterator<Item = (u32, u32, u32)>, classes: usize, l: u64) -> Vec<bool> {
    // (class, value, person), each once; and the people with any value, per class.
    let mut triples: Vec<(u32, u32, u32)> = rows.filter(|(_, code, _)| *code != NULL_CODE).collect();
    triples.sort_unstable();
    triples.dedup();
    let mut holders_of_any: Vec<(u32, u32)> = triples.iter().map(|(c, _, u)| (*c, *u)).collect();
    holders_of_any.sort_unstable();
    holders_of_any.dedup();
    let mut with_value = vec![0u64; classes];
    for (c, _) in &holders_of_any {
        with_value[*c as usize] += 1;
    }
    let mut most_holders = vec![0u64; classes];
    let mut i = 0;
    while i < triples.len() {
        let (c, v, _) = triples[i];
        let mut n = 0;
        while i < triples.len() && triples[i].0 == c && triples[i].1 == v {
            n += 1;
            i += 1;
        }
        most_holders[c as usize] = most_holders[c as usize].max(n);
    }
    with_value.iter().zip(&most_holders).map(|(w, m)| w.saturating_sub(*m) + 1 >= l).collect()
}

/// Each row's class by its generalized quasi-identifiers alone, and the number of classes.
fn row_classes(table: &Table, levels: &[usize]) -> (Vec<u32>, usize) {
    let rows = table.rows();
    let mut class = vec![0u32; rows];
    let mut classes = 1;
    for (i, (qi, level)) in table.qis.iter().zip(levels).enumerate() {
        let codes = &qi.codes[*level];
        if i == 0 {
            for (c, b) in class.iter_mut().zip(&qi.base) {
                *c = codes[*b as usize];
            }
            classes = qi.labels[*level].len();
            continue;
        }
        let mut ids: HashMap<u64, u32> = HashMap::with_capacity(classes);
        for (c, b) in class.iter_mut().zip(&qi.base) {
            let key = (u64::from(*c) << 32) | u64::from(codes[*b as usize]);
            let next = ids.len() as u32;
            *c = *ids.entry(key).or_insert(next);
        }
        classes = ids.len();
    }
    (class, classes)
}

/// With linked rows: each row's class is its person's profile, the multiset of the person's row
/// classes (how many rows in each), so `k` people must share all of it, their number of rows
/// included.
fn profiles(table: &Table, (row_class, _): &(Vec<u32>, usize)) -> (Vec<u32>, usize) {
    let mut pairs: Vec<u64> =
        table.units.iter().zip(row_class).map(|(u, c)| (u64::from(*u) << 32) | u64::from(*c)).collect();
    pairs.sort_unstable();
    let mut profile_of = vec![0u32; table.people];
    let mut ids: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut i = 0;
    while i < pairs.len() {
        let unit = (pairs[i] >> 32) as usize;
        let mut set = Vec::new();
        while i < pairs.len() && (pairs[i] >> 32) as usize == unit {
            set.push(pairs[i] as u32);
            i += 1;
        }
        let next = ids.len() as u32;
        profile_of[unit] = *ids.entry(set).or_insert(next);
    }
    (table.units.iter().map(|u| profile_of[*u as usize]).collect(), ids.len())
}

/// The distinct pairs, packed as `a << 32 | b`, sorted.
fn distinct_pairs(pairs: impl Iterator<Item = (u32, u32)>) -> Vec<u64> {
    let mut pairs: Vec<u64> = pairs.map(|(a, b)| (u64::from(a) << 32) | u64::from(b)).collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::{ColumnSpec, Role};

    /// Small random tables: the search's answer has the least loss of every node that meets the
    /// requirements, found by evaluating them all.
    #[test]
    fn the_search_finds_the_least_loss_node_checked_by_brute_force() {
        for seed in 0..40u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let rows = rng.random_range(10..120);
            let people: Vec<String> = (0..rows).map(|i| format!("p{}", i / rng.random_range(1..3))).collect();
            let age: Vec<i64> = (0..rows).map(|_| rng.random_range(0..100)).collect();
            let zip: Vec<String> = (0..rows).map(|_| format!("{:04}", rng.random_range(0..40) * 37)).collect();
            let sick: Vec<String> = (0..rows).map(|_| ["a", "b", "c"][rng.random_range(0..3)].to_owned()).collect();
            let batch = RecordBatch::try_from_iter([
                ("id", Arc::new(StringArray::from(people)) as ArrayRef),
                ("age", Arc::new(Int64Array::from(age))),
                ("zip", Arc::new(StringArray::from(zip))),
                ("sick", Arc::new(StringArray::from(sick))),
            ])
            .unwrap();
            let qi = |n: &str| ColumnSpec { name: n.into(), role: Role::QuasiIdentifier { ladder: None, floor: None } };
            let mut columns =
                vec![qi("age"), qi("zip"), ColumnSpec { name: "sick".into(), role: Role::Sensitive { bounds: None } }];
            if rng.random_bool(0.5) {
                columns.push(ColumnSpec { name: "id".into(), role: Role::Pseudonym });
            }
            let spec = Spec {
                columns,
                unit: Some("id".into()),
                k: rng.random_range(2..5),
                l: rng.random_range(1..3),
                max_suppression: [0.0, 0.05, 0.2][rng.random_range(0..3)],
                max_rows_per_person: None,
                key: [0; 32],
            };
            let table = Table::encode(&[batch], &spec).unwrap();
            let heights: Vec<usize> = table.qis.iter().map(|q| q.ladder.len()).collect();
            let mut best: Option<f64> = None;
            for a in 0..heights[0] {
                for b in 0..heights[1] {
                    let e = evaluate(&table, &spec, &[a, b]);
                    if e.meets(allowed(&table, &spec)) {
                        best = Some(best.map_or(e.loss, |l: f64| l.min(e.loss)));
                    }
                }
            }
            match (search(&table, &spec, &mut |_| {}), best) {
                (Ok(found), Some(loss)) => {
                    assert!((found.eval.loss - loss).abs() < 1e-12, "seed {seed}: {} vs {loss}", found.eval.loss)
                }
                (Err(_), None) => {}
                (got, want) => panic!("seed {seed}: search {:?}, brute force {want:?}", got.map(|f| f.eval.loss).ok()),
            }
        }
    }
}
