//! De-identified answers (GB/T 37964-2019): identifiers become keyed pseudonyms, quasi-identifiers
//! are generalised by the steward's declared rule, and rows whose quasi-identifier combination
//! holds fewer than k distinct people are withheld. The privacy units the guard carried to the
//! output are used for the count and then dropped; they never leave the broker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray, UInt64Array};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use ring::hmac;
use veil_common::Generalization;
use veil_guard::OutputRole;

use crate::Result;
use crate::engine::internal;

/// What to do to an answer.
pub(crate) struct Deidentify<'a> {
    /// Role of each output column (without the unit columns), in order.
    pub(crate) roles: &'a [OutputRole],
    /// Names of the hidden privacy-unit columns at the end of the answer.
    pub(crate) unit_columns: &'a [String],
    pub(crate) k: u64,
    pub(crate) key: &'a [u8; 32],
}

/// Applies `job` to the answer; returns one batch and the number of withheld classes.
pub(crate) fn apply(job: &Deidentify<'_>, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<(RecordBatch, u64)> {
    let all = concat_batches(schema, batches).map_err(internal)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, job.key);
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut class_key: Vec<ArrayRef> = Vec::new();
    for (i, role) in job.roles.iter().enumerate() {
        let field = schema.field(i);
        let array = all.column(i);
        let out = match role {
            OutputRole::Pseudonym => pseudonymize(array, &key)?,
            OutputRole::QuasiIdentifier(Some(rule)) => generalize(array, *rule)?,
            OutputRole::QuasiIdentifier(None) | OutputRole::Plain => Arc::clone(array),
        };
        if matches!(role, OutputRole::QuasiIdentifier(_)) {
            class_key.push(Arc::clone(&out));
        }
        fields.push(Field::new(field.name(), out.data_type().clone(), true));
        columns.push(out);
    }
    let units: Vec<&ArrayRef> = job
        .unit_columns
        .iter()
        .map(|n| schema.index_of(n).map(|i| all.column(i)))
        .collect::<Result<_, _>>()
        .map_err(internal)?;
    let (keep, suppressed) = k_anonymous(&class_key, &units, all.num_rows(), job.k)?;
    let out = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(internal)?;
    let out = filter_record_batch(&out, &keep).map_err(internal)?;
    Ok((out, suppressed))
}

/// Which rows belong to a class with at least `k` distinct people in every unit column.
fn k_anonymous(class_key: &[ArrayRef], units: &[&ArrayRef], rows: usize, k: u64) -> Result<(BooleanArray, u64)> {
    if units.is_empty() || k == 0 {
        return Ok((BooleanArray::from(vec![true; rows]), 0));
    }
    let classes: Vec<Vec<u8>> = if class_key.is_empty() {
        vec![Vec::new(); rows]
    } else {
        let fields = class_key.iter().map(|a| SortField::new(a.data_type().clone())).collect();
        let converter = RowConverter::new(fields).map_err(internal)?;
        let converted = converter.convert_columns(class_key).map_err(internal)?;
        converted.iter().map(|r| r.as_ref().to_vec()).collect()
    };
    let units: Vec<&UInt64Array> = units
        .iter()
        .map(|u| u.as_primitive_opt::<UInt64Type>().ok_or_else(|| internal("privacy units are not hashed")))
        .collect::<Result<_>>()?;
    let mut people: HashMap<&[u8], Vec<HashSet<u64>>> = HashMap::new();
    for (row, class) in classes.iter().enumerate() {
        let sets = people.entry(class.as_slice()).or_insert_with(|| vec![HashSet::new(); units.len()]);
        for (set, unit) in sets.iter_mut().zip(&units) {
            if unit.is_valid(row) {
                set.insert(unit.value(row));
            }
        }
    }
    let large = |class: &[u8]| people.get(class).is_some_and(|sets| sets.iter().all(|s| s.len() as u64 >= k));
    let keep: Vec<bool> = classes.iter().map(|c| large(c)).collect();
    let suppressed = people.keys().filter(|c| !large(c)).count() as u64;
    Ok((BooleanArray::from(keep), suppressed))
}

/// Any array as text (dates as `YYYY-MM-DD`, numbers as written).
fn text(a: &ArrayRef) -> Result<StringArray> {
    let cast = cast(a, &DataType::Utf8).map_err(internal)?;
    cast.as_any().downcast_ref::<StringArray>().cloned().ok_or_else(|| internal("expected text"))
}

