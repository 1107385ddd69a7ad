//! A stored copy of a dataset version keeping at most a cap of rows per person, written when
//! the version is registered.
//!
//! Dp answers (and anonymized joins) count at most `max_groups × max_rows` of one person's rows.
//! Capped while a query runs, every stored row is still read first, so a query over a dataset
//! where one person has 3,000 rows took measurably longer (a red team timed twins: 36–64 ms
//! against 16–26 ms) than over its twin without them, with no noise on the difference. Over this
//! copy a query reads at most the cap of anybody's rows, whatever they hold.
//!
//! The rows kept of a person with more than the cap are those whose values hash lowest, so
//! they are a function of that person's rows alone (not of the order of the file, nor of
//! anybody else). The hash is SipHash with fixed keys over the row's Arrow row encoding: an
//! order, not a secret (whoever knows a person's rows knows them already).

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, RandomState};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::write::{WriteReport, writer_properties};
use crate::{Error, Result};

/// Writes to `dst` the rows of the Parquet file `src`, at most `cap` of them per value of its
/// column `unit` (NULL one value, as in GROUP BY). Writes nothing and returns `None` when no
/// value has more than `cap` rows: the file is its own copy then.
///
/// Three passes over `src`: units counted (the unit column alone), the rows to keep of the
/// people over the cap chosen, the rows written. Memory: a count per person, and `cap` row
/// positions per person over the cap.
///
/// # Errors
/// [`Error::WriteFile`] when `src` cannot be read, has no column `unit`, or `dst` cannot be
/// written. The caller owns `dst` and removes it on error.
pub fn write_capped(src: &Path, unit: &str, cap: u64, dst: &Path) -> Result<Option<WriteReport>> {
    let cap = usize::try_from(cap.max(1)).unwrap_or(usize::MAX);
    let people = Units::new(src, unit)?;
    // Units are told apart by a 64-bit hash: two people colliding are capped together, which
    // only keeps fewer of their rows, never more.
    let mut rows_of: HashMap<u64, usize> = HashMap::new();
    for batch in people.read(src, true)? {
        for hash in people.hashes(&batch?)? {
            *rows_of.entry(hash).or_default() += 1;
        }
    }
    let over: HashSet<u64> = rows_of.into_iter().filter(|(_, n)| *n > cap).map(|(u, _)| u).collect();
    if over.is_empty() {
        return Ok(None);
    }

    // Per person over the cap, the `cap` rows whose hash is lowest (a max-heap of them).
    let order = BuildHasherDefault::<DefaultHasher>::default();
    let mut lowest: HashMap<u64, BinaryHeap<(u64, u64)>> = HashMap::with_capacity(over.len());
    let mut position = 0u64;
    let mut rows: Option<RowConverter> = None;
    for batch in people.read(src, false)? {
        let batch = batch?;
        let units = people.hashes(&batch)?;
        if units.iter().any(|u| over.contains(u)) {
            let converter = match rows.as_mut() {
                Some(c) => c,
                None => rows.insert(converter(&batch)?),
            };
            let encoded = converter.convert_columns(batch.columns()).map_err(crate::error::write_error)?;
            for (i, u) in units.iter().enumerate().filter(|(_, u)| over.contains(u)) {
                let heap = lowest.entry(*u).or_default();
                let key = (order.hash_one(encoded.row(i).as_ref()), position + i as u64);
                if heap.len() < cap {
                    heap.push(key);
                } else if heap.peek().is_some_and(|top| key < *top) {
                    heap.pop();
                    heap.push(key);
                }
            }
        }
        position += batch.num_rows() as u64;
    }
    let kept: HashSet<u64> = lowest.into_values().flat_map(|h| h.into_iter().map(|(_, p)| p)).collect();

    let file = File::create_new(dst).map_err(crate::error::write_error)?;
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&people.schema), Some(writer_properties()))
        .map_err(crate::error::write_error)?;
    let (mut position, mut written) = (0u64, 0u64);
    for batch in people.read(src, false)? {
        let batch = batch?;
        let units = people.hashes(&batch)?;
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| Some(!over.contains(&units[i]) || kept.contains(&(position + i as u64))))
            .collect();
        position += batch.num_rows() as u64;
        let kept = filter_record_batch(&batch, &keep).map_err(crate::error::write_error)?;
        written += kept.num_rows() as u64;
        writer.write(&kept).map_err(crate::error::write_error)?;
    }
    let file = writer.into_inner().map_err(crate::error::write_error)?;
    file.sync_all().map_err(crate::error::write_error)?;
    let bytes = file.metadata().map_err(crate::error::write_error)?.len();
    Ok(Some(WriteReport { rows: written, bytes }))
}

/// A row converter for every column of batches like `batch`.
fn converter(batch: &RecordBatch) -> Result<RowConverter> {
    let fields = batch.schema().fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
    RowConverter::new(fields).map_err(crate::error::write_error)
}

