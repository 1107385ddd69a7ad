//! Writing a [`Source`] as one Parquet file.

use std::fs::File;
use std::path::Path;

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::{Result, Source};

/// What a written file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteReport {
    /// Rows written.
    pub rows: u64,
    /// Size of the file on disk.
    pub bytes: u64,
}

/// Rows per row group. The writer holds one row group's encoded pages in memory, so this and
/// the batch size bound ingestion memory.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Batches read ahead of the writer: enough to keep both threads busy, few enough that memory
/// stays a few batches.
const READ_AHEAD: usize = 2;

/// How every dataset file is written: ZSTD, row groups of [`ROW_GROUP_ROWS`].
pub(crate) fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

/// Writes every batch of `source` to a new file at `dst` and fsyncs it.
///
/// `inspect` sees each batch before it is written and may refuse it; the first error stops the
/// write. The caller owns `dst` and removes it on error.
///
/// # Errors
/// Any read error of the source, any error of `inspect`, or [`Error::WriteFile`].
pub fn write_parquet(
    source: Source,
    dst: &Path,
    mut inspect: impl FnMut(&arrow::array::RecordBatch) -> Result<()>,
) -> Result<WriteReport> {
    let file = File::create_new(dst).map_err(crate::error::write_error)?;
    let mut writer =
        ArrowWriter::try_new(file, source.schema, Some(writer_properties())).map_err(crate::error::write_error)?;
    let mut rows = 0u64;
    // Reading (decoding, parsing, casting) and writing (checking, encoding, compressing) each
    // take about half the time: the batches are read on a thread of their own, a few ahead,
    // while this one writes. A write that fails drops the receiver, and the reader stops at
    // its next batch.
    let batches = source.batches;
    std::thread::scope(|scope| -> Result<()> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(READ_AHEAD);
        scope.spawn(move || {
            for batch in batches {
                let failed = batch.is_err();
                if sender.send(batch).is_err() || failed {
                    break;
                }
            }
        });
        for batch in receiver {
            let batch = batch?;
            representable(&batch, rows)?;
            inspect(&batch)?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).map_err(crate::error::write_error)?;
        }
        Ok(())
    })?;
    let file = writer.into_inner().map_err(crate::error::write_error)?;
    file.sync_all().map_err(crate::error::write_error)?;
    let bytes = file.metadata().map_err(crate::error::write_error)?.len();
    Ok(WriteReport { rows, bytes })
}

/// The days since 1970 of the first and the day after the last date queries compute on:
/// 1678-01-01 and 2262-01-01.
const DAYS: std::ops::Range<i64> = -106_650..106_651;

/// Checks that every date and time of `batch` (its first row the `before + 1`-th of the
/// file) is within [`DAYS`], and that every floating-point number is finite.
///
/// Why the dates: DataFusion computes `date_trunc`, and reads a date as a timestamp, in
/// nanoseconds since 1970 (an i64: 1677-09-21 to 2262-04-11), and fails the whole query on a
/// value beyond. A failure is an answer: with one person's `9999-12-31` or `2300-01-01` in a
/// register, every query grouping by its month or with a range on it failed, in every mode,
/// and without them it did not (a red team, 2026-12-05: a twin dataset told apart every time).
/// A year inside both ends keeps the truncation to a year, a quarter or a week inside too.
///
/// Why the numbers: a NaN passes any clamp to the declared bounds (it compares neither below
/// nor above), so one person's NaN made every sum of their group NULL; an infinity beside
/// others made it NaN. Either was one exact bit about that person (a red team, 2026-12-05,
/// found the column accepted them).
fn representable(batch: &arrow::array::RecordBatch, before: u64) -> Result<()> {
    use arrow::array::AsArray;
    use arrow::compute::cast;
    use arrow::datatypes::{DataType, Date32Type, Float64Type, Int64Type, TimeUnit};
    let row = |at: usize| before + at as u64 + 1;
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_floating() {
            // Every float type widens to Float64 exactly, NaN and infinities included.
            let wide = cast(column, &DataType::Float64).map_err(crate::error::write_error)?;
            if let Some(at) = wide.as_primitive::<Float64Type>().iter().position(|v| v.is_some_and(|v| !v.is_finite()))
            {
                return Err(crate::Error::NotFinite { column: field.name().clone(), row: row(at) });
            }
            continue;
        }
        let per_day: i64 = match field.data_type() {
            DataType::Date32 => 1,
            DataType::Date64 | DataType::Timestamp(TimeUnit::Millisecond, _) => 86_400_000,
            DataType::Timestamp(TimeUnit::Second, _) => 86_400,
            DataType::Timestamp(TimeUnit::Microsecond, _) => 86_400_000_000,
            DataType::Timestamp(TimeUnit::Nanosecond, _) => 86_400_000_000_000,
            _ => continue,
        };
        let outside = |v: i64| !DAYS.contains(&v.div_euclid(per_day));
        let first = if let Some(dates) = column.as_primitive_opt::<Date32Type>() {
            dates.iter().position(|d| d.is_some_and(|d| outside(i64::from(d))))
        } else {
            let cast = cast(column, &DataType::Int64).map_err(crate::error::write_error)?;
            cast.as_primitive::<Int64Type>().iter().position(|v| v.is_some_and(outside))
        };
        if let Some(at) = first {
            return Err(crate::Error::TimeOutOfRange { column: field.name().clone(), row: row(at) });
        }
    }
    Ok(())
}