/// HMAC-SHA256 of the value's text under the scope's key, first 16 bytes in hex.
fn pseudonymize(array: &ArrayRef, key: &hmac::Key) -> Result<ArrayRef> {
    let out: StringArray = text(array)?
        .iter()
        .map(|v| v.map(|v| veil_common::hex::encode(&hmac::sign(key, v.as_bytes()).as_ref()[..16])))
        .collect();
    Ok(Arc::new(out))
}

/// Applies a declared generalization; the result is text.
fn generalize(array: &ArrayRef, rule: Generalization) -> Result<ArrayRef> {
    let out: StringArray = match rule {
        Generalization::Month | Generalization::Year => {
            let width = if rule == Generalization::Month { 7 } else { 4 };
            text(array)?.iter().map(|v| v.map(|v| v.chars().take(width).collect::<String>())).collect()
        }
        Generalization::Prefix(n) => {
            text(array)?.iter().map(|v| v.map(|v| v.chars().take(n as usize).collect::<String>())).collect()
        }
        Generalization::Band(width) => {
            let numbers = cast(array, &DataType::Float64).map_err(internal)?;
            let numbers = numbers
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Float64Array>()
                .ok_or_else(|| internal("expected numbers"))?;
            let w = f64::from(width);
            numbers
                .iter()
                .map(|v| {
                    v.filter(|v| v.is_finite()).map(|v| {
                        let lo = (v / w).floor() * w;
                        format!("{lo}-{}", lo + w - 1.0)
                    })
                })
                .collect()
        }
        Generalization::Suppress => (0..array.len()).map(|_| Some("*")).collect(),
    };
    Ok(Arc::new(out))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Date32Array, Int64Array};

    use super::*;

    #[test]
    fn generalizations_coarsen_as_declared() {
        let dates: ArrayRef = Arc::new(Date32Array::from(vec![Some(19_000), None]));
        let month = generalize(&dates, Generalization::Month).unwrap();
        let month = month.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(month.value(0), "2022-01");
        assert!(month.is_null(1));
        let ages: ArrayRef = Arc::new(Int64Array::from(vec![63, 65, 69]));
        let bands = generalize(&ages, Generalization::Band(5)).unwrap();
        let bands = bands.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(bands.iter().flatten().collect::<Vec<_>>(), vec!["60-64", "65-69", "65-69"]);
    }

    #[test]
    fn pseudonyms_depend_on_the_key_and_hide_the_value() {
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["110101195001011234", "110101195001011234"]));
        let a = pseudonymize(&ids, &hmac::Key::new(hmac::HMAC_SHA256, &[1; 32])).unwrap();
        let b = pseudonymize(&ids, &hmac::Key::new(hmac::HMAC_SHA256, &[2; 32])).unwrap();
        let a = a.as_any().downcast_ref::<StringArray>().unwrap();
        let b = b.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(a.value(0), a.value(1), "one person, one pseudonym within a scope");
        assert_ne!(a.value(0), b.value(0), "two scopes cannot link");
        assert_eq!(a.value(0).len(), 32);
        assert!(!a.value(0).contains("1101"));
    }

    #[test]
    fn classes_with_fewer_than_k_people_are_withheld() {
        let class: ArrayRef = Arc::new(StringArray::from(vec!["a", "a", "a", "b", "b"]));
        // Class a: three rows of two people; class b: two rows of two people (units arrive hashed).
        let units: ArrayRef = Arc::new(UInt64Array::from(vec![1, 1, 2, 3, 4]));
        let (keep, suppressed) = k_anonymous(&[class], &[&units], 5, 2).unwrap();
        assert_eq!(keep.iter().flatten().collect::<Vec<_>>(), vec![true; 5]);
        assert_eq!(suppressed, 0);
        let class: ArrayRef = Arc::new(StringArray::from(vec!["a", "a", "a", "b", "b"]));
        let units: ArrayRef = Arc::new(UInt64Array::from(vec![1, 1, 1, 3, 4]));
        let (keep, suppressed) = k_anonymous(&[class], &[&units], 5, 2).unwrap();
        assert_eq!(keep.iter().flatten().collect::<Vec<_>>(), vec![false, false, false, true, true]);
        assert_eq!(suppressed, 1);
    }
}
