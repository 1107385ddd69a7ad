//! A register with several rows a person, in aggregate mode, measured where the answer is
//! made: a visits register where everyone of a district has visits of every code in every
//! month, and a planted person whose visits all have one code.
//!
//! Leak (a red team, 2026-12-05): low-effect detection counted the people a key value, a
//! condition or a range's cell adds or removes whole. Over several rows a person that is
//! nobody: everyone keeps rows of every value. So `GROUP BY district, code` let one group per
//! district claim every row of the district, and the group claiming was the one with a person
//! more, the planted person's code: 27 of 27 for a flag and 35 of 35 for a code of three, in
//! one query. The same counting answered `WHERE code = 1` with every visit, and a month's range
//! with the visits of the months around it: wrong answers as well as a tell. An effect now
//! counts every person whose rows it changes.

#![allow(clippy::unwrap_used)] // a failed fixture should fail the test loudly

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Date32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use veil_common::Tag;
use veil_guard::Contribution;
use veil_query::{QueryEngine, SessionDataset, parse};

const DISTRICTS: usize = 60;
const PEOPLE: usize = 30;
const CODES: i64 = 3;
/// Visits a person has of each code, each in another month (January to June, in turn).
const VISITS: usize = 2;

/// The planted person's code in district `d`.
fn target_code(d: usize) -> i64 {
    (d % 3) as i64
}

/// Days since 1970 of the 15th of `month` (1 to 6) of 2024.
fn mid_month(month: usize) -> i32 {
    const FIRSTS: [i32; 6] = [19723, 19754, 19783, 19814, 19844, 19875];
    FIRSTS[month - 1] + 14
}

/// `PEOPLE` people a district, each with `VISITS` visits of every code, their months in turn;
/// with `target`, one more person a district with `VISITS` visits of the district's
/// [`target_code`] only.
fn visits(dir: &Path, file: &str, target: bool) -> SessionDataset {
    let (mut ids, mut districts, mut codes, mut days) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in 0..DISTRICTS {
        for p in 0..PEOPLE + usize::from(target) {
            let planted = p == PEOPLE;
            let mut n = 0;
            for code in 0..CODES {
                if planted && code != target_code(d) {
                    continue;
                }
                for _ in 0..VISITS {
                    ids.push(if planted { format!("T{d:02}") } else { format!("P{d:02}{p:02}") });
                    districts.push(format!("R{d:02}"));
                    codes.push(code);
                    days.push(mid_month(1 + (p + n) % 6));
                    n += 1;
                }
            }
        }
    }
    written(dir, file, (ids, districts), codes, days, false)
}

/// What every visit paid (the column `paid`, declared within [0, 100]).
const PAID: i64 = 50;

/// The rows given, column by column, as the dataset `civil.visits` in `file`, every visit
/// [`PAID`] (declared one row a person when `one_row`).
fn written(
    dir: &Path,
    file: &str,
    rows: (Vec<String>, Vec<String>),
    codes: Vec<i64>,
    days: Vec<i32>,
    one_row: bool,
) -> SessionDataset {
    // At most 80 rows a person (above every fixture's heaviest), so the noise's floor (80 over
    // e³, about 4) stays below what the tests measure.
    written_with(dir, file, rows, codes, days, one_row, Contribution { max_groups: 4, max_rows: 20 })
}

/// [`written`], each person contributing at most as `contribution` says.
fn written_with(
    dir: &Path,
    file: &str,
    rows: (Vec<String>, Vec<String>),
    codes: Vec<i64>,
    days: Vec<i32>,
    one_row: bool,
    contribution: Contribution,
) -> SessionDataset {
    let paid = vec![Some(PAID); codes.len()];
    written_paying(dir, file, rows, (codes, days, paid), one_row, contribution)
}

/// [`written_with`], each row paying what `paid` says (NULL: nothing recorded), declared
/// between 0 and 100.
fn written_paying(
    dir: &Path,
    file: &str,
    rows: (Vec<String>, Vec<String>),
    values: (Vec<i64>, Vec<i32>, Vec<Option<i64>>),
    one_row: bool,
    contribution: Contribution,
) -> SessionDataset {
    written_paying_within(dir, file, rows, values, one_row, contribution, (0.0, 100.0))
}

/// [`written_paying`], the payments declared between `bounds`.
fn written_paying_within(
    dir: &Path,
    file: &str,
    (ids, districts): (Vec<String>, Vec<String>),
    (codes, days, paid): (Vec<i64>, Vec<i32>, Vec<Option<i64>>),
    one_row: bool,
    contribution: Contribution,
    bounds: (f64, f64),
) -> SessionDataset {
    let schema = Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Utf8, false),
        Field::new("district", DataType::Utf8, false),
        Field::new("code", DataType::Int64, false),
        Field::new("day", DataType::Date32, false),
        Field::new("paid", DataType::Int64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(StringArray::from(districts)),
        Arc::new(Int64Array::from(codes)),
        Arc::new(Date32Array::from(days)),
        Arc::new(Int64Array::from(paid)),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    let columns = HashMap::from([
        ("person_id".to_owned(), common::identifier()),
        ("district".to_owned(), common::column(Tag::QuasiIdentifier, None)),
        ("code".to_owned(), common::column(Tag::Sensitive, None)),
        ("day".to_owned(), common::column(Tag::Attribute, None)),
        ("paid".to_owned(), common::column(Tag::Sensitive, Some(bounds))),
    ]);
    common::about_people((dir, file), "civil.visits", &batch, columns, contribution, one_row)
}

/// Per released group, its text keys (the district) and the numbers that follow, in the
/// SELECT list's order, from `sql` over `dataset`.
async fn answers(engine: &QueryEngine, dataset: &SessionDataset, sql: &str) -> Vec<(String, Vec<f64>)> {
    answers_over(engine, std::slice::from_ref(dataset), sql).await
}

/// [`answers`] over several datasets.
async fn answers_over(engine: &QueryEngine, datasets: &[SessionDataset], sql: &str) -> Vec<(String, Vec<f64>)> {
    common::released(engine, common::aggregate(datasets.to_vec(), 5, [11; 32]), sql).await
}

/// Every district's answers to `ask(condition)` and to `ask("")` (the question with the
/// condition and without it), in `request`'s terms.
async fn with_and_without(
    engine: &QueryEngine,
    request: impl Fn() -> veil_query::QueryRequest,
    ask: impl Fn(&str) -> String,
    condition: &str,
) -> (Vec<(String, Vec<f64>)>, Vec<(String, Vec<f64>)>) {
    let with = common::released(engine, request(), &ask(condition)).await;
    let without = common::released(engine, request(), &ask("")).await;
    assert_eq!((with.len(), without.len()), (DISTRICTS, DISTRICTS));
    (with, without)
}

/// That how far apart the numbers at `at` of the two answers are, per district, tells the coins
/// ([`target_here`]) right in at most three districts of four, by the best cut knowing them.
fn differences_tell_nothing(with: &[(String, Vec<f64>)], without: &[(String, Vec<f64>)], at: usize, what: &str) {
    let apart: Vec<f64> = with.iter().zip(without).map(|((_, a), (_, b))| (a[at] - b[at]).abs()).collect();
    let best = told_by_cut(&apart);
    assert!(best * 100 <= DISTRICTS * 75, "{what}: {best} of {DISTRICTS} told by the difference: {apart:?}");
}

/// [`with_and_without`] over the one dataset `build` writes.
async fn asked_with_and_without(
    build: impl FnOnce(&Path) -> SessionDataset,
    ask: impl Fn(&str) -> String,
    condition: &str,
) -> (Vec<(String, Vec<f64>)>, Vec<(String, Vec<f64>)>) {
    let (_dir, dataset, engine) = one_dataset(build);
    let request = || common::aggregate(vec![dataset.clone()], 5, [11; 32]);
    with_and_without(&engine, request, ask, condition).await
}

/// Per district, twenty people of two visits, two of sixty and, with `target`, one of forty,
/// all of code 0 (the red team's layout: two people far above the rest and the target next).
fn heavy(dir: &Path, file: &str, target: bool) -> SessionDataset {
    layered(dir, file, 20, &[60, 60], target.then_some(40))
}

/// Per district, twelve people of two visits, six heavy people in a steep staircase (70, 70,
/// 62, 42, 28 and 26 visits, each more than twice the average of the four after it) and, with
/// `target`, one of twelve (a red team's layout against a most of six outliers: the target
/// came seventh, in the top group, and raised the level all six were flattened to).
fn staircase(dir: &Path, file: &str, target: bool) -> SessionDataset {
    layered(dir, file, 12, &[70, 70, 62, 42, 28, 26], target.then_some(12))
}

/// Per district, sixteen people of one row each (code 1000 + their number, day 15 February),
/// and the planted person, of code 20000 (nobody else's), whose day is 15 January in every
/// other district (the secret) and 15 February in the rest; declared one row a person or not.
fn two_isolating_conditions(dir: &Path, file: &str, one_row: bool) -> SessionDataset {
    let (mut ids, mut districts, mut codes, mut days) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in 0..DISTRICTS {
        for p in 0..=16 {
            let planted = p == 16;
            ids.push(if planted { format!("T{d:02}") } else { format!("P{d:02}{p:02}") });
            districts.push(format!("R{d:02}"));
            codes.push(if planted { 20_000 } else { 1_000 + p as i64 });
            days.push(if planted && d % 2 == 0 { mid_month(1) } else { mid_month(2) });
        }
    }
    written(dir, file, (ids, districts), codes, days, one_row)
}

/// Per district, fifteen people of code 1 in January, six of code 2 in February and, where a
/// fixed coin says so, the target of code 2 in January (failing the code alone); one row a
/// person or not.
fn failing_one_condition(dir: &Path, file: &str, one_row: bool) -> SessionDataset {
    let (mut ids, mut districts, mut codes, mut days) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in 0..DISTRICTS {
        let mut person = |id: String, code: i64, month: usize| {
            ids.push(id);
            districts.push(format!("R{d:02}"));
            codes.push(code);
            days.push(mid_month(month));
        };
        for p in 0..15 {
            person(format!("P{d:02}{p:02}"), 1, 1);
        }
        for p in 15..21 {
            person(format!("P{d:02}{p:02}"), 2, 2);
        }
        if target_here(d) {
            person(format!("T{d:02}"), 2, 1);
        }
    }
    written(dir, file, (ids, districts), codes, days, one_row)
}

