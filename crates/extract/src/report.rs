//! The risk and utility report of an extract (GB/T 42460 去标识化效果评估): what was done to each
//! column and what re-identification risk remains. Only counts, shares and the chosen levels:
//! never a value read from the data.

use crate::columns::Table;
use crate::search::Found;
use crate::{RISK_THRESHOLD, Role, Spec};

/// The report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// The `k` met.
    pub k: u64,
    /// The `l` met by each sensitive column.
    pub l: u64,
    /// The largest share of records the spec allowed to be suppressed.
    pub max_suppression: f64,
    /// Records in the source.
    pub source_records: u64,
    /// Records released.
    pub records: u64,
    /// Records suppressed, because their class fell short of `k` or `l` (here or in the
    /// dataset's base release).
    pub suppressed_records: u64,
    /// Records left out because their privacy unit is missing.
    pub records_without_unit: u64,
    /// Records left out because their person had more rows than the cap.
    pub records_over_person_cap: u64,
    /// Equivalence classes released.
    pub classes: u64,
    /// Whether a person's rows can be linked (the pseudonym is kept), so classes are formed
    /// over people's whole profiles.
    pub linked: bool,
    /// How many released classes (and records) have how many people.
    pub class_sizes: Vec<ClassSizes>,
    /// Prosecutor risk (one over the people in a record's class): highest.
    pub highest_risk: f64,
    /// Prosecutor risk averaged over released records.
    pub average_risk: f64,
    /// The threshold above which a record counts as at risk.
    pub risk_threshold: f64,
    /// Share of released records above the threshold.
    pub records_at_risk: f64,
    /// Mean information loss over all columns generalized, in `[0, 1]` (a suppressed record
    /// losing everything), to two decimals.
    pub loss: f64,
    /// What happened to each column.
    pub columns: Vec<ColumnReport>,
    /// Lattice nodes evaluated, of all.
    pub nodes_evaluated: u64,
    /// Lattice nodes.
    pub lattice: u64,
    /// Of the suppressed records, those the dataset's base release suppressed (every extract
    /// of the dataset version leaves them out).
    pub base_suppressed_records: u64,
    /// What the steward should know: a hierarchy asked for that the base release makes coarser,
    /// extracts of other versions already released.
    pub warnings: Vec<String>,
    /// For an extract joined from several datasets, each dataset's own records (the figures
    /// above then count the joined records: one per combination of a person's rows).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceRecords>,
}

/// One dataset's records in an extract joined from several.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceRecords {
    /// The dataset.
    pub dataset: String,
    /// Its records.
    pub source_records: u64,
    /// Records its base release suppressed.
    pub base_suppressed_records: u64,
    /// Records left out because their privacy unit is missing.
    pub records_without_unit: u64,
    /// Records left out because their person had more rows than the cap.
    pub records_over_person_cap: u64,
    /// Records of people not found in every other dataset, left out by the join.
    pub records_not_in_every_dataset: u64,
}

/// Released classes with a number of people in `[from, to]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClassSizes {
    /// Fewest people.
    pub from: u64,
    /// Most people (`None`: no upper end).
    pub to: Option<u64>,
    /// Classes.
    pub classes: u64,
    /// Records in them.
    pub records: u64,
}

/// What happened to a column.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ColumnReport {
    /// The column.
    pub name: String,
    /// `pseudonym`, `quasi_identifier`, `sensitive` or `attribute`.
    pub role: &'static str,
    /// For a quasi-identifier: the level chosen (`month`, `band:10`, `*`, …); for a sensitive
    /// number: how it was coded.
    pub treatment: String,
    /// For a quasi-identifier: its information loss in `[0, 1]`, to two decimals.
    pub loss: Option<f64>,
}

pub(crate) fn report(table: &Table, spec: &Spec, found: &Found) -> Report {
    let eval = &found.eval;
    let mut rows_in = vec![0u64; eval.people.len()];
    for c in &eval.class {
        rows_in[*c as usize] += 1;
    }
    let kept: Vec<usize> = (0..eval.people.len()).filter(|c| eval.kept[*c]).collect();
    let records: u64 = kept.iter().map(|c| rows_in[*c]).sum();
    let smallest = kept.iter().map(|c| eval.people[*c]).min().unwrap_or(0);
    let risk_sum: f64 = kept.iter().map(|c| rows_in[*c] as f64 / eval.people[*c] as f64).sum();
    let at_risk: u64 =
        kept.iter().filter(|c| 1.0 / eval.people[**c] as f64 > RISK_THRESHOLD).map(|c| rows_in[*c]).sum();
    let k = spec.k;
    let edges = [k, 2 * k, 5 * k, 10 * k];
    let class_sizes = edges
        .iter()
        .enumerate()
        .map(|(i, from)| {
            let to = edges.get(i + 1).map(|e| e - 1);
            let inside: Vec<&usize> =
                kept.iter().filter(|c| eval.people[**c] >= *from && to.is_none_or(|t| eval.people[**c] <= t)).collect();
            ClassSizes {
                from: *from,
                to,
                classes: inside.len() as u64,
                records: inside.iter().map(|c| rows_in[**c]).sum(),
            }
        })
        .collect();
    let mut qis = table.qis.iter().zip(&eval.levels).zip(&eval.column_loss);
    let mut sensitive = table.sensitive.iter();
    let columns = spec
        .columns
        .iter()
        .map(|c| {
            let (role, treatment, loss) = match &c.role {
                Role::Pseudonym => ("pseudonym", "HMAC-SHA256 pseudonym keyed for this extract".to_owned(), None),
                Role::QuasiIdentifier { .. } => match qis.next() {
                    Some(((qi, level), loss)) => {
                        ("quasi_identifier", qi.ladder[*level].to_string(), Some(rounded(*loss)))
                    }
                    None => ("quasi_identifier", String::new(), None),
                },
                Role::Sensitive { .. } => {
                    let coding = sensitive.next().and_then(|s| s.coding.clone());
                    ("sensitive", coding.unwrap_or_else(|| "kept; l-diverse in every class".to_owned()), None)
                }
                Role::Attribute => ("attribute", "kept".to_owned(), None),
            };
            ColumnReport { name: c.name.clone(), role, treatment, loss }
        })
        .collect();
    Report {
        k,
        l: spec.l,
        max_suppression: spec.max_suppression,
        source_records: table.rows() as u64 + table.without_unit + table.over_cap,
        records,
        suppressed_records: eval.suppressed_rows,
        records_without_unit: table.without_unit,
        records_over_person_cap: table.over_cap,
        classes: kept.len() as u64,
        linked: table.linked,
        class_sizes,
        highest_risk: if smallest == 0 { 0.0 } else { 1.0 / smallest as f64 },
        average_risk: if records == 0 { 0.0 } else { risk_sum / records as f64 },
        risk_threshold: RISK_THRESHOLD,
        records_at_risk: if records == 0 { 0.0 } else { at_risk as f64 / records as f64 },
        loss: rounded(eval.loss),
        columns,
        nodes_evaluated: found.evaluated as u64,
        lattice: found.lattice as u64,
        base_suppressed_records: 0,
        warnings: Vec::new(),
        sources: Vec::new(),
    }
}

/// Information loss to two decimals: the exact figure depends on the exact distinct values of
/// the source, suppressed records included, and would be a faint channel about them.
fn rounded(loss: f64) -> f64 {
    (loss * 100.0).round() / 100.0
}
