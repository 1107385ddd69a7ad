//! Released extracts compared by their rows alone: whatever the datasets, units, column names
//! and tags they came from, two extracts whose rows differ by a few give those few rows.
//!
//! The broker compares extracts person by person where it can tell who is who (one dataset's
//! versions, and datasets recognised as snapshots of one another). A red team registered
//! snapshots it could not recognise (a sensitive column renamed, a unit of another type or not
//! declared linkable, everybody re-keyed) and read the person added as the one row the second
//! extract had more of. This comparison needs no names: each column of one extract is paired
//! with the column of the other holding mostly the same values, both are projected on the
//! pairs (as anyone holding both can), and the multisets of projected rows are subtracted.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::path::Path;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::Result;

/// An extract's released columns, pseudonyms left out, each value coded by its text: every
/// column's distinct values once, and per row the code of its value. Coding keeps a 10 M-row
/// extract in a few hundred MiB and compares rows as small integers (held as text, one
/// string per value, it took 7 GiB and two minutes).
#[derive(Debug, Clone, Default)]
pub struct ReleasedRows {
    columns: Vec<Coded>,
    rows: usize,
}

/// One column of [`ReleasedRows`].
#[derive(Debug, Clone, Default)]
struct Coded {
    name: String,
    sensitive: bool,
    /// The distinct values as text; a row's code is its value's index + 1 (0: null).
    values: Vec<String>,
    codes: Vec<u32>,
    /// Each value's code, while reading.
    index: HashMap<String, u32>,
}

impl Coded {
    fn new(name: String, sensitive: bool) -> Self {
        Self { name, sensitive, ..Self::default() }
    }

    fn push(&mut self, value: Option<&str>) {
        let code = match value {
            None => 0,
            Some(v) => match self.index.get(v) {
                Some(&code) => code,
                None => {
                    self.values.push(v.to_owned());
                    let code = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
                    self.index.insert(v.to_owned(), code);
                    code
                }
            },
        };
        self.codes.push(code);
    }

    /// Each code of `other` (null first) as a code of this column: the same text the same
    /// code, values this column lacks numbered after its own.
    fn translate(&self, other: &Self) -> Vec<u32> {
        let mut fresh = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        std::iter::once(0)
            .chain(other.values.iter().map(|v| {
                self.index.get(v).copied().unwrap_or_else(|| {
                    fresh = fresh.saturating_add(1);
                    fresh
                })
            }))
            .collect()
    }
}

impl ReleasedRows {
    /// The extract file at `path`, its columns as `roles` (name and role, as an extract's
    /// report gives them) say: pseudonyms left out, sensitive columns marked.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn read(path: &Path, roles: &[(String, String)]) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| crate::Error::Storage(e.to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
        let mut released = Self::default();
        for batch in reader {
            let batch = batch?;
            if released.columns.is_empty() {
                released.columns = batch
                    .schema()
                    .fields()
                    .iter()
                    .filter_map(|f| {
                        let role = roles.iter().find(|(n, _)| n == f.name()).map_or("attribute", |(_, r)| r.as_str());
                        (role != "pseudonym").then(|| Coded::new(f.name().clone(), role == "sensitive"))
                    })
                    .collect();
            }
            for column in &mut released.columns {
                let Some(array) = batch.column_by_name(&column.name) else { continue };
                let text = as_text(array)?;
                for i in 0..text.len() {
                    column.push(text.is_valid(i).then(|| text.value(i)));
                }
            }
            released.rows += batch.num_rows();
        }
        for column in &mut released.columns {
            column.index.shrink_to_fit();
        }
        Ok(released)
    }

    #[cfg(test)]
    fn from_text(columns: Vec<(String, bool, Vec<Option<String>>)>) -> Self {
        let rows = columns.first().map_or(0, |(_, _, v)| v.len());
        let columns = columns
            .into_iter()
            .map(|(name, sensitive, values)| {
                let mut coded = Coded::new(name, sensitive);
                values.iter().for_each(|v| coded.push(v.as_deref()));
                coded
            })
            .collect();
        Self { columns, rows }
    }
}