/// A fixed coin per district.
fn target_here(d: usize) -> bool {
    d.wrapping_mul(2_654_435_761) % 1_000 < 500
}

/// Two conditions that each remove almost nobody (the code the target alone, the month nobody
/// beside the code) but many together: the group is answered without one of them, the first in
/// an order. That order was the query's, so `WHERE code = 1 AND <January>` measured the target
/// and the same conditions the other way round did not, under one label: the two answers were
/// bit-identical exactly where the target was absent (a red team: 56 of 60 districts in two
/// queries). Now the order is the labels'.
#[tokio::test]
async fn the_order_of_the_conditions_does_not_choose_whom_a_group_measures() {
    for one_row in [true, false] {
        let (_dir, dataset, engine) = one_dataset(|dir| failing_one_condition(dir, "people", one_row));
        let ask = |first: &str, second: &str| {
            format!(
                "SELECT district, count(*) AS n FROM civil.visits WHERE {first} AND {second} GROUP BY district ORDER BY district"
            )
        };
        let (code, month) = ("code = 1", "day >= DATE '2024-01-01' AND day < DATE '2024-02-01'");
        let (a, b) =
            (answers(&engine, &dataset, &ask(code, month)).await, answers(&engine, &dataset, &ask(month, code)).await);
        assert_eq!(a.len(), b.len(), "one row a person: {one_row}");
        // Per district, whether the two spellings answered alike, against the coin.
        let alike = |here: bool| {
            a.iter()
                .zip(&b)
                .filter(|((d, _), _)| target_here(d[1..].parse().unwrap()) == here)
                .filter(|((_, x), (_, y))| x == y)
                .count()
        };
        let here = (0..DISTRICTS).filter(|d| target_here(*d)).count();
        // Before: alike in every district without the target and in about one in five with.
        assert_eq!((alike(true), alike(false)), (here, DISTRICTS - here), "one row a person: {one_row}");
    }
}

/// Per district twenty people of one visit and, where a fixed coin says so, the target of twenty,
/// all of code 0, at most twenty rows a person: the target, first of their group, moves the
/// noise's scale from its floor (20 over e³, so 1) to 20 over e².
fn one_heavy_among_light(dir: &Path, file: &str) -> SessionDataset {
    let (mut ids, mut districts, mut codes, mut days) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in 0..DISTRICTS {
        let people =
            (0..20).map(|p| (format!("P{d:02}{p:02}"), 1)).chain(target_here(d).then(|| (format!("T{d:02}"), 20)));
        for (id, visits) in people {
            for v in 0..visits {
                ids.push(id.clone());
                districts.push(format!("R{d:02}"));
                codes.push(0);
                days.push(mid_month(1 + v % 6));
            }
        }
    }
    let contribution = Contribution { max_groups: 1, max_rows: 20 };
    written_with(dir, file, (ids, districts), codes, days, false, contribution)
}

/// Leak (a red team, 2026-12-05): the noise's scale follows the contributions, and ranges that
/// remove nobody (`code >= 0 AND code < 1`, `< 2`, `< 5`, …) each drew the label layer afresh at
/// that scale over the same people; the spread of sixteen answers measured it, and the target
/// who moved it by a factor near e was told 60 of 60. Only the people layer, drawn once for one
/// set of people, has the group's scale now; the label layer's is the floor, from the query
/// and the declarations alone.
#[tokio::test]
async fn the_spread_of_many_spellings_does_not_measure_the_noise_scale() {
    let (_dir, dataset, engine) = one_dataset(|dir| one_heavy_among_light(dir, "visits"));
    let mut answers_by_district: Vec<Vec<f64>> = vec![Vec::new(); DISTRICTS];
    for width in [1i64, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000] {
        let sql = format!(
            "SELECT district, count(*) AS n FROM civil.visits WHERE code >= 0 AND code < {width} GROUP BY district ORDER BY district"
        );
        for (district, n) in answers(&engine, &dataset, &sql).await {
            answers_by_district[district[1..].parse::<usize>().unwrap()].push(n[0]);
        }
    }
    let (best, spread) = told_by_spread(&answers_by_district);
    // Before: 60 of 60 (the label layer's scale 1 without the target, about 2.7 with them).
    assert!(best * 100 <= DISTRICTS * 75, "{best} of {DISTRICTS} told by the spread: {spread:?}");
}

/// Per district, the spread (standard deviation) of its answers, and how many districts the
/// best cut of the spreads tells right, the cut chosen knowing the coins ([`target_here`]): by
/// chance alone about 60% of them.
fn told_by_spread(answers_by_district: &[Vec<f64>]) -> (usize, Vec<f64>) {
    let spread: Vec<f64> = answers_by_district
        .iter()
        .map(|a| {
            let mean = a.iter().sum::<f64>() / a.len() as f64;
            (a.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (a.len() as f64 - 1.0)).sqrt()
        })
        .collect();
    (told_by_cut(&spread), spread)
}

/// How many districts the best cut of `scores` (one a district) tells right, the cut and its
/// side chosen knowing the coins ([`target_here`]).
fn told_by_cut(scores: &[f64]) -> usize {
    let mut best = 0;
    for cut in scores {
        let right = (0..DISTRICTS).filter(|d| (scores[*d] > *cut) == target_here(*d)).count();
        best = best.max(right).max(DISTRICTS - right);
    }
    best
}

/// Per district twenty people of one visit in March and, where the coin says so, the target of
/// twenty visits in April, at most twenty rows a person.
fn light_in_march_heavy_in_april(dir: &Path, file: &str) -> SessionDataset {
    let (mut ids, mut districts, mut codes, mut days) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in 0..DISTRICTS {
        let people = (0..20)
            .map(|p| (format!("P{d:02}{p:02}"), 1, 3))
            .chain(target_here(d).then(|| (format!("T{d:02}"), 20, 4)));
        for (id, visits, month) in people {
            for _ in 0..visits {
                ids.push(id.clone());
                districts.push(format!("R{d:02}"));
                codes.push(0);
                days.push(mid_month(month));
            }
        }
    }
    let contribution = Contribution { max_groups: 1, max_rows: 20 };
    written_with(dir, file, (ids, districts), codes, days, false, contribution)
}

/// Leak (found reading the shape, 2026-12-05): a condition on a month *of the year*
/// (`date_part('month', day) = 3`) is no interval of its column, so low-effect detection, which
/// looked at intervals and IN lists only, never left it out: where it removed the target alone
/// (their twenty visits in April, everybody else's one in March), the group with it and without
/// it were two sets of people, twenty visits apart. Such a condition is now one more restricted
/// column, answered without where it changes almost nobody's rows.
#[tokio::test]
async fn a_month_of_the_year_that_removes_only_the_target_is_left_out() {
    let ask = |filter: &str| {
        format!("SELECT district, count(*) AS n FROM civil.visits {filter} GROUP BY district ORDER BY district")
    };
    let (with, without) = asked_with_and_without(
        |dir| light_in_march_heavy_in_april(dir, "visits"),
        ask,
        "WHERE date_part('month', day) = 3",
    )
    .await;
    differences_tell_nothing(&with, &without, 0, "count");
}

/// Per district twenty people of twenty visits of code 0, eight of `zeros` of code 0 and one of
/// code 1, and the target of four visits of code 0 and `ones` more, of code 1 where the coin
/// says so ([`target_here`]) and of code 0 elsewhere; at most twenty rows a person (a red
/// team's layouts).
fn some_rows_of_everyone_and_more_of_the_target(dir: &Path, file: &str, zeros: i64, ones: i64) -> SessionDataset {
    let (mut ids, mut districts, mut codes, mut days) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in 0..DISTRICTS {
        let secret = i64::from(target_here(d));
        let people = (0..20)
            .map(|p| (format!("P{d:02}{p:02}"), 20, 0))
            .chain((20..28).map(|p| (format!("P{d:02}{p:02}"), zeros, 1)))
            .chain([(format!("T{d:02}"), 4, ones * secret), (format!("T{d:02}"), ones * (1 - secret), 0)]);
        for (id, zeros, ones) in people {
            for v in 0..zeros + ones {
                ids.push(id.clone());
                districts.push(format!("R{d:02}"));
                codes.push(i64::from(v >= zeros));
                days.push(mid_month(1 + (v % 6) as usize));
            }
        }
    }
    let contribution = Contribution { max_groups: 1, max_rows: 20 };
    written_with(dir, file, (ids, districts), codes, days, false, contribution)
}

/// Leak (a red team, 2026-12-06): over several rows a person, a condition that removes some rows
/// of several people but nobody whole (`code = 0`: the one visit of code 1 of eight people,
/// and the target's sixteen where they have them) kept the group's people, so the people layer,
/// at the group's scale, was the same draw with the condition and without it, and the
/// difference of the two answers carried only the layers at the floor's: the rows removed, to
/// about two. Membership 50 of 50 districts from the counts and 49 of 50 from the sums, in two
/// queries. Over several rows a person, the people layer is now seeded by what each person
/// contributes too (their rows' count, and the values they add to a sum).
#[tokio::test]
async fn a_condition_that_removes_rows_but_nobody_whole_draws_the_people_layer_afresh() {
    let ask = |filter: &str| {
        format!(
            "SELECT district, count(*) AS n, sum(paid) AS s FROM civil.visits {filter} GROUP BY district ORDER BY district"
        )
    };
    let (with, without) = asked_with_and_without(
        |dir| some_rows_of_everyone_and_more_of_the_target(dir, "visits", 19, 16),
        ask,
        "WHERE code = 0",
    )
    .await;
    for (i, what) in ["count", "sum"].into_iter().enumerate() {
        // Per district, how many rows (or how much paid) the condition removed, as the two
        // answers say: 8 or 24 rows before the fix, to about two.
        differences_tell_nothing(&with, &without, i, what);
    }
}