/// The unit column of a file, hashed per row.
struct Units {
    /// The file's schema.
    schema: SchemaRef,
    /// Its index among the file's columns.
    column: usize,
    converter: RowConverter,
    hasher: RandomState,
}

impl Units {
    fn new(src: &Path, unit: &str) -> Result<Self> {
        let file = File::open(src).map_err(crate::error::write_error)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(crate::error::write_error)?;
        let schema = Arc::clone(builder.schema());
        let column = schema.index_of(unit).map_err(|_| Error::WriteFile(format!("no column `{unit}` to cap by")))?;
        let converter = RowConverter::new(vec![SortField::new(schema.field(column).data_type().clone())])
            .map_err(crate::error::write_error)?;
        Ok(Self { schema, column, converter, hasher: RandomState::new() })
    }

    /// The batches of `src`: the unit column alone, or every column.
    fn read(&self, src: &Path, unit_only: bool) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
        let file = File::open(src).map_err(crate::error::write_error)?;
        let mut builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(crate::error::write_error)?;
        if unit_only {
            let mask = ProjectionMask::roots(builder.parquet_schema(), [self.column]);
            builder = builder.with_projection(mask);
        }
        let reader = builder.build().map_err(crate::error::write_error)?;
        Ok(reader.map(|b| b.map_err(crate::error::write_error)))
    }

    /// Each row's unit, hashed; in a batch of the unit column alone it is the first.
    fn hashes(&self, batch: &RecordBatch) -> Result<Vec<u64>> {
        let column = if batch.num_columns() == 1 { 0 } else { self.column };
        let rows =
            self.converter.convert_columns(&[batch.column(column).clone()]).map_err(crate::error::write_error)?;
        Ok(rows.iter().map(|r| self.hasher.hash_one(r.as_ref())).collect())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// A file of `(person, n)` rows, `per_batch` to a batch.
    fn write(path: &Path, rows: &[(Option<&str>, i64)], per_batch: usize) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("person", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let mut writer = ArrowWriter::try_new(File::create(path).unwrap(), Arc::clone(&schema), None).unwrap();
        for chunk in rows.chunks(per_batch) {
            let people: ArrayRef = Arc::new(StringArray::from(chunk.iter().map(|r| r.0).collect::<Vec<_>>()));
            let n: ArrayRef = Arc::new(Int64Array::from(chunk.iter().map(|r| r.1).collect::<Vec<_>>()));
            writer.write(&RecordBatch::try_new(Arc::clone(&schema), vec![people, n]).unwrap()).unwrap();
        }
        writer.close().unwrap();
    }

    fn read(path: &Path) -> Vec<(Option<String>, i64)> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let people = batch.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let n = batch.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..batch.num_rows() {
                out.push((people.is_valid(i).then(|| people.value(i).to_owned()), n.value(i)));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn each_person_keeps_at_most_the_cap_and_the_same_rows_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        // `heavy` has 50 rows, `null` (NULL units, one person) 4, the others 1 or 2.
        let mut rows: Vec<(Option<&str>, i64)> = (0..50).map(|i| (Some("heavy"), i)).collect();
        rows.extend([(Some("a"), 1), (Some("b"), 2), (Some("b"), 3), (None, 4), (None, 5), (None, 6), (None, 7)]);
        write(&dir.path().join("src.parquet"), &rows, 7);
        let report = write_capped(&dir.path().join("src.parquet"), "person", 3, &dir.path().join("capped.parquet"));
        let report = report.unwrap().expect("people over the cap");
        let capped = read(&dir.path().join("capped.parquet"));
        assert_eq!(report.rows, capped.len() as u64);
        let count = |who: Option<&str>| capped.iter().filter(|(p, _)| p.as_deref() == who).count();
        assert_eq!((count(Some("heavy")), count(None), count(Some("a")), count(Some("b"))), (3, 3, 1, 2));

        // The same rows in another order, in other batches: the same rows kept.
        rows.reverse();
        write(&dir.path().join("reversed.parquet"), &rows, 11);
        write_capped(&dir.path().join("reversed.parquet"), "person", 3, &dir.path().join("again.parquet"))
            .unwrap()
            .expect("people over the cap");
        assert_eq!(read(&dir.path().join("again.parquet")), capped);
    }

    #[test]
    fn a_file_with_nobody_over_the_cap_needs_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("src.parquet"), &[(Some("a"), 1), (Some("a"), 2), (Some("b"), 3)], 2);
        let dst = dir.path().join("capped.parquet");
        assert!(write_capped(&dir.path().join("src.parquet"), "person", 2, &dst).unwrap().is_none());
        assert!(!dst.exists());
        assert!(write_capped(&dir.path().join("src.parquet"), "nobody", 2, &dst).is_err());
    }
}