/// A column's values as text, as Arrow casts them (dates `2024-01-31`, numbers in their
/// shortest form); a type without a cast to text is displayed instead.
fn as_text(array: &ArrayRef) -> Result<StringArray> {
    if let Ok(text) = cast(array, &DataType::Utf8)
        && let Some(text) = text.as_any().downcast_ref::<StringArray>()
    {
        return Ok(text.clone());
    }
    let shown = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())?;
    Ok((0..array.len()).map(|i| array.is_valid(i).then(|| shown.value(i).to_string())).collect())
}

/// Whether `new` and `old`, projected on the columns they share (each column of `new` paired
/// with the column of `old` whose distinct values mostly are its own), differ by rows that
/// single out fewer than `k` people: in some class (the rows' values in `new`'s paired
/// columns that are not sensitive), some but fewer than `k` rows more or fewer, or fewer than
/// `l` values of a paired sensitive column among them. With no column paired, their numbers
/// of rows are compared (one class): a red team recoded every value of a re-keyed snapshot
/// with a codebook it knew, so that nothing paired, and decoded the one row more.
pub fn differs_by_few(new: &ReleasedRows, old: &ReleasedRows, k: u64, l: u64) -> bool {
    let pairs = paired(new, old);
    let projection = Projection::of(new, old, &pairs);
    // A row's codes fit in 128 bits unless the paired columns are many and each has many
    // values; then each row is a vector of codes (slower, the same answer).
    if projection.radices.iter().map(|r| f64::from(*r).log2()).sum::<f64>() < 127.0 {
        classes_differ(&projection.difference::<u128>(), &projection, k, l)
    } else {
        classes_differ(&projection.difference::<Vec<u32>>(), &projection, k, l)
    }
}

/// Whether some class of the rows `difference` holds (each row's codes and how many more the
/// new extract has) holds some but fewer than `k` rows, or fewer than `l` values of a
/// sensitive column among them.
fn classes_differ<K: RowKey>(difference: &HashMap<K, i64>, projection: &Projection<'_>, k: u64, l: u64) -> bool {
    let sensitive = &projection.sensitive;
    // Per class: rows more or fewer, and each sensitive column's values among them.
    let mut classes: HashMap<Vec<u32>, (u64, Vec<HashSet<u32>>)> = HashMap::new();
    for (row, n) in difference.iter().filter(|(_, n)| **n != 0) {
        let codes = row.decode(&projection.radices);
        let class: Vec<u32> =
            codes.iter().enumerate().filter(|(j, _)| !sensitive.contains(j)).map(|(_, c)| *c).collect();
        let (rows, values) = classes.entry(class).or_insert_with(|| (0, vec![HashSet::new(); sensitive.len()]));
        *rows += n.unsigned_abs();
        for (held, &j) in values.iter_mut().zip(sensitive) {
            held.insert(codes[j]);
        }
    }
    classes.values().any(|(rows, values)| *rows < k || values.iter().any(|v| (v.len() as u64) < l))
}

/// Two extracts projected on their paired columns, in the new one's codes.
struct Projection<'a> {
    new: Vec<&'a [u32]>,
    /// The old extract's paired columns, and each of its codes in the new one's.
    old: Vec<(&'a [u32], Vec<u32>)>,
    /// Per pair, one more than its largest code.
    radices: Vec<u32>,
    /// The pairs whose column is sensitive (positions among the pairs).
    sensitive: Vec<usize>,
    rows: (usize, usize),
}

impl<'a> Projection<'a> {
    fn of(new: &'a ReleasedRows, old: &'a ReleasedRows, pairs: &[(usize, usize)]) -> Self {
        let mut projection = Self {
            new: Vec::new(),
            old: Vec::new(),
            radices: Vec::new(),
            sensitive: Vec::new(),
            rows: (new.rows, old.rows),
        };
        for (p, &(i, j)) in pairs.iter().enumerate() {
            let (a, b) = (&new.columns[i], &old.columns[j]);
            let translated = a.translate(b);
            let largest =
                translated.iter().copied().max().unwrap_or(0).max(u32::try_from(a.values.len()).unwrap_or(u32::MAX));
            projection.radices.push(largest.saturating_add(1));
            projection.new.push(&a.codes);
            projection.old.push((&b.codes, translated));
            if a.sensitive {
                projection.sensitive.push(p);
            }
        }
        projection
    }