/// The same pair over a join with a code table about nobody that lists code 1 four times (`w`
/// 0 to 3) and code 0 once: `WHERE l.w = 0` removes three of every joined row of code 1, of
/// nine people or eight and nobody whole, 24 rows or 36 (a red team's calendar with a date
/// listed four times: 50 of 50 districts in two queries).
#[tokio::test]
async fn a_code_listed_several_times_does_not_read_the_rows_it_repeats() {
    // Sixteen visits of code 0 for the eight, four of code 1 for the target where they have
    // them: joined, twenty rows each, as many as one person adds.
    let (dir, dataset, engine) = one_dataset(|dir| some_rows_of_everyone_and_more_of_the_target(dir, "visits", 16, 4));
    let k: ArrayRef = Arc::new(Int64Array::from(vec![0, 1, 1, 1, 1]));
    let w: ArrayRef = Arc::new(Int64Array::from(vec![0, 0, 1, 2, 3]));
    let batch = RecordBatch::try_from_iter([("k", k), ("w", w)]).unwrap();
    let datasets = [dataset, common::about_nobody((dir.path(), "repeated"), "civil.repeated", &batch, &[])];
    let ask = |filter: &str| {
        format!(
            "SELECT v.district, count(*) AS n FROM civil.visits v JOIN civil.repeated l ON v.code = l.k {filter} \
             GROUP BY v.district ORDER BY v.district"
        )
    };
    let request = || common::aggregate(datasets.to_vec(), 5, [11; 32]);
    let (with, without) = with_and_without(&engine, request, ask, "WHERE l.w = 0").await;
    differences_tell_nothing(&with, &without, 0, "count");
}

/// As the dataset `civil.visits` in `file` ([`written_paying`]), the rows of `people(d)` of
/// every district `d` (an id, its rows of code 0, its rows of code 1), each paying what
/// `paid(id, its number among the person's rows, its code)` says; one row a person declared
/// where `one_row`, contributing as `contribution` says.
fn written_payments(
    (dir, file): (&Path, &str),
    people: impl Fn(usize) -> Vec<(String, usize, usize)>,
    paid: impl Fn(&str, usize, i64) -> Option<i64>,
    one_row: bool,
    contribution: Contribution,
) -> SessionDataset {
    let (mut ids, mut districts, mut codes, mut days, mut paying) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in 0..DISTRICTS {
        for (id, zeros, ones) in people(d) {
            for v in 0..zeros + ones {
                let code = i64::from(v >= zeros);
                paying.push(paid(&id, v, code));
                ids.push(id.clone());
                districts.push(format!("R{d:02}"));
                codes.push(code);
                days.push(mid_month(1 + v % 6));
            }
        }
    }
    written_paying(dir, file, (ids, districts), (codes, days, paying), one_row, contribution)
}

/// Per district twenty people of four visits, the first paid and, for every other person, the
/// third and fourth not (NULL), and where the coin says so ([`target_here`]) the target, of
/// two visits neither paid; at most ten rows a person.
fn some_unpaid_and_the_target_never_paid(dir: &Path, file: &str) -> SessionDataset {
    let people = |d: usize| {
        let mut people: Vec<(String, usize, usize)> = (0..20).map(|p| (format!("P{d:02}{p:02}"), 4, 0)).collect();
        people.extend(target_here(d).then(|| (format!("T{d:02}"), 2, 0)));
        people
    };
    let paid = |id: &str, v: usize, _| {
        let unpaid = id.starts_with('T') || (v >= 2 && id.ends_with(['0', '2', '4', '6', '8']));
        (!unpaid).then_some(PAID)
    };
    written_payments((dir, file), people, paid, false, Contribution { max_groups: 1, max_rows: 10 })
}

/// Leak (a red team, 2026-12-06): a range holding every declared value of a column is labelled
/// as no condition, but it leaves out the rows where the column is NULL. Over several rows a
/// person, many people have some, so low-effect detection (counting people with a row left
/// out) kept the range, and every layer of a sum stayed as without it, unless someone lost
/// every row: a person whose values are all NULL. The two answers were bit-identical exactly
/// where no such person was there (100 of 100 coins in two queries, by `sum`, `avg` and, one
/// way, `count(DISTINCT …)`; also through a code table and a second register). Every people
/// layer over several rows a person is now seeded by each person's rows too, so rows left out
/// draw it afresh.
#[tokio::test]
async fn a_range_holding_every_value_does_not_tell_who_has_none() {
    let ask = |filter: &str| {
        format!(
            "SELECT district, sum(paid) AS s, avg(paid) AS a, count(DISTINCT person_id) AS p FROM civil.visits {filter} \
             GROUP BY district ORDER BY district"
        )
    };
    let (with, without) = asked_with_and_without(
        |dir| some_unpaid_and_the_target_never_paid(dir, "visits"),
        ask,
        "WHERE paid >= 0 AND paid < 1000",
    )
    .await;
    for (i, what) in ["sum", "avg", "people"].into_iter().enumerate() {
        // Per district, whether the two answers differ, against the coin.
        let right = with
            .iter()
            .zip(&without)
            .enumerate()
            .filter(|(d, ((_, a), (_, b)))| (a[i] != b[i]) == target_here(*d))
            .count();
        assert!(right * 100 <= DISTRICTS * 75, "{what}: {right} of {DISTRICTS} told by equal answers");
    }
}

/// Per district twenty people of two paid visits of code 1 and two unpaid (NULL) of code 0, and
/// the target, whose first visit of code 0 is paid where the coin says so; at most four rows
/// a person.
fn unpaid_rows_of_everyone_but_the_target(dir: &Path, file: &str) -> SessionDataset {
    let people =
        |d: usize| (0..20).map(|p| (format!("P{d:02}{p:02}"), 2, 2)).chain([(format!("T{d:02}"), 2, 2)]).collect();
    let paid = |id: &str, v: usize, code: i64| {
        let target = id.strip_prefix('T').and_then(|d| d.parse::<usize>().ok());
        (code == 1 || (v == 0 && target.is_some_and(target_here))).then_some(PAID)
    };
    written_payments((dir, file), people, paid, false, Contribution { max_groups: 1, max_rows: 4 })
}

/// Leak (a red team, 2026-12-06): `WHERE code = 1` leaves out rows of everybody, so it is kept,
/// but where everyone else's rows it leaves out are unpaid, only the target's paid row changes
/// what a sum's people contribute: the people layer, seeded by that, was the same draw with
/// the condition and without it where the target had no such row (a difference at the floor's
/// scale) and another where they had (the group's): 45–48 of 50 in two queries, even where the
/// target's payment was beyond what one person may add. Seeded by each person's rows too, the
/// layer is drawn afresh either way.
#[tokio::test]
async fn unpaid_rows_left_out_do_not_tell_a_paid_one() {
    let ask = |filter: &str| {
        format!("SELECT district, sum(paid) AS s FROM civil.visits {filter} GROUP BY district ORDER BY district")
    };
    let (with, without) =
        asked_with_and_without(|dir| unpaid_rows_of_everyone_but_the_target(dir, "visits"), ask, "WHERE code = 1")
            .await;
    differences_tell_nothing(&with, &without, 0, "sum");
}

/// Per district twenty people of one row each, paying [`PAID`], and the target, whose payment
/// is not recorded (NULL) where the coin says so and is 37 elsewhere; one row a person.
fn the_target_unpaid_or_not(dir: &Path, file: &str) -> SessionDataset {
    let people =
        |d: usize| (0..20).map(|p| (format!("P{d:02}{p:02}"), 1, 0)).chain([(format!("T{d:02}"), 1, 0)]).collect();
    let paid = |id: &str, _, _| match id.strip_prefix('T').and_then(|d| d.parse::<usize>().ok()) {
        Some(d) if target_here(d) => None,
        Some(_) => Some(37),
        None => Some(PAID),
    };
    written_payments((dir, file), people, paid, true, Contribution::default())
}

/// `COUNT(column)` is the count of values an average of the column divides by, drawn as that
/// one is: it says what `sum / avg` says, and nothing more. Drawn with `COUNT(*)`'s noise, its
/// difference from the rows was the group's NULLs exactly (a red team: whether each of 100
/// planted people had a NULL phone, one query each, never wrong), and it was refused since;
/// drawn apart, the difference is one person against the noise of two quantities.
#[tokio::test]
async fn counting_a_column_says_what_its_average_says() {
    let (_dir, dataset, engine) = one_dataset(|dir| the_target_unpaid_or_not(dir, "people"));
    let sql = "SELECT district, count(*) AS n, count(paid) AS m, sum(paid) AS s, avg(paid) AS a FROM civil.visits \
               GROUP BY district ORDER BY district";
    let rows = answers(&engine, &dataset, sql).await;
    assert_eq!(rows.len(), DISTRICTS);
    for (district, v) in &rows {
        // The sum's values are integers, released rounded, and the average divides that.
        assert!((v[2] / v[3] - v[1]).abs() < 1e-6, "{district}: count {} against sum / avg {}", v[1], v[2] / v[3]);
    }
    // The rows less the values: the target's NULL is one person against that noise.
    let nulls: Vec<f64> = rows.iter().map(|(_, v)| v[0] - v[1]).collect();
    let best = told_by_cut(&nulls);
    assert!(best * 100 <= DISTRICTS * 75, "{best} of {DISTRICTS} told by the rows less the values: {nulls:?}");
}

/// A code table about nobody, `civil.codes`: the codes 0 to 9 (`k`), each in group 1 (`g`), of
/// weight 2 (`w`) and in chapter 3 (`h`).
fn codes(dir: &Path) -> SessionDataset {
    let every = |v: i64| Arc::new(Int64Array::from(vec![v; 10])) as ArrayRef;
    let codes = Arc::new(Int64Array::from((0..10).collect::<Vec<i64>>())) as ArrayRef;
    let batch = RecordBatch::try_from_iter([("k", codes), ("g", every(1)), ("w", every(2)), ("h", every(3))]).unwrap();
    common::about_nobody((dir, "codes"), "civil.codes", &batch, &[])
}

