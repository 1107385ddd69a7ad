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
use std::path::Path;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::Result;

/// An extract's released columns as text, pseudonyms left out: each column's name, whether it
/// is sensitive, and its values row by row.
#[derive(Debug, Clone, Default)]
pub struct ReleasedRows {
    /// Per column: its name, whether sensitive, and its values (`None`: null).
    pub columns: Vec<(String, bool, Vec<Option<String>>)>,
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
        let mut columns: Vec<(String, bool, Vec<Option<String>>)> = Vec::new();
        let options = FormatOptions::default();
        for batch in reader {
            let batch = batch?;
            if columns.is_empty() {
                columns = batch
                    .schema()
                    .fields()
                    .iter()
                    .filter_map(|f| {
                        let role = roles.iter().find(|(n, _)| n == f.name()).map_or("attribute", |(_, r)| r.as_str());
                        (role != "pseudonym").then(|| (f.name().clone(), role == "sensitive", Vec::new()))
                    })
                    .collect();
            }
            for (name, _, values) in &mut columns {
                let Some(array) = batch.column_by_name(name) else { continue };
                let shown = ArrayFormatter::try_new(array.as_ref(), &options)?;
                values.extend((0..array.len()).map(|i| array.is_valid(i).then(|| shown.value(i).to_string())));
            }
        }
        Ok(Self { columns })
    }

    fn rows(&self) -> usize {
        self.columns.first().map_or(0, |(_, _, v)| v.len())
    }
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
    let mut difference = projected(new, pairs.iter().map(|p| p.0));
    for (row, n) in projected(old, pairs.iter().map(|p| p.1)) {
        *difference.entry(row).or_default() -= n;
    }
    let sensitive: Vec<usize> = pairs.iter().enumerate().filter(|(_, p)| new.columns[p.0].1).map(|(j, _)| j).collect();
    // Per class: rows more or fewer, and each sensitive column's values among them.
    let mut classes: HashMap<Row<'_>, (u64, Vec<Values<'_>>)> = HashMap::new();
    for (row, n) in difference.iter().filter(|(_, n)| **n != 0) {
        let class: Row<'_> = row.iter().enumerate().filter(|(j, _)| !sensitive.contains(j)).map(|(_, v)| *v).collect();
        let (rows, values) = classes.entry(class).or_insert_with(|| (0, vec![HashSet::new(); sensitive.len()]));
        *rows += n.unsigned_abs();
        for (held, &j) in values.iter_mut().zip(&sensitive) {
            held.insert(row[j]);
        }
    }
    classes.values().any(|(rows, values)| *rows < k || values.iter().any(|v| (v.len() as u64) < l))
}

/// Pairs of a column of `new` and one of `old` (indices) whose distinct values overlap by at
/// least half of the larger set, best pairs first, each column in one pair at most.
fn paired(new: &ReleasedRows, old: &ReleasedRows) -> Vec<(usize, usize)> {
    let (a, b) = (distinct(new), distinct(old));
    let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            let larger = x.len().max(y.len());
            if larger == 0 {
                continue;
            }
            let overlap = x.intersection(y).count() as f64 / larger as f64;
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

/// A row's values in some columns.
type Row<'a> = Vec<Option<&'a str>>;

/// Distinct values of a column, null among them.
type Values<'a> = HashSet<Option<&'a str>>;

/// Each column's distinct values.
fn distinct(rows: &ReleasedRows) -> Vec<HashSet<&str>> {
    rows.columns.iter().map(|(_, _, v)| v.iter().flatten().map(String::as_str).collect()).collect()
}

/// How many times each row of `rows`, projected on `columns`, occurs.
fn projected(rows: &ReleasedRows, columns: impl Iterator<Item = usize> + Clone) -> HashMap<Row<'_>, i64> {
    let mut counts: HashMap<Row<'_>, i64> = HashMap::new();
    for i in 0..rows.rows() {
        let row = columns.clone().map(|c| rows.columns[c].2[i].as_deref()).collect();
        *counts.entry(row).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(columns: &[(&str, bool, &[&str])]) -> ReleasedRows {
        ReleasedRows {
            columns: columns
                .iter()
                .map(|(n, s, v)| ((*n).to_owned(), *s, v.iter().map(|x| Some((*x).to_owned())).collect()))
                .collect(),
        }
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
}