    /// How many times more each projected row occurs in the new extract than in the old.
    fn difference<K: RowKey>(&self) -> HashMap<K, i64> {
        let mut counts: HashMap<K, i64> = HashMap::with_capacity(self.rows.0.min(1 << 20));
        let mut codes = vec![0u32; self.radices.len()];
        for i in 0..self.rows.0 {
            for (c, column) in codes.iter_mut().zip(&self.new) {
                *c = column[i];
            }
            *counts.entry(K::encode(&codes, &self.radices)).or_default() += 1;
        }
        for i in 0..self.rows.1 {
            for (c, (column, translated)) in codes.iter_mut().zip(&self.old) {
                *c = translated[column[i] as usize];
            }
            *counts.entry(K::encode(&codes, &self.radices)).or_default() -= 1;
        }
        counts
    }
}

/// A projected row as a hash key.
trait RowKey: Hash + Eq {
    fn encode(codes: &[u32], radices: &[u32]) -> Self;
    fn decode(&self, radices: &[u32]) -> Vec<u32>;
}

/// The codes as digits of one number, each pair's radix its own.
impl RowKey for u128 {
    fn encode(codes: &[u32], radices: &[u32]) -> Self {
        codes.iter().zip(radices).fold(0, |key, (c, r)| key * u128::from(*r) + u128::from(*c))
    }

    fn decode(&self, radices: &[u32]) -> Vec<u32> {
        let mut key = *self;
        let mut codes: Vec<u32> = radices
            .iter()
            .rev()
            .map(|r| {
                let digit = key % u128::from(*r);
                key /= u128::from(*r);
                u32::try_from(digit).unwrap_or(u32::MAX)
            })
            .collect();
        codes.reverse();
        codes
    }
}

impl RowKey for Vec<u32> {
    fn encode(codes: &[u32], _: &[u32]) -> Self {
        codes.to_vec()
    }

    fn decode(&self, _: &[u32]) -> Vec<u32> {
        self.clone()
    }
}