/// Leak (a red team, 2026-12-05, late): over a join, a quantity was named by the columns its
/// conditions read too, so conditions that remove nobody, asked in every subset of three, named
/// eight quantities over one group's people: eight draws of the people layer at the group's
/// scale, whose spread told the target who moved that scale (53 of 60 districts in eight
/// queries). A group answered without conditions that remove almost nobody is now named as
/// the query without them names it: one draw.
#[tokio::test]
async fn conditions_that_remove_nobody_beside_a_join_draw_the_people_layer_once() {
    let conditions = ["v.code >= 0 AND v.code < 10", "l.g = 1", "l.w >= 0 AND l.w < 10"];
    let (best, spread) = told_by_spread_over_subsets(&conditions, |chosen| {
        let filter = if chosen.is_empty() { String::new() } else { format!("WHERE {}", chosen.join(" AND ")) };
        format!(
            "SELECT v.district, count(*) AS n FROM civil.visits v JOIN civil.codes l ON v.code = l.k {filter} \
             GROUP BY v.district ORDER BY v.district"
        )
    })
    .await;
    assert!(best * 100 <= DISTRICTS * 75, "{best} of {DISTRICTS} told by the spread: {spread:?}");
}

/// Leak (found reading the names, 2026-12-05): over a join, a quantity was named by the columns
/// its keys read too, so a code table's columns that hold one value for a whole group (a
/// district's region, province, …), grouped by in every subset of three, named eight quantities
/// over one group's people: eight draws of the people layer at the group's scale. A column is
/// now in the name only where another dataset of the query has a column of its name (which of
/// them a label reads, the name must say).
#[tokio::test]
async fn keys_that_split_nobody_beside_a_join_draw_the_people_layer_once() {
    let (best, spread) = told_by_spread_over_subsets(&["l.g", "l.w", "l.h"], |chosen| {
        let keys: String = chosen.iter().map(|k| format!(", {k}")).collect();
        format!(
            "SELECT v.district, count(*) AS n{keys} FROM civil.visits v JOIN civil.codes l ON v.code = l.k \
             GROUP BY v.district{keys} ORDER BY v.district"
        )
    })
    .await;
    assert!(best * 100 <= DISTRICTS * 75, "{best} of {DISTRICTS} told by the spread: {spread:?}");
}

/// [`told_by_spread`] of the answers of `sql` for every subset of `parts`, over the visits of
/// [`one_heavy_among_light`] joined with [`codes`].
async fn told_by_spread_over_subsets(parts: &[&str], sql: impl Fn(&[&str]) -> String) -> (usize, Vec<f64>) {
    let queries: Vec<String> = (0..1usize << parts.len())
        .map(|subset| {
            let chosen: Vec<&str> =
                parts.iter().enumerate().filter(|(i, _)| subset & (1 << i) != 0).map(|(_, c)| *c).collect();
            sql(&chosen)
        })
        .collect();
    told_by_spread_of(|dir| vec![codes(dir)], &queries).await
}

/// [`told_by_spread`] of the answers of `queries` over the visits of [`one_heavy_among_light`]
/// and the datasets `beside` writes, each district's count (the first number) once per query.
async fn told_by_spread_of(beside: impl Fn(&Path) -> Vec<SessionDataset>, queries: &[String]) -> (usize, Vec<f64>) {
    let (dir, dataset, engine) = one_dataset(|dir| one_heavy_among_light(dir, "visits"));
    let mut datasets = vec![dataset];
    datasets.extend(beside(dir.path()));
    let mut answers_by_district: Vec<Vec<f64>> = vec![Vec::new(); DISTRICTS];
    for sql in queries {
        for (district, n) in answers_over(&engine, &datasets, sql).await {
            answers_by_district[district[1..].parse::<usize>().unwrap()].push(n[0]);
        }
    }
    assert!(answers_by_district.iter().all(|a| a.len() == queries.len()), "a district withheld");
    told_by_spread(&answers_by_district)
}

/// Leak (found measuring the last one, 2026-12-05): a join with a code table was part of a
/// quantity's name, so the same rows asked alone and joined with each of three code tables
/// (complete, keyed on the visit's code) were four quantities: four draws of the people layer
/// at the group's scale, whose spread told a heavy target in 50 of 60 districts. A join with a
/// table about nobody whose columns no aggregate adds up is now named by the people's column it
/// goes through alone (two draws here: alone and joined), the whole pair being a label of the
/// bucket, drawn at the floor's scale.
#[tokio::test]
async fn code_tables_joined_one_at_a_time_draw_the_people_layer_once() {
    let table = |dir: &Path, name: &str| {
        let keys = Arc::new(Int64Array::from((0..10).collect::<Vec<i64>>())) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("k", keys)]).unwrap();
        common::about_nobody((dir, name), &format!("civil.{name}"), &batch, &[])
    };
    let sql = |join: &str| {
        format!("SELECT v.district, count(*) AS n FROM civil.visits v {join} GROUP BY v.district ORDER BY v.district")
    };
    let mut queries = vec![sql("")];
    queries.extend(["c1", "c2", "c3"].map(|t| sql(&format!("JOIN civil.{t} {t} ON v.code = {t}.k"))));
    let (best, spread) = told_by_spread_of(|dir| ["c1", "c2", "c3"].map(|t| table(dir, t)).to_vec(), &queries).await;
    assert!(best * 100 <= DISTRICTS * 75, "{best} of {DISTRICTS} told by the spread: {spread:?}");
}

/// Two conditions that each single the target out: each removes nobody beside the other, so
/// both were low-effect and the group was answered without both, the target's whole district,
/// released exactly where the target had the secret (a red team: 46 of 50 in about ten
/// queries a district, never wrongly). Left out together they remove the district: the group
/// is answered with them, one person, and withheld.
#[tokio::test]
async fn two_conditions_that_each_single_out_the_target_are_not_both_left_out() {
    for one_row in [true, false] {
        let (_dir, dataset, engine) = one_dataset(|dir| two_isolating_conditions(dir, "people", one_row));
        let sql = "SELECT district, count(*) AS n FROM civil.visits \
                   WHERE code = 20000 AND day = DATE '2024-01-15' GROUP BY district";
        let rows = answers(&engine, &dataset, sql).await;
        assert!(rows.is_empty(), "one row a person: {one_row}; released {rows:?}");
        // The same with a range on the day (cells around it) in place of the equality.
        let sql = "SELECT district, count(*) AS n FROM civil.visits \
                   WHERE code = 20000 AND day >= DATE '2024-01-01' AND day < DATE '2024-02-01' GROUP BY district";
        let rows = answers(&engine, &dataset, sql).await;
        assert!(rows.is_empty(), "one row a person: {one_row}; released {rows:?}");
    }
}

/// Per district, twelve people of two visits, eight of four, a steep staircase of six people
/// (each 2.3 times the average of the four after them: 10 to about 1,200 visits) and, with
/// `target`, one of eight: first after the staircase, not an outlier (8 is not more than
/// twice 4). A red team's layout against outliers reaching down to 24 (over incomes): every
/// outlier was flattened to the average the target joined, so the target counted many times
/// over (60 of 60 districts in one query).
fn staircase_then_gentle(dir: &Path, file: &str, target: bool) -> SessionDataset {
    let mut steps: Vec<usize> = Vec::new();
    let mut below = [4.0f64; 4];
    for _ in 0..6 {
        let step = 2.3 * below.iter().sum::<f64>() / 4.0 + 1.0;
        steps.insert(0, step as usize);
        below = [step, below[0], below[1], below[2]];
    }
    let mut heavy = steps;
    heavy.extend([4; 8]);
    layered(dir, file, 12, &heavy, target.then_some(8))
}

/// Per district, `light` people of two visits, one person of each of `heavy` visits, and the
/// target of `target` visits if any, all of code 0, their months in turn.
fn layered(dir: &Path, file: &str, light: usize, heavy: &[usize], target: Option<usize>) -> SessionDataset {
    let (mut ids, mut districts, mut codes, mut days) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in 0..DISTRICTS {
        let mut people: Vec<(String, usize)> = (0..light).map(|p| (format!("P{d:02}{p:02}"), 2)).collect();
        people.extend(heavy.iter().enumerate().map(|(h, n)| (format!("H{d:02}{h}"), *n)));
        people.extend(target.map(|n| (format!("T{d:02}"), n)));
        for (id, visits) in people {
            for v in 0..visits {
                ids.push(id.clone());
                districts.push(format!("R{d:02}"));
                codes.push(0);
                days.push(mid_month(1 + v % 6));
            }
        }
    }
    written(dir, file, (ids, districts), codes, days, false)
}

/// A temporary directory holding `build`'s dataset, and an engine over it.
fn one_dataset(build: impl FnOnce(&Path) -> SessionDataset) -> (tempfile::TempDir, SessionDataset, QueryEngine) {
    let dir = tempfile::tempdir().unwrap();
    let dataset = build(dir.path());
    let engine = QueryEngine::new(veil_query::Limits::standard(), dir.path()).unwrap();
    (dir, dataset, engine)
}

fn twins() -> (tempfile::TempDir, SessionDataset, SessionDataset, QueryEngine) {
    common::twins(visits)
}

/// Per district (by its number), the codes released.
fn released_codes(rows: &[(String, Vec<f64>)]) -> Vec<BTreeSet<i64>> {
    let mut codes = vec![BTreeSet::new(); DISTRICTS];
    for (district, values) in rows {
        let d: usize = district.trim_start_matches('R').parse().unwrap();
        codes[d].insert(values[0] as i64);
    }
    codes
}

