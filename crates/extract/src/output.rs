//! The released rows: kept classes only, every column in its released form, shuffled; and the
//! Parquet file they are stored in.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use ring::hmac;

use crate::columns::Table;
use crate::search::Found;
use crate::{Result, Role, Spec};

pub(crate) fn release(table: &Table, spec: &Spec, found: &Found) -> Result<RecordBatch> {
    let eval = &found.eval;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &spec.key);
    // The kept rows, in an order drawn from the extract's key.
    let mut order: Vec<u32> =
        (0..table.rows() as u32).filter(|r| eval.kept[eval.class[*r as usize] as usize]).collect();
    let seed = hmac::sign(&key, b"\0shuffle");
    let mut seed32 = [0u8; 32];
    seed32.copy_from_slice(seed.as_ref());
    order.shuffle(&mut rand_chacha::ChaCha20Rng::from_seed(seed32));
    let order = UInt32Array::from(order);

    let mut fields = Vec::with_capacity(spec.columns.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(spec.columns.len());
    let mut qis = table.qis.iter().zip(&eval.levels);
    let mut sensitive = table.sensitive.iter();
    for c in &spec.columns {
        let source =
            || table.input.column_by_name(&c.name).cloned().ok_or_else(|| crate::Error::UnknownColumn(c.name.clone()));
        let full: ArrayRef = match &c.role {
            Role::Pseudonym => pseudonyms(&source()?, &key)?,
            Role::QuasiIdentifier { .. } => {
                let (qi, level) =
                    qis.next().ok_or_else(|| crate::Error::Spec("quasi-identifiers out of step".into()))?;
                let codes = &qi.codes[*level];
                let labels = &qi.labels[*level];
                Arc::new(
                    qi.base.iter().map(|b| labels[codes[*b as usize] as usize].as_deref()).collect::<StringArray>(),
                )
            }
            Role::Sensitive { .. } => {
                let s = sensitive.next().ok_or_else(|| crate::Error::Spec("sensitive columns out of step".into()))?;
                Arc::clone(&s.released)
            }
            Role::Attribute => source()?,
        };
        let released = take(full.as_ref(), &order, None)?;
        fields.push(Field::new(&c.name, released.data_type().clone(), true));
        arrays.push(released);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// HMAC-SHA256 of each unit's text under the extract's key, first 16 bytes in hex.
fn pseudonyms(array: &ArrayRef, key: &hmac::Key) -> Result<ArrayRef> {
    let text = cast(array, &DataType::Utf8)?;
    let out: StringArray = text
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(|v| veil_common::hex::encode(&hmac::sign(key, v.as_bytes()).as_ref()[..16])))
        .collect();
    Ok(Arc::new(out))
}

/// Writes the rows to a new Parquet file at `path` (zstd), synced to disk; an existing file is
/// never overwritten.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn write_parquet(batch: &RecordBatch, path: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io)?;
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut writer = ArrowWriter::try_new(file.try_clone().map_err(io)?, batch.schema(), Some(props))?;
    for start in (0..batch.num_rows()).step_by(64 * 1024) {
        writer.write(&batch.slice(start, (batch.num_rows() - start).min(64 * 1024)))?;
    }
    writer.close()?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// Writes a new Parquet file at `path` with no rows and one Boolean column, `column`: the
/// file of an extract that holds nothing.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn write_empty(column: &str, path: &Path) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Boolean, true)]));
    write_parquet(&RecordBatch::new_empty(schema), path)
}