/// Pairs of a column of `new` and one of `old` (indices) whose distinct values overlap by at
/// least half of the larger set, best pairs first, each column in one pair at most.
fn paired(new: &ReleasedRows, old: &ReleasedRows) -> Vec<(usize, usize)> {
    let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
    for (i, x) in new.columns.iter().enumerate() {
        for (j, y) in old.columns.iter().enumerate() {
            let larger = x.values.len().max(y.values.len());
            if larger == 0 {
                continue;
            }
            let (small, large) = if x.values.len() <= y.values.len() { (x, y) } else { (y, x) };
            let overlap = small.values.iter().filter(|v| large.index.contains_key(*v)).count() as f64 / larger as f64;
            if overlap >= 0.5 {
                candidates.push((overlap, i, j));
            }
        }
    }
    candidates.sort_by(|p, q| q.0.total_cmp(&p.0).then(p.1.cmp(&q.1)).then(p.2.cmp(&q.2)));
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for (_, i, j) in candidates {
        if pairs.iter().all(|(x, y)| *x != i && *y != j) {
            pairs.push((i, j));
        }
    }
    pairs.sort_unstable();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(columns: &[(&str, bool, &[&str])]) -> ReleasedRows {
        ReleasedRows::from_text(
            columns
                .iter()
                .map(|(n, s, v)| ((*n).to_owned(), *s, v.iter().map(|x| Some((*x).to_owned())).collect()))
                .collect(),
        )
    }

    #[test]
    fn one_row_more_under_another_name_is_found() {
        let sexes = ["F", "M", "F", "M", "F", "M", "F", "M", "F", "M"];
        let diagnoses = ["I10", "E11", "J45", "I10", "E11", "J45", "I10", "E11", "J45", "I10"];
        let old = rows(&[("sex", false, &sexes), ("diag", true, &diagnoses)]);
        let (mut s, mut d) = (sexes.to_vec(), diagnoses.to_vec());
        s.push("F");
        d.push("B20");
        // Renamed, and in the other order.
        let new = rows(&[("diagnosis", true, &d), ("gender", false, &s)]);
        assert!(differs_by_few(&new, &old, 5, 2));
        // The same rows under other names: nothing differs.
        let same = rows(&[("diagnosis", true, &diagnoses), ("gender", false, &sexes)]);
        assert!(!differs_by_few(&same, &old, 5, 2));
    }

    #[test]
    fn a_class_of_k_added_with_two_values_is_not_a_few() {
        let old = rows(&[("sex", false, &["F", "M", "F", "M"]), ("diag", true, &["I10", "E11", "J45", "I10"])]);
        let mut sexes = vec!["F", "M", "F", "M"];
        let mut diagnoses = vec!["I10", "E11", "J45", "I10"];
        for i in 0..5 {
            sexes.push("M");
            diagnoses.push(["I10", "E11"][i % 2]);
        }
        let new = rows(&[("sex", false, &sexes), ("diag", true, &diagnoses)]);
        assert!(!differs_by_few(&new, &old, 5, 2));
        // Five added, all with one value: their value is told.
        let one =
            rows(&[("sex", false, &sexes), ("diag", true, &[&["I10", "E11", "J45", "I10"][..], &["B20"; 5]].concat())]);
        assert!(differs_by_few(&one, &old, 5, 2));
    }

    #[test]
    fn unrelated_columns_are_not_paired_and_only_the_numbers_of_rows_compare() {
        let old = rows(&[("zone", false, &["Z1", "Z2", "Z3", "Z1", "Z2", "Z3"])]);
        let new = rows(&[("sex", false, &["F", "M", "F", "M", "F", "M"])]);
        assert!(paired(&new, &old).is_empty());
        assert!(!differs_by_few(&new, &old, 5, 2));
        let one_more = rows(&[("sex", false, &["F", "M", "F", "M", "F", "M", "F"])]);
        assert!(differs_by_few(&one_more, &old, 5, 2));
    }

    #[test]
    fn rows_coded_as_one_number_or_as_codes_give_the_same_answer() {
        // Small random extracts, the second a few rows off the first: both codings agree.
        let mut state = 7u64;
        let mut next = |n: u64| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        for round in 0..50 {
            let n = 20 + next(40) as usize;
            let column = |next: &mut dyn FnMut(u64) -> u64, values: u64| -> Vec<Option<String>> {
                (0..n).map(|_| (next(10) > 0).then(|| format!("v{}", next(values)))).collect()
            };
            let (a, b, c) = (column(&mut next, 3), column(&mut next, 4), column(&mut next, 5));
            let old = ReleasedRows::from_text(vec![
                ("a".into(), false, a.clone()),
                ("b".into(), false, b.clone()),
                ("c".into(), true, c.clone()),
            ]);
            let keep = |v: &[Option<String>]| v[..n - round % 3].to_vec();
            let new = ReleasedRows::from_text(vec![
                ("c".into(), true, keep(&c)),
                ("a".into(), false, keep(&a)),
                ("b".into(), false, keep(&b)),
            ]);
            let projection = Projection::of(&new, &old, &paired(&new, &old));
            for k in [1, 2, 5] {
                assert_eq!(
                    classes_differ(&projection.difference::<u128>(), &projection, k, 2),
                    classes_differ(&projection.difference::<Vec<u32>>(), &projection, k, 2),
                );
            }
        }
    }

    #[test]
    fn many_columns_of_many_values_are_compared_too() {
        // Twelve columns of 4,000 values each: more than 128 bits a row.
        let columns = |rows: usize| -> Vec<(String, bool, Vec<Option<String>>)> {
            (0..12)
                .map(|c| {
                    (format!("c{c}"), c == 0, (0..rows).map(|r| Some(format!("{}", (r * (c + 1)) % 4_000))).collect())
                })
                .collect()
        };
        let (old, new) = (ReleasedRows::from_text(columns(4_000)), ReleasedRows::from_text(columns(4_001)));
        let projection = Projection::of(&new, &old, &paired(&new, &old));
        assert!(projection.radices.iter().map(|r| f64::from(*r).log2()).sum::<f64>() >= 127.0);
        assert!(differs_by_few(&new, &old, 5, 2));
        assert!(!differs_by_few(&ReleasedRows::from_text(columns(4_000)), &old, 5, 2));
    }
}