/// The red team's query: a key over several rows a person. With the planted person, one group
/// a district took every row and it was theirs; now every code is released with its own visits,
/// and which codes are released says no more with the planted people than without.
#[tokio::test]
async fn a_key_over_several_rows_a_person_does_not_name_the_one_whose_rows_hold_one_value() {
    let (_dir, target, twin, engine) = twins();
    let sql = "SELECT district, code, count(*) AS n FROM civil.visits GROUP BY district, code";
    let (with, without) = (answers(&engine, &target, sql).await, answers(&engine, &twin, sql).await);
    // The tell: the districts whose released codes are the planted person's alone.
    let alone = |rows: &[(String, Vec<f64>)]| {
        released_codes(rows).iter().enumerate().filter(|(d, c)| c.len() == 1 && c.contains(&target_code(*d))).count()
    };
    let (told, by_chance) = (alone(&with), alone(&without));
    assert!(
        told <= by_chance + 3,
        "{told} districts released the planted person's code alone, {by_chance} without them"
    );
    // And the answer is right: every code of nearly every district, each with about its visits
    // (`VISITS` a person, the planted person's few more at most), not the district's: within
    // three standard deviations of the noise (about 8: the floor of 80 rows a person over e³
    // is about 4 a layer, four layers' variance), where the district's would be three times it.
    for rows in [&with, &without] {
        let all = released_codes(rows).iter().filter(|c| c.len() == CODES as usize).count();
        assert!(all * 10 >= DISTRICTS * 9, "{all} of {DISTRICTS} districts released every code");
        mostly_near(rows, 1, (PEOPLE * VISITS) as f64, 0.45);
    }
}

/// That nearly every district is released (nine in ten).
fn mostly_released(rows: &[(String, Vec<f64>)]) {
    assert!(rows.len() * 10 >= DISTRICTS * 9, "{} of {DISTRICTS} districts released", rows.len());
}

/// That the numbers at `at` of all but one row in twenty are within `off` (a share) of
/// `expected`.
fn mostly_near(rows: &[(String, Vec<f64>)], at: usize, expected: f64, off: f64) {
    let wrong = rows.iter().filter(|(_, v)| (v[at] - expected).abs() > expected * off).count();
    assert!(wrong * 20 <= rows.len(), "{wrong} of {} numbers more than {off} off {expected}", rows.len());
}

/// A condition on a column every person has rows of every value of removes rows of everybody:
/// the answer counts the rows it keeps, not the district's.
#[tokio::test]
async fn a_condition_that_removes_rows_of_everybody_is_answered_with_it() {
    let (_dir, _target, twin, engine) = twins();
    let sql = "SELECT district, count(*) AS n FROM civil.visits WHERE code = 1 GROUP BY district";
    let rows = answers(&engine, &twin, sql).await;
    mostly_released(&rows);
    // Within three standard deviations of the noise (about 8, as above); answered with every
    // visit, a group would be three times as many.
    mostly_near(&rows, 0, (PEOPLE * VISITS) as f64, 0.45);
}

/// A month's range over visits in every month: the cells around it hold rows of everybody, so
/// none of them widens it; the answer counts the month's visits.
#[tokio::test]
async fn a_range_whose_cells_hold_rows_of_everybody_is_not_widened() {
    let (_dir, _target, twin, engine) = twins();
    let sql = "SELECT district, count(*) AS n FROM civil.visits \
               WHERE day >= DATE '2024-02-01' AND day < DATE '2024-03-01' GROUP BY district";
    let rows = answers(&engine, &twin, sql).await;
    mostly_released(&rows);
    // Each person's visits are in their months in turn: a sixth of them in February.
    let expected = (PEOPLE * VISITS * CODES as usize) as f64 / 6.0;
    // Within three standard deviations of the noise (about 8: the floor of 80 rows a person
    // over e³ is about 4 a layer, four layers' variance); widened, a group would hold the
    // district's every visit, six times as many.
    mostly_near(&rows, 0, expected, 0.9);
    // Without keys, the cells are decided one range at a time (not by a group's claims).
    let sql = "SELECT 'all' AS district, count(*) AS n FROM civil.visits \
               WHERE day >= DATE '2024-02-01' AND day < DATE '2024-03-01'";
    let rows = answers(&engine, &twin, sql).await;
    let expected = expected * DISTRICTS as f64;
    assert!(
        matches!(rows.as_slice(), [(_, n)] if (n[0] - expected).abs() < expected * 0.05),
        "{rows:?}, not about {expected}"
    );
}

/// A person far above most, but ranked after two others further above: flattening took the
/// two largest down to the average of the next four, so the target ranked in that group,
/// counted in full and set the noise's scale (a red team: whether they exist, 50 of 50
/// districts in one query; their code 23 of 25). Now the outliers reach down while the
/// contributions fall steeply, and a threshold between the two answers' medians tells little.
#[tokio::test]
async fn a_heavy_person_after_two_heavier_ones_is_flattened_too() {
    let right = called_by_the_medians(heavy).await;
    // One person of a typical top contribution (2 visits) against noise of about 2.8: 75 of
    // 120 right (the medians 47 and 44); 117 of 120 before (106 and 44).
    assert!(right * 100 <= 2 * DISTRICTS * 78, "{right} of {} called right", 2 * DISTRICTS);
}

/// Per district, sixteen people of two visits, two planted people of 60 and one of 20, and with
/// `target` one more of 20: the planted 20 is an outlier with the target or without (more than
/// twice the next four's average), so the target heads the top group.
fn lone_heavy(dir: &Path, file: &str, target: bool) -> SessionDataset {
    layered(dir, file, 16, &[60, 60, 20], target.then_some(20))
}

/// A lone heavy person in the top group counted in full and a quarter of it again per outlier
/// (about 33 visits more), against noise scaled by the top group's average: about 6.5 a layer
/// with them and 2 without (a measurement on the engine, 2026-12-05: 114 of 120 districts in
/// one query). The noise's scale is now at least the third contribution and the first two over
/// e and e² (`Parts::scale` in the guard), about 22 here with the target or without.
#[tokio::test]
async fn a_lone_heavy_person_in_the_top_group_is_hidden_by_noise_of_their_size() {
    let right = called_by_the_medians(lone_heavy).await;
    assert!(right * 100 <= 2 * DISTRICTS * 78, "{right} of {} called right", 2 * DISTRICTS);
}

/// Six heavy people falling steeply, then the target: with at most six outliers the target
/// ranked first of the top group and raised the level all six were flattened to (a red team:
/// 44 of 44 districts in one query). The outliers reach down further now.
#[tokio::test]
async fn a_heavy_person_after_a_staircase_of_six_is_flattened_too() {
    let right = called_by_the_medians(staircase).await;
    assert!(right * 100 <= 2 * DISTRICTS * 78, "{right} of {} called right", 2 * DISTRICTS);
}

/// A steep staircase and then a gentle slope: outliers brought to the top group's average
/// move with whoever is first in it. At most three outliers, the target weighs as one
/// contribution and a quarter of it thrice at most.
#[tokio::test]
async fn a_steep_staircase_does_not_amplify_the_target_after_it() {
    let right = called_by_the_medians(staircase_then_gentle).await;
    assert!(right * 100 <= 2 * DISTRICTS * 78, "{right} of {} called right", 2 * DISTRICTS);
}

/// Over the twins `build` makes, `SELECT district, count(*) … GROUP BY district`: how many
/// of the districts a threshold between the two answers' medians calls right (the target's
/// and the twin's, 60 each), the target's side of it above or below.
async fn called_by_the_medians(build: impl Fn(&Path, &str, bool) -> SessionDataset) -> usize {
    called_by_the_medians_of(build, "SELECT district, count(*) AS n FROM civil.visits GROUP BY district").await
}