/// Reads the named columns of a Parquet file (all rows), in batches.
///
/// # Errors
/// When the file cannot be read or lacks a column.
pub fn read_parquet(path: &Path, columns: &[String]) -> Result<Vec<RecordBatch>> {
    let (reader, _) = columns_of(path, |schema| {
        columns.iter().map(|c| schema.index_of(c).map_err(|_| crate::Error::UnknownColumn(c.clone()))).collect()
    })?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// A reader of the Parquet file at `path`, in batches of 64 Ki rows, of the columns `pick`
/// chooses by their positions in its schema; and those positions.
fn columns_of(
    path: &Path,
    pick: impl FnOnce(&Schema) -> Result<Vec<usize>>,
) -> Result<(ParquetRecordBatchReader, Vec<usize>)> {
    let file = std::fs::File::open(path).map_err(io)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let roots = pick(builder.schema())?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    Ok((builder.with_projection(mask).with_batch_size(64 * 1024).build()?, roots))
}

/// Per value of column `unit` of the Parquet file at `path` (as [`unit_key`] reads it; nulls left out), a hash
/// of every row holding it over `columns` (those the file has), whatever the rows' order: two
/// versions of a dataset give one unit the same hash exactly when its rows hold the same values
/// in those columns.
///
/// # Errors
/// The file cannot be read, or has no such column.
pub fn unit_row_hashes(path: &Path, unit: &str, columns: &[String]) -> Result<std::collections::HashMap<String, u64>> {
    use std::hash::{Hash, Hasher};
    // Only the unit and the columns asked for that the file has are read; the unit is hashed
    // too, so that a unit alone still has a row to count.
    let mut unit_at = 0;
    let (reader, roots) = columns_of(path, |schema| {
        unit_at = schema.index_of(unit).map_err(|_| crate::Error::UnknownColumn(unit.to_owned()))?;
        Ok((0..schema.fields().len()).filter(|&i| i == unit_at || columns.contains(schema.field(i).name())).collect())
    })?;
    let at = roots.iter().position(|&i| i == unit_at).unwrap_or(0);
    let mut hashes = std::collections::HashMap::new();
    let mut converter: Option<arrow::row::RowConverter> = None;
    for batch in reader {
        let batch = batch?;
        let converter = match &mut converter {
            Some(c) => c,
            None => converter.insert(arrow::row::RowConverter::new(
                batch.schema().fields().iter().map(|f| arrow::row::SortField::new(f.data_type().clone())).collect(),
            )?),
        };
        let rows = converter.convert_columns(batch.columns())?;
        let units = cast(batch.column(at), &DataType::Utf8)?;
        for (i, value) in units.as_string::<i32>().iter().enumerate() {
            let Some(value) = value else { continue };
            // A fixed-key hasher: the same in every run; rows added, so order does not count.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            rows.row(i).as_ref().hash(&mut h);
            let sum: &mut u64 = hashes.entry(unit_key(value)).or_default();
            *sum = sum.wrapping_add(h.finish());
        }
    }
    Ok(hashes)
}

/// A unit's value as the comparison of two departments' people reads it: its letters and
/// digits only, in upper case, without a leading run of letters set apart from the rest (a
/// system's or country's prefix, `CN-`), and a number without its leading zeros. A red team's
/// copies of a register wrote the same ids in lower case, with spaces around them, as `1` for
/// `00000001` (a spreadsheet's round trip), or behind `CN-`, and were not matched with the
/// original's people. Letters joined to the digits stay (`P0001` and `H0001` are two
/// registers' people); other rewritings (a suffix, a hash) are not matched.
pub fn unit_key(value: &str) -> String {
    let mut runs: Vec<&str> = value.split(|c: char| !c.is_alphanumeric()).filter(|r| !r.is_empty()).collect();
    while runs.len() > 1 && runs[0].chars().all(char::is_alphabetic) {
        runs.remove(0);
    }
    let key: String = runs.concat().to_uppercase();
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
        let digits = key.trim_start_matches('0');
        return if digits.is_empty() { "0".to_owned() } else { digits.to_owned() };
    }
    key
}

/// The values of the Parquet file at `path` in `columns` (those it has; nulls left out), each
/// as [`unit_key`] reads it: the people a dataset's identifiers name.
///
/// # Errors
/// The file cannot be read.
pub fn identifier_keys(path: &Path, columns: &[String]) -> Result<std::collections::HashSet<String>> {
    let mut keys = std::collections::HashSet::new();
    let (reader, roots) =
        columns_of(path, |schema| Ok(columns.iter().filter_map(|c| schema.index_of(c).ok()).collect()))?;
    if roots.is_empty() {
        return Ok(keys);
    }
    for batch in reader {
        for column in batch?.columns() {
            let text = cast(column, &DataType::Utf8)?;
            keys.extend(text.as_string::<i32>().iter().flatten().map(unit_key));
        }
    }
    Ok(keys)
}

/// About how many bytes building an extract holds for `columns` of the Parquet file at `path`:
/// their values as the file's metadata counts them before compression, four times over (the
/// rows as read, the encoded table the search walks, its generalized copies, the release).
/// From the file's footer only, before anything is read.
///
/// # Errors
/// The file cannot be read or is not Parquet.
pub fn build_bytes(path: &Path, columns: &[String]) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(io)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let mut bytes = 0u64;
    for group in builder.metadata().row_groups() {
        for chunk in group.columns() {
            let root = chunk.column_path().parts().first();
            if root.is_some_and(|r| columns.contains(r)) {
                bytes = bytes.saturating_add(u64::try_from(chunk.uncompressed_size()).unwrap_or(u64::MAX));
            }
        }
    }
    Ok(bytes.saturating_mul(4))
}

fn io(e: std::io::Error) -> crate::Error {
    crate::Error::Storage(e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn unit_keys_match_ids_written_otherwise() {
        for (a, b) in [
            ("P0001", " p0001 "),
            ("00000001", "1"),
            ("0", "000"),
            ("11010119500101001X", "11010119500101001x"),
            ("CN-000123", "123"),
            ("cn p0001", "P0001"),
            ("110105-19491231-002X", "11010519491231002X"),
        ] {
            assert_eq!(super::unit_key(a), super::unit_key(b), "{a} ~ {b}");
        }
        for (a, b) in [("P0001", "H0001"), ("P0001", "1"), ("A", "B")] {
            assert_ne!(super::unit_key(a), super::unit_key(b), "{a} ~ {b}");
        }
    }

    use super::*;

    #[test]
    fn pseudonyms_depend_on_the_key_and_hide_the_value() {
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["110101195001011234", "110101195001011234"]));
        let a = pseudonyms(&ids, &hmac::Key::new(hmac::HMAC_SHA256, &[1; 32])).unwrap();
        let b = pseudonyms(&ids, &hmac::Key::new(hmac::HMAC_SHA256, &[2; 32])).unwrap();
        let (a, b) = (a.as_string::<i32>(), b.as_string::<i32>());
        assert_eq!(a.value(0), a.value(1), "one person, one pseudonym within an extract");
        assert_ne!(a.value(0), b.value(0), "two extracts cannot be linked");
        assert_eq!(a.value(0).len(), 32);
        assert!(!a.value(0).contains("1101"));
        assert!(!a.is_null(0));
    }
}