/// The same for `sql`, which gives one number a district.
async fn called_by_the_medians_of(build: impl Fn(&Path, &str, bool) -> SessionDataset, sql: &str) -> usize {
    let (_dir, target, twin, engine) = common::twins(build);
    let (with, without) = (answers(&engine, &target, sql).await, answers(&engine, &twin, sql).await);
    assert_eq!((with.len(), without.len()), (DISTRICTS, DISTRICTS), "every district is released");
    let median = |rows: &[(String, Vec<f64>)]| {
        let mut v: Vec<f64> = rows.iter().map(|(_, n)| n[0]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let cut = (median(&with) + median(&without)) / 2.0;
    // Whichever side of the cut the target's answers lie on.
    let above = with.iter().filter(|(_, n)| n[0] > cut).count() + without.iter().filter(|(_, n)| n[0] <= cut).count();
    above.max(with.len() + without.len() - above)
}

/// Districts `D000` to `D399` (a prefix cell such as `D12` holds ten of them), each with ten
/// people of code 0 and a planted person whose code is 1 in about half the districts (a fixed
/// coin) and 0 elsewhere; `visits` rows a person, declared one row a person when there is one.
fn planted_alone(dir: &Path, file: &str, visits: usize) -> SessionDataset {
    let (mut ids, mut districts, mut codes, mut days) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in 0..400usize {
        for p in 0..=10 {
            let planted = p == 10;
            for v in 0..visits {
                ids.push(if planted { format!("T{d:03}") } else { format!("P{d:03}{p:02}") });
                districts.push(format!("D{d:03}"));
                codes.push(i64::from(planted && d.wrapping_mul(2_654_435_761) % 1_000 < 500));
                days.push(mid_month(1 + v % 6));
            }
        }
    }
    written(dir, file, (ids, districts), codes, days, visits == 1)
}

/// A group that only the planted person makes (their code, in their district) is never
/// released, however many neighbours' rows its key's cells could claim. Leak (a red team,
/// 2026-12-05): `… WHERE NOT alone GROUP BY district`, one person a group, claimed the few
/// people of the districts around it through the key's prefix cell (`D1…`) and was released
/// now and then: seldom, but only where the planted person was not alone, never wrongly. A
/// group now claims only where its own people would be released.
#[tokio::test]
async fn a_group_of_one_does_not_claim_its_way_past_the_threshold() {
    for visits in [1, 2] {
        let (_dir, dataset, engine) = one_dataset(|dir| planted_alone(dir, "people", visits));
        let sql = "SELECT district, count(*) AS n FROM civil.visits WHERE code = 1 GROUP BY district";
        // Fresh draws for every claim and release: another installation's secret each time.
        let mut told = Vec::new();
        for key in 0..12u8 {
            let request = common::aggregate(vec![dataset.clone()], 5, [key; 32]);
            let answer = engine.run(&parse(sql, 1 << 16).unwrap(), request).await.unwrap();
            told.extend(answer.batches.iter().map(RecordBatch::num_rows).filter(|n| *n > 0).map(|n| (key, n)));
        }
        // Every such group holds the planted person alone: any release says their code.
        assert!(told.is_empty(), "{visits} rows a person: released (secret, groups) {told:?}");
    }
}

/// Per district, thirty people whose `v` is 0 to 20 and, with `target`, one whose `v` is
/// −1000, the lower bound; `rows` rows a person (each holding the value), declared one row a
/// person where there is one.
fn far_below(dir: &Path, file: &str, target: bool, rows: usize) -> SessionDataset {
    let (mut ids, mut districts, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for d in 0..DISTRICTS {
        for p in 0..=30 {
            if p == 30 && !target {
                continue;
            }
            for _ in 0..rows {
                ids.push(if p == 30 { format!("T{d:02}") } else { format!("P{d:02}{p:02}") });
                districts.push(format!("R{d:02}"));
                values.push(if p == 30 { -1_000 } else { (p % 21) as i64 });
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Utf8, false),
        Field::new("district", DataType::Utf8, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(StringArray::from(districts)),
        Arc::new(Int64Array::from(values)),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    let columns = HashMap::from([
        ("person_id".to_owned(), common::identifier()),
        ("district".to_owned(), common::column(Tag::QuasiIdentifier, None)),
        ("v".to_owned(), common::column(Tag::Sensitive, Some((-1_000.0, 1_000.0)))),
    ]);
    let contribution = Contribution { max_groups: 20, max_rows: 20 };
    common::about_people((dir, file), "civil.visits", &batch, columns, contribution, rows == 1)
}

/// A person far below the rest of their group: flattening brought the largest contributions
/// down and left the lowest as they were, so a value of −1000 among values of 0 to 20 counted
/// in full against noise the size of the positive ones (a red team, 2026-12-05: membership 60
/// of 60 districts in one query, and a member's value to within about 10, with values of one
/// sign or both, one row a person or several). The lowest contributions are now brought up as
/// the largest are brought down, and the noise is as large as either side's top group.
#[tokio::test]
async fn a_person_far_below_the_rest_is_flattened_too() {
    for rows in [1, 2] {
        for sql in [
            "SELECT district, sum(v) AS s FROM civil.visits GROUP BY district",
            "SELECT district, avg(v) AS s FROM civil.visits GROUP BY district",
        ] {
            let right = called_by_the_medians_of(|dir, file, target| far_below(dir, file, target, rows), sql).await;
            assert!(
                right * 100 <= 2 * DISTRICTS * 70,
                "{rows} rows a person, {sql}: {right} of {} called right",
                2 * DISTRICTS
            );
        }
    }
}

/// Leak (a red team, 2026-12-05, against the first form of the change above): with a code
/// table's join out of the name altogether, two routes to its values over the same people
/// (`ON v.code = l.k` against `ON v.code2 = l.k`, both `WHERE l.chapter = 'A'`) shared their
/// people layer and differed by the label layers alone, which ranges that remove nobody draw
/// afresh: the average of eight such differences read the target's rows whose second code is
/// in another chapter, 60 of 60 districts in sixteen queries. The people's column a code table
/// is reached through stays in the name.
#[tokio::test]
async fn two_routes_to_a_code_tables_values_draw_their_people_layers_apart() {
    let dir = tempfile::tempdir().unwrap();
    // Per district twenty people of four visits (codes 0 and 1 in chapter A, 5 and 6 in B, the
    // second code the same), and where the coin says so the target, whose two visits in chapter
    // A have their second code in chapter B.
    let (mut ids, mut districts, mut codes, mut seconds, mut days) = (vec![], vec![], vec![], vec![], vec![]);
    for d in 0..DISTRICTS {
        let people = (0..20)
            .map(|p| (format!("P{d:02}{p:02}"), false))
            .chain(target_here(d).then(|| (format!("T{d:02}"), true)));
        for (id, target) in people {
            for (v, code) in [0i64, 1, 5, 6].into_iter().enumerate() {
                ids.push(id.clone());
                districts.push(format!("R{d:02}"));
                codes.push(code);
                seconds.push(if target && code < 5 { code + 5 } else { code });
                days.push(mid_month(1 + v));
            }
        }
    }
    let batch = RecordBatch::try_from_iter([
        ("person_id", Arc::new(StringArray::from(ids)) as ArrayRef),
        ("district", Arc::new(StringArray::from(districts)) as ArrayRef),
        ("code", Arc::new(Int64Array::from(codes)) as ArrayRef),
        ("code2", Arc::new(Int64Array::from(seconds)) as ArrayRef),
        ("day", Arc::new(Date32Array::from(days)) as ArrayRef),
    ])
    .unwrap();
    let columns = HashMap::from([
        ("person_id".to_owned(), common::identifier()),
        ("district".to_owned(), common::column(Tag::QuasiIdentifier, None)),
        ("code".to_owned(), common::column(Tag::Sensitive, None)),
        ("code2".to_owned(), common::column(Tag::Sensitive, None)),
        ("day".to_owned(), common::column(Tag::Attribute, None)),
    ]);
    let contribution = Contribution { max_groups: 1, max_rows: 8 };
    let visits = common::about_people((dir.path(), "visits"), "civil.visits", &batch, columns, contribution, false);
    let chapters = RecordBatch::try_from_iter([
        ("k", Arc::new(Int64Array::from((0..10).collect::<Vec<i64>>())) as ArrayRef),
        (
            "chapter",
            Arc::new(StringArray::from((0..10).map(|k| if k < 5 { "A" } else { "B" }).collect::<Vec<_>>())) as ArrayRef,
        ),
    ])
    .unwrap();
    let chapters = common::about_nobody((dir.path(), "chapters"), "civil.chapters", &chapters, &[]);
    let engine = QueryEngine::new(veil_query::Limits::standard(), dir.path()).unwrap();
    let datasets = [visits, chapters];
    // Ranges on the day that remove nobody, each a fresh label layer.
    let ranges = [
        (2024, 2025),
        (2024, 2026),
        (2020, 2025),
        (2020, 2030),
        (2020, 2040),
        (2000, 2050),
        (2000, 2100),
        (2000, 2200),
    ];
    let mut differences: Vec<f64> = vec![0.0; DISTRICTS];
    for (from, to) in ranges {
        let ask = |column: &str| {
            format!(
                "SELECT v.district, count(*) AS n FROM civil.visits v JOIN civil.chapters l ON v.{column} = l.k \
                 WHERE l.chapter = 'A' AND v.day >= DATE '{from}-01-01' AND v.day < DATE '{to}-01-01' \
                 GROUP BY v.district ORDER BY v.district"
            )
        };
        let (first, second) = (
            answers_over(&engine, &datasets, &ask("code")).await,
            answers_over(&engine, &datasets, &ask("code2")).await,
        );
        assert_eq!((first.len(), second.len()), (DISTRICTS, DISTRICTS));
        for ((district, a), (_, b)) in first.iter().zip(&second) {
            differences[district[1..].parse::<usize>().unwrap()] += (a[0] - b[0]) / ranges.len() as f64;
        }
    }
    let best = told_by_cut(&differences);
    assert!(best * 100 <= DISTRICTS * 75, "{best} of {DISTRICTS} told by the averaged difference: {differences:?}");
}

/// Per district twenty people paying 0 to 4 and eight with nothing recorded (NULL), each of one
/// visit, and where the coin says so ([`target_here`]) the target, of one visit paying the
/// most one may (100); declared one row a person when `one_row`.
fn light_payers_beside_no_payments(dir: &Path, file: &str, one_row: bool) -> SessionDataset {
    let people = |d: usize| {
        let mut people: Vec<(String, usize, usize)> = (0..28).map(|p| (format!("P{d:02}{p:02}"), 1, 0)).collect();
        people.extend(target_here(d).then(|| (format!("T{d:02}"), 1, 0)));
        people
    };
    let paid = |id: &str, _, _| match id.strip_prefix('P').and_then(|p| p[2..].parse::<i64>().ok()) {
        Some(p) if p >= 20 => None,
        Some(p) => Some(p % 5),
        None => Some(100),
    };
    written_payments((dir, file), people, paid, one_row, Contribution { max_groups: 1, max_rows: 1 })
}

/// Leak (a red team, 2026-12-06): people with no value ranked before every number in the
/// ranking flattening reads, so six or more of them took every outlier's and top group's
/// place: a heavy person after them was counted in full, and the noise fell to its floor. A
/// planted person of 1,000 among people of 0 to 20 and eight NULLs was told 50 of 50 times in
/// one query, and a lone value among NULLs read to about ±90. People with no value now rank
/// as contributions of 0, as the sum counts them.
#[tokio::test]
async fn people_with_no_value_do_not_unflatten_a_heavy_one() {
    for one_row in [true, false] {
        let (_dir, dataset, engine) = one_dataset(|dir| light_payers_beside_no_payments(dir, "visits", one_row));
        let sql =
            "SELECT district, sum(paid) AS s, avg(paid) AS a FROM civil.visits GROUP BY district ORDER BY district";
        let answers = answers(&engine, &dataset, sql).await;
        assert_eq!(answers.len(), DISTRICTS, "every district released");
        for (at, what) in [(0, "sum"), (1, "avg")] {
            let scores: Vec<f64> = answers.iter().map(|(_, v)| v[at]).collect();
            let best = told_by_cut(&scores);
            assert!(best * 100 <= DISTRICTS * 75, "{what} (one row: {one_row}): {best} of {DISTRICTS}: {scores:?}");
        }
    }
}

/// Per district ten people with nothing recorded (NULL) and `heavy` paying as listed, one row
/// a person, and the target paying what `target` says by the coin ([`target_here`]); payments
/// declared between `bounds`.
fn at_the_bound_beside_no_payments(
    dir: &Path,
    heavy: &[i64],
    target: impl Fn(bool) -> i64,
    bounds: (f64, f64),
) -> SessionDataset {
    let (mut ids, mut districts, mut paying) = (Vec::new(), Vec::new(), Vec::new());
    for d in 0..DISTRICTS {
        let mut people: Vec<(String, Option<i64>)> = (0..10).map(|p| (format!("N{d:02}{p:02}"), None)).collect();
        people.extend(heavy.iter().enumerate().map(|(p, v)| (format!("H{d:02}{p:02}"), Some(*v))));
        people.push((format!("T{d:02}"), Some(target(target_here(d)))));
        for (id, value) in people {
            ids.push(id);
            districts.push(format!("R{d:02}"));
            paying.push(value);
        }
    }
    let n = ids.len();
    let rows = (ids, districts);
    let values = (vec![0; n], vec![mid_month(1); n], paying);
    let contribution = Contribution { max_groups: 1, max_rows: 1 };
    written_paying_within(dir, "visits", rows, values, true, contribution, bounds)
}

/// Leak (a red team, 2026-12-06): a signed value moves from one side of a sum to the other:
/// one person moves it by both bounds' magnitudes, and the noise was the larger side's scale.
/// Eight people at each bound and the target at one or the other: the sign of the sum told the
/// target's 79 of 100 times in one query (95 of 100 with four at each bound, where each side's
/// flattening moves too: still open, `docs/aggregate.md`). The noise is now both sides' scales
/// together: here 42 of 60 districts by the best cut knowing the coins before, 36 now.
#[tokio::test]
async fn a_signed_value_does_not_tell_its_sign() {
    let (_dir, dataset, engine) = one_dataset(|dir| {
        let heavy = [[-100; 8], [100; 8]].concat();
        at_the_bound_beside_no_payments(dir, &heavy, |here| if here { 100 } else { -100 }, (-100.0, 100.0))
    });
    let sql = "SELECT district, sum(paid) AS s FROM civil.visits GROUP BY district ORDER BY district";
    let answers = answers(&engine, &dataset, sql).await;
    assert_eq!(answers.len(), DISTRICTS, "every district released");
    let sums: Vec<f64> = answers.iter().map(|(_, v)| v[0]).collect();
    let best = told_by_cut(&sums);
    assert!(best * 100 <= DISTRICTS * 65, "{best} of {DISTRICTS} told by the sum: {sums:?}");
}

/// Per district sixteen people of code 1 seen in March paying 10 to 25, ten of code 0 seen in
/// January paying alike, and the target of code 1 paying the most one may (100), seen in March
/// where the coin says so ([`target_here`]) and in January where not; one row a person.
fn the_same_people_but_the_target(dir: &Path) -> SessionDataset {
    let (mut ids, mut districts, mut codes, mut days, mut paying) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in 0..DISTRICTS {
        let mut people: Vec<(String, i64, usize, i64)> =
            (0..16).map(|p| (format!("P{d:02}{p:02}"), 1, 3, 10 + p as i64)).collect();
        people.extend((0..10).map(|p| (format!("Q{d:02}{p:02}"), 0, 1, 10 + p as i64)));
        people.push((format!("T{d:02}"), 1, if target_here(d) { 3 } else { 1 }, 100));
        for (id, code, month, paid) in people {
            ids.push(id);
            districts.push(format!("R{d:02}"));
            codes.push(code);
            days.push(mid_month(month));
            paying.push(Some(paid));
        }
    }
    let contribution = Contribution { max_groups: 1, max_rows: 1 };
    written_paying(dir, "visits", (ids, districts), (codes, days, paying), true, contribution)
}

/// Leak (a red team, 2026-12-06, late): two conditions on two columns that select the same
/// people but the target. `WHERE code = 1` against `WHERE <March>`: where the target is in
/// March the two hold the same people and drew the same people layer, so their difference was
/// the floor's layers alone; where not, two people layers at the group's scale and the target's
/// value. The size of the difference told the target's month in 47 to 50 of 50 districts in
/// two queries, and here 53 of 60 (as keys, `GROUP BY code` against `GROUP BY` the month,
/// alike). Each answer now has a layer at the group's scale seeded by the columns that select
/// its people too (`selecting` in `anon.rs`): two questions over different columns differ by
/// two such draws, whether or not the target is there (41 of 60 now).
#[tokio::test]
async fn two_columns_that_select_the_same_people_but_the_target_tell_nothing() {
    let (_dir, dataset, engine) = one_dataset(the_same_people_but_the_target);
    let march = "day >= DATE '2024-03-01' AND day < DATE '2024-04-01'";
    let conditions = |condition: &str| {
        format!(
            "SELECT district, sum(paid) AS s, count(*) AS n FROM civil.visits WHERE {condition} \
             GROUP BY district ORDER BY district"
        )
    };
    let keys = |key: &str, value: &str| {
        format!(
            "SELECT district, s, n FROM (SELECT district, {key} AS b, sum(paid) AS s, count(*) AS n \
             FROM civil.visits GROUP BY district, {key}) g WHERE b = {value} ORDER BY district"
        )
    };
    let pairs = [
        (conditions("code = 1"), conditions(march)),
        (keys("code", "1"), keys("date_trunc('month', day)", "TIMESTAMP '2024-03-01 00:00:00'")),
    ];
    for (by_code, by_month) in &pairs {
        let by_code = answers(&engine, &dataset, by_code).await;
        let by_month = answers(&engine, &dataset, by_month).await;
        assert_eq!((by_code.len(), by_month.len()), (DISTRICTS, DISTRICTS), "every district released");
        differences_tell_nothing(&by_code, &by_month, 0, "the sums");
        differences_tell_nothing(&by_code, &by_month, 1, "the counts");
    }
}

/// How many copies of the date [`margins_on_copies_of_a_date`] has.
const DATE_COPIES: usize = 8;

/// Per district forty people born on 2024-08-15 paying 10 to 49 and, where the coin says so
/// ([`target_here`]), the target paying 50; copies of the birth date `d0` … `d7`, on each of
/// which three of the forty (a different three per copy) and the target were born on 2024-03-03
/// instead. One row a person, payments declared within [0, 100].
fn margins_on_copies_of_a_date(dir: &Path) -> SessionDataset {
    let (fifteenth, third) = (19_950, 19_785);
    let (mut ids, mut districts, mut paid) = (vec![], vec![], vec![]);
    let mut copies: Vec<Vec<i32>> = vec![Vec::new(); DATE_COPIES];
    for d in 0..DISTRICTS {
        let people = (0..40).map(|p| (format!("P{d:02}{p:02}"), 10 + p as i64, Some(p)));
        for (id, v, decoy) in people.chain(target_here(d).then(|| (format!("T{d:02}"), 50, None))) {
            ids.push(id);
            districts.push(format!("R{d:02}"));
            paid.push(v);
            for (j, copy) in copies.iter_mut().enumerate() {
                let off = decoy.is_none_or(|p| (p + 3 * j + d) % 40 < 3);
                copy.push(if off { third } else { fifteenth });
            }
        }
    }
    let mut fields: Vec<(String, ArrayRef)> = vec![
        ("person_id".into(), Arc::new(StringArray::from(ids))),
        ("district".into(), Arc::new(StringArray::from(districts))),
        ("paid".into(), Arc::new(Int64Array::from(paid))),
    ];
    let mut columns = HashMap::from([
        ("person_id".to_owned(), common::identifier()),
        ("district".to_owned(), common::column(Tag::QuasiIdentifier, None)),
        ("paid".to_owned(), common::column(Tag::Sensitive, Some((0.0, 100.0)))),
    ]);
    for (j, copy) in copies.into_iter().enumerate() {
        fields.push((format!("d{j}"), Arc::new(Date32Array::from(copy))));
        columns.insert(format!("d{j}"), common::column(Tag::Attribute, None));
    }
    one_row_each((dir, "dates"), fields, columns)
}

/// The columns `fields`, described by `columns`, as the dataset `civil.visits` in `file` of
/// `dir`: one row a person, each in at most one group.
fn one_row_each(
    (dir, file): (&Path, &str),
    fields: Vec<(String, ArrayRef)>,
    columns: HashMap<String, veil_guard::ColumnInfo>,
) -> SessionDataset {
    let batch = RecordBatch::try_from_iter(fields).unwrap();
    common::about_people(
        (dir, file),
        "civil.visits",
        &batch,
        columns,
        Contribution { max_groups: 1, max_rows: 1 },
        true,
    )
}

/// Leak (a red team, 2026-12-06, the session's third): a one-value IN list on a part of a date
/// that repeats, against the equality. Three known people and the target on another day than
/// everyone else of a district: whether `WHERE date_part('day', d) IN (15)` and `… = 15` left
/// the condition out apart, counted over sixteen copies of the date with different known
/// people, told 55 of 60 districts (48 with two known people). The same rows must be decided
/// by one draw however they are asked: the two answer alike everywhere, with the target or
/// without, and so does the key.
#[tokio::test]
async fn a_one_value_list_on_a_part_of_a_date_answers_as_the_equality() {
    let (_dir, dataset, engine) = one_dataset(margins_on_copies_of_a_date);
    for j in 0..DATE_COPIES {
        let ask = |condition: &str| {
            format!(
                "SELECT district, sum(paid) AS s, count(*) AS n FROM civil.visits WHERE {condition} \
                 GROUP BY district ORDER BY district"
            )
        };
        let equal = answers(&engine, &dataset, &ask(&format!("date_part('day', d{j}) = 15"))).await;
        let listed = answers(&engine, &dataset, &ask(&format!("date_part('day', d{j}) IN (15)"))).await;
        let keyed = answers(
            &engine,
            &dataset,
            &format!(
                "SELECT district, s, n FROM (SELECT district, date_part('day', d{j}) AS p, sum(paid) AS s, \
                 count(*) AS n FROM civil.visits GROUP BY district, date_part('day', d{j})) g WHERE p = 15 \
                 ORDER BY district"
            ),
        )
        .await;
        assert_eq!(equal, listed, "copy {j}: the equality against the one-value list");
        assert_eq!(equal, keyed, "copy {j}: the equality against the key");
    }
}

/// Leak (a red team, 2026-12-06, the session's fourth): a code table's boolean as a condition
/// and as a key. Per district twenty people of code 0 and, where the coin says so, the target
/// of code 1, joined to a code table where code 0 is `g` and code 1 is not. `WHERE l.g` removed
/// the target alone and was left out, so the target was in; the key's group `true` did not
/// take the other value's one person. Equal without the target, apart with them: membership in
/// 60 of 60 districts in two queries. The same rows must be decided by one draw however they
/// are asked.
#[tokio::test]
async fn a_code_tables_boolean_as_a_condition_and_as_a_key_answers_alike() {
    let dir = tempfile::tempdir().unwrap();
    let people = |d: usize| {
        let mut people: Vec<(String, usize, usize)> = (0..20).map(|p| (format!("P{d:02}{p:02}"), 1, 0)).collect();
        if target_here(d) {
            people.push((format!("T{d:02}"), 0, 1));
        }
        people
    };
    let paid = |id: &str, _, _| Some(if id.starts_with('T') { 50 } else { 30 + id[3..].parse::<i64>().unwrap() });
    let visits = written_payments((dir.path(), "visits"), people, paid, true, Contribution::default());
    let batch = RecordBatch::try_from_iter([
        ("k", Arc::new(Int64Array::from(vec![0, 1])) as ArrayRef),
        ("g", Arc::new(BooleanArray::from(vec![true, false])) as ArrayRef),
        ("h", Arc::new(BooleanArray::from(vec![true, true])) as ArrayRef),
    ])
    .unwrap();
    let codes = common::about_nobody((dir.path(), "codes"), "civil.codes", &batch, &[]);
    let engine = QueryEngine::new(veil_query::Limits::standard(), dir.path()).unwrap();
    let datasets = [visits, codes];
    let condition = |flag: &str| {
        format!(
            "SELECT v.district, sum(v.paid) AS s, count(*) AS n FROM civil.visits v \
             JOIN civil.codes l ON v.code = l.k WHERE l.{flag} GROUP BY v.district ORDER BY v.district"
        )
    };
    let key = "SELECT district, s, n FROM (SELECT v.district, l.g AS b, sum(v.paid) AS s, count(*) AS n \
               FROM civil.visits v JOIN civil.codes l ON v.code = l.k GROUP BY v.district, l.g) g \
               WHERE b ORDER BY district";
    let by_condition = answers_over(&engine, &datasets, &condition("g")).await;
    let by_key = answers_over(&engine, &datasets, key).await;
    assert_eq!((by_condition.len(), by_key.len()), (DISTRICTS, DISTRICTS), "every district released");
    differences_tell_nothing(&by_condition, &by_key, 0, "the sums");
    differences_tell_nothing(&by_condition, &by_key, 1, "the counts");
    assert_eq!(by_condition, by_key, "the condition against the key");
    // And against a flag holding both codes, which leaves the target's code out as rare in
    // the group: the two differ by their labels' layers alone, with the target or without.
    let by_both = answers_over(&engine, &datasets, &condition("h")).await;
    assert_eq!(by_both.len(), DISTRICTS, "every district released");
    differences_tell_nothing(&by_condition, &by_both, 0, "the sums against both codes");
    differences_tell_nothing(&by_condition, &by_both, 1, "the counts against both codes");
}

/// How many copies of the flag [`flags_failed_by_decoys`] has.
const FLAG_COPIES: usize = 4;

/// Per district twenty people with `a` and every flag `b0` … `b3` true, paying 0 to 9; three
/// known people per flag (a different three per copy) with `a` true and that flag false; and,
/// where the coin says so ([`target_here`]), the target, with `a` and every flag false. Each
/// flag `bj` has a date `dj` beside it, in March 2024 where the flag is true and in May where
/// not. One row a person, payments declared within [0, 9].
fn flags_failed_by_decoys(dir: &Path) -> SessionDataset {
    let (mut ids, mut districts, mut paid, mut a) = (vec![], vec![], vec![], vec![]);
    let mut flags: Vec<Vec<bool>> = vec![Vec::new(); FLAG_COPIES];
    for d in 0..DISTRICTS {
        let people = (0..20 + 3 * FLAG_COPIES).map(|p| (format!("P{d:02}{p:02}"), Some(p)));
        for (id, p) in people.chain(target_here(d).then(|| (format!("T{d:02}"), None))) {
            ids.push(id);
            districts.push(format!("R{d:02}"));
            paid.push(p.map_or(5, |p| (p % 10) as i64));
            a.push(p.is_some());
            for (j, flag) in flags.iter_mut().enumerate() {
                flag.push(p.is_some_and(|p| p < 20 || (p - 20) / 3 != j));
            }
        }
    }
    let mut fields: Vec<(String, ArrayRef)> = vec![
        ("person_id".into(), Arc::new(StringArray::from(ids))),
        ("district".into(), Arc::new(StringArray::from(districts))),
        ("paid".into(), Arc::new(Int64Array::from(paid))),
        ("a".into(), Arc::new(BooleanArray::from(a))),
    ];
    let mut columns = HashMap::from([
        ("person_id".to_owned(), common::identifier()),
        ("district".to_owned(), common::column(Tag::QuasiIdentifier, None)),
        ("paid".to_owned(), common::column(Tag::Sensitive, Some((0.0, 9.0)))),
        ("a".to_owned(), common::column(Tag::Attribute, None)),
    ]);
    for (j, flag) in flags.into_iter().enumerate() {
        let days: Vec<i32> = flag.iter().map(|f| mid_month(if *f { 3 } else { 5 })).collect();
        fields.push((format!("b{j}"), Arc::new(BooleanArray::from(flag))));
        columns.insert(format!("b{j}"), common::column(Tag::Attribute, None));
        fields.push((format!("d{j}"), Arc::new(Date32Array::from(days))));
        columns.insert(format!("d{j}"), common::column(Tag::Attribute, None));
    }
    one_row_each((dir, "flags"), fields, columns)
}

/// Per district, over the copies of [`flags_failed_by_decoys`], how many times the two
/// questions `pair(copy)` gives answered apart; every district released by both.
async fn copies_answered_apart(pair: impl Fn(usize) -> (String, String)) -> Vec<f64> {
    let (_dir, dataset, engine) = one_dataset(flags_failed_by_decoys);
    let mut apart = vec![0.0; DISTRICTS];
    for j in 0..FLAG_COPIES {
        let (first, second) = pair(j);
        let (first, second) = (answers(&engine, &dataset, &first).await, answers(&engine, &dataset, &second).await);
        assert_eq!((first.len(), second.len()), (DISTRICTS, DISTRICTS), "every district released");
        for ((district, x), (_, y)) in first.iter().zip(&second) {
            if x != y {
                apart[district[1..].parse::<usize>().unwrap()] += 1.0;
            }
        }
    }
    apart
}

/// Leak (a red team, 2026-12-06, the session after): a flag as a condition against the same
/// flag as a key, beside a second flag's condition, where the target fails both and three known
/// people fail the first alone. `WHERE a GROUP BY district, b` (row `true`) decided the known
/// people by the key's claims under `a`, and then `a` with the target; `WHERE a AND b`
/// decided each column alone, then both together over the known people and the target. Absent,
/// every decision was over the known people alone, one draw, and the two answered alike;
/// present, the draws differed: membership 53 of 60 districts in six queries, never wrongly.
/// The same rows must be decided by one draw however they are asked.
#[tokio::test]
async fn a_flag_as_a_condition_and_as_a_key_beside_another_answer_alike() {
    let apart = copies_answered_apart(|j| {
        let conditions = format!(
            "SELECT district, count(*) AS n, sum(paid) AS s FROM civil.visits WHERE a AND b{j} \
             GROUP BY district ORDER BY district"
        );
        let keyed = format!(
            "SELECT district, n, s FROM (SELECT district, b{j} AS f, count(*) AS n, sum(paid) AS s \
             FROM civil.visits WHERE a GROUP BY district, b{j}) g WHERE f ORDER BY district"
        );
        (conditions, keyed)
    })
    .await;
    let best = told_by_cut(&apart);
    assert!(best * 100 <= DISTRICTS * 75, "{best} of {DISTRICTS} told by the copies answered apart: {apart:?}");
    assert!(apart.iter().all(|n| *n == 0.0), "the condition against the key: {apart:?}");
}

/// [`a_flag_as_a_condition_and_as_a_key_beside_another_answer_alike`] with a part of a date
/// that repeats in place of the second flag: the month of every year, as a condition and as a
/// key, beside the flag `a`.
#[tokio::test]
async fn a_month_of_the_year_as_a_condition_and_as_a_key_beside_a_flag_answer_alike() {
    let spelled = |j: usize, month: &str| {
        format!(
            "SELECT district, count(*) AS n, sum(paid) AS s FROM civil.visits \
             WHERE a AND date_part('month', d{j}) {month} GROUP BY district ORDER BY district"
        )
    };
    // The one value listed, once or twice, is the equality.
    for listed in ["IN (3)", "IN (3, 3)"] {
        let apart = copies_answered_apart(|j| (spelled(j, "= 3"), spelled(j, listed))).await;
        assert!(apart.iter().all(|n| *n == 0.0), "the equality against {listed}: {apart:?}");
    }
    let apart = copies_answered_apart(|j| {
        let keyed = format!(
            "SELECT district, n, s FROM (SELECT district, date_part('month', d{j}) AS m, count(*) AS n, \
             sum(paid) AS s FROM civil.visits WHERE a GROUP BY district, date_part('month', d{j})) g \
             WHERE m = 3 ORDER BY district"
        );
        (spelled(j, "= 3"), keyed)
    })
    .await;
    let best = told_by_cut(&apart);
    assert!(best * 100 <= DISTRICTS * 75, "{best} of {DISTRICTS} told by the copies answered apart: {apart:?}");
    assert!(apart.iter().all(|n| *n == 0.0), "the condition against the key: {apart:?}");
}
