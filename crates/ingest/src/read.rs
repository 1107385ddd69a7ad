//! One batch iterator over every supported input format.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchReader, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::reader::{FileReader, StreamReader};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::csv_infer::{self, DeclaredType};
use crate::{Error, Result, SourceFormat};

/// How to read an input file.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Rows per record batch; bounds memory together with the writer's row-group size.
    pub batch_size: usize,
    /// How many CSV records to sample when inferring column types.
    pub csv_sample_rows: usize,
    /// Column types the steward declared (CSV and spreadsheets; other formats carry their own).
    pub declared: HashMap<String, DeclaredType>,
    /// The sheet of a spreadsheet to read (the first when `None`).
    pub sheet: Option<String>,
    /// The CSV's encoding as declared (detected when `None`).
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// The CSV's field separator as declared (detected from the header line when `None`).
    pub delimiter: Option<u8>,
    /// Per date or timestamp column, the strftime form its values are written in (the common
    /// forms are detected row by row where none is declared).
    pub formats: HashMap<String, String>,
}

impl ReadOptions {
    /// Options with the default batch size and sample, and the given declared types.
    pub fn with_declared(declared: HashMap<String, DeclaredType>) -> Self {
        Self {
            batch_size: 8192,
            csv_sample_rows: 10_000,
            declared,
            sheet: None,
            encoding: None,
            delimiter: None,
            formats: HashMap::new(),
        }
    }
}

/// An opened input: its schema (known before any batch is read) and its batches.
pub struct Source {
    /// The schema every batch has.
    pub schema: SchemaRef,
    /// The batches, read lazily.
    pub batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
}

/// Opens `path` as `format`.
///
/// # Errors
/// A [`Error`] naming what is wrong with the file: an unusable CSV header, an undecodable
/// Parquet or Arrow file, or a column type Veil does not store.
pub fn open(path: &Path, format: SourceFormat, options: &ReadOptions) -> Result<Source> {
    let source = match format {
        SourceFormat::Csv => open_csv(path, options)?,
        SourceFormat::Spreadsheet => {
            // The sheet as a CSV copy, kept as long as its batches are read.
            let mut copy = beside(path)?;
            crate::spreadsheet::to_csv(path, options.sheet.as_deref(), copy.as_file_mut())?;
            let Source { schema, batches } = open_csv(copy.path(), options)?;
            let batches = batches.inspect(move |_| {
                let _keep = &copy;
            });
            Source { schema, batches: Box::new(batches) }
        }
        SourceFormat::Parquet => {
            let file = File::open(path).map_err(Error::ReadFile)?;
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| decode_error("Parquet", e.to_string()))?;
            // Every page's declared sizes, before a page is decoded; batches as long as they
            // may be for a batch to stay within its bound.
            let rows = crate::parquet_pages::check(path, builder.metadata(), options.batch_size)?;
            let reader = builder.with_batch_size(rows).build().map_err(|e| decode_error("Parquet", e.to_string()))?;
            from_reader(reader, "Parquet")
        }
        SourceFormat::ArrowFile => {
            check_ipc_lengths(path, true)?;
            let file = File::open(path).map_err(Error::ReadFile)?;
            let reader = FileReader::try_new(BufReader::new(file), None)
                .map_err(|e| decode_error("Arrow IPC", e.to_string()))?;
            from_reader(reader, "Arrow IPC")
        }
        SourceFormat::ArrowStream => {
            check_ipc_lengths(path, false)?;
            let file = File::open(path).map_err(Error::ReadFile)?;
            let reader = StreamReader::try_new(BufReader::new(file), None)
                .map_err(|e| decode_error("Arrow IPC", e.to_string()))?;
            from_reader(reader, "Arrow IPC")
        }
    };
    if source.schema.fields().len() > crate::MAX_COLUMNS {
        return Err(decode_error(
            format.as_str(),
            format!(
                "the file has {} columns; at most {} are accepted",
                source.schema.fields().len(),
                crate::MAX_COLUMNS
            ),
        ));
    }
    for field in source.schema.fields() {
        if !is_storable(field.data_type()) {
            return Err(Error::UnsupportedType {
                column: field.name().clone(),
                data_type: field.data_type().to_string(),
            });
        }
    }
    Ok(source)
}

/// Checks that every length an Arrow IPC file (`file_format`) or stream declares for its
/// messages lies within the file, before a reader allocates what they declare: arrow's readers
/// allocate a message's declared body before reading it, and a 520-byte stream declaring a
/// 2 GiB body cost 2 GiB of memory before its refusal. A stream: walks its framing (an optional
/// continuation marker, the metadata's length, the metadata, the body the metadata declares)
/// up to its end marker. A file: the blocks its footer lists, which is what its reader reads
/// by. Anything it cannot follow is left for the reader to refuse.
fn check_ipc_lengths(path: &Path, file_format: bool) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let beyond = |what: String| {
        decode_error("Arrow IPC", format!("{what}, beyond the end of the file; the file is damaged or not Arrow"))
    };
    let mut file = File::open(path).map_err(Error::ReadFile)?;
    let size = file.metadata().map_err(Error::ReadFile)?.len();
    let word = |file: &mut File, at: u64| -> Option<[u8; 4]> {
        let mut w = [0u8; 4];
        file.seek(SeekFrom::Start(at)).ok()?;
        file.read_exact(&mut w).ok()?;
        Some(w)
    };
    let mut at: u64 = 0;
    while !file_format && let Some(first) = word(&mut file, at) {
        let (length, header) = if first == [0xff; 4] {
            match word(&mut file, at + 4) {
                Some(w) => (i32::from_le_bytes(w), 8),
                None => break,
            }
        } else {
            (i32::from_le_bytes(first), 4)
        };
        if length <= 0 {
            break; // the end marker, or what the reader will refuse
        }
        let metadata_end = at + header + length as u64;
        if metadata_end > size {
            return Err(beyond(format!("a message declares {length} bytes of metadata at byte {at}")));
        }
        let mut metadata = vec![0u8; length as usize];
        if file.read_exact(&mut metadata).is_err() {
            break;
        }
        let Ok(message) = arrow::ipc::root_as_message(&metadata) else { break };
        let body = u64::try_from(message.bodyLength()).unwrap_or(u64::MAX);
        if body > size - metadata_end {
            return Err(beyond(format!("a message at byte {at} declares a body of {} bytes", message.bodyLength())));
        }
        at = metadata_end + body;
    }
    if file_format && size >= 18 {
        // The footer: its length and the magic in the last 10 bytes.
        let Some(length) = word(&mut file, size - 10).map(i32::from_le_bytes) else { return Ok(()) };
        let length = u64::try_from(length).unwrap_or(u64::MAX);
        if length > size - 18 {
            return Err(beyond(format!("the footer declares {length} bytes")));
        }
        let mut footer = vec![0u8; length as usize];
        if file.seek(SeekFrom::Start(size - 10 - length)).is_err() || file.read_exact(&mut footer).is_err() {
            return Ok(());
        }
        let Ok(footer) = arrow::ipc::root_as_footer(&footer) else { return Ok(()) };
        let blocks = footer.recordBatches().into_iter().flatten().chain(footer.dictionaries().into_iter().flatten());
        for block in blocks {
            let end = [block.offset(), i64::from(block.metaDataLength()), block.bodyLength()]
                .iter()
                .try_fold(0u64, |sum, part| sum.checked_add(u64::try_from(*part).ok()?));
            if end.is_none_or(|end| end > size) {
                return Err(beyond(format!("the footer lists a block at byte {}", block.offset())));
            }
        }
    }
    Ok(())
}

/// A [`Source`] over any Arrow record batch reader, its errors reported as `format`'s.
fn from_reader(reader: impl RecordBatchReader + Send + 'static, format: &'static str) -> Source {
    let schema = reader.schema();
    Source { schema, batches: Box::new(reader.map(move |b| b.map_err(|e| decode_error(format, e.to_string())))) }
}

fn decode_error(format: &'static str, message: String) -> Error {
    Error::Decode { format, message }
}

/// Flat scalar types only: the guard reasons about columns, and a nested or binary column would
/// carry values it cannot see into. A decimal's scale lies between 0 and its precision, as
/// Parquet stores decimals (`Decimal128(15, -5)` passed here and failed the write, an internal
/// error, a red team, 2026-12-06).
fn is_storable(data_type: &DataType) -> bool {
    match data_type {
        // A dictionary of decimals was stored, and every query over the dataset then failed (a
        // red team, 2026-12-06): decimals are stored plain.
        DataType::Dictionary(_, value) => {
            is_storable(value) && !matches!(**value, DataType::Decimal128(..) | DataType::Decimal256(..))
        }
        DataType::Decimal128(precision, scale) | DataType::Decimal256(precision, scale) => {
            (0..=i16::from(*precision)).contains(&i16::from(*scale))
        }
        t => {
            t.is_primitive()
                || matches!(t, DataType::Boolean | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        }
    }
}

/// CSV is read as text by `arrow::csv` (which cannot fail on a value) and then cast column by
/// column, so that a value that does not parse is reported by line and column without quoting it
/// (the reader's own parse errors quote the value and the whole row).
fn open_csv(path: &Path, options: &ReadOptions) -> Result<Source> {
    // Read as UTF-8: the file itself, or a decoded copy that lives as long as the batches do.
    let copy = utf8_copy(path, options.encoding)?;
    let path = copy.as_ref().map_or(path, |c| c.as_ref());
    let delimiter = match options.delimiter {
        Some(declared) => declared,
        None => csv_infer::sniff_delimiter(path)?,
    };
    check_quotes_closed(path, delimiter)?;
    let layout = csv_infer::infer(path, delimiter, &options.declared, options.csv_sample_rows)?;
    let text_schema =
        Arc::new(Schema::new(layout.names.iter().map(|n| Field::new(n, DataType::Utf8, true)).collect::<Vec<_>>()));
    let target_schema = Arc::new(Schema::new(
        layout.names.iter().zip(&layout.types).map(|(n, t)| Field::new(n, t.data_type(), true)).collect::<Vec<_>>(),
    ));
    let file = File::open(path).map_err(Error::ReadFile)?;
    let reader = arrow::csv::ReaderBuilder::new(text_schema)
        .with_header(true)
        .with_delimiter(layout.delimiter)
        .with_batch_size(options.batch_size)
        .build(BufReader::new(file))
        .map_err(|e| csv_structure_error(&e))?;
    let types = layout.types.clone();
    let names = layout.names.clone();
    let forms: Vec<Option<String>> = names.iter().map(|n| options.formats.get(n).cloned()).collect();
    let schema = Arc::clone(&target_schema);
    let mut rows_before: u64 = 0;
    let batches = reader.map(move |batch| {
        let _keep = &copy;
        let batch = batch.map_err(|e| csv_structure_error(&e))?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
        // The earliest bad value of the batch, by row then column: (row, column index).
        let mut first_bad: Option<(usize, usize)> = None;
        for (i, text) in batch.columns().iter().enumerate() {
            let target = types[i].data_type();
            if target == DataType::Utf8 {
                columns.push(Arc::clone(text));
                continue;
            }
            // Dates in any of the forms hand-entered registers mix, row by row, as ISO.
            let normalized: ArrayRef = match (&target, text.as_any().downcast_ref::<StringArray>()) {
                // In the declared form: a value not in it becomes text no cast reads, so it is
                // reported like any bad value (by line and column, never the value).
                (DataType::Date32 | DataType::Timestamp(..), Some(strings)) if forms[i].is_some() => {
                    let form = forms[i].as_deref().unwrap_or_default();
                    let timed = matches!(target, DataType::Timestamp(..));
                    Arc::new(
                        strings
                            .iter()
                            .map(|v| {
                                v.map(|v| {
                                    csv_infer::in_form(v, form, timed).unwrap_or_else(|| "not in the form".to_owned())
                                })
                            })
                            .collect::<StringArray>(),
                    )
                }
                (DataType::Date32 | DataType::Timestamp(..), Some(strings)) => {
                    Arc::new(strings.iter().map(|v| v.map(csv_infer::normalize_date)).collect::<StringArray>())
                }
                // Numbers with thousands separators or full-width digits, as plain ones.
                (DataType::Int64 | DataType::Float64, Some(strings)) => {
                    Arc::new(strings.iter().map(|v| v.map(csv_infer::normalize_number)).collect::<StringArray>())
                }
                _ => Arc::clone(text),
            };
            let text = &normalized;
            let cast =
                cast_with_options(text, &target, &CastOptions { safe: true, ..Default::default() }).map_err(|_| {
                    Error::CsvValue {
                        line: rows_before + 2,
                        column: names[i].clone(),
                        expected: expected(types[i], forms[i].as_deref()),
                    }
                })?;
            if cast.null_count() != text.null_count() {
                // `safe` casting turns an unparsable value into a null: the first new null is
                // this column's first bad value.
                let row = (0..text.len()).find(|&r| text.is_valid(r) && cast.is_null(r)).unwrap_or(0);
                if first_bad.is_none_or(|(r, _)| row < r) {
                    first_bad = Some((row, i));
                }
            }
            columns.push(cast);
        }
        if let Some((row, i)) = first_bad {
            // Line = records before + 1 for the header + 1 for 1-based.
            return Err(Error::CsvValue {
                line: rows_before + row as u64 + 2,
                column: names[i].clone(),
                expected: expected(types[i], forms[i].as_deref()),
            });
        }
        rows_before += batch.num_rows() as u64;
        RecordBatch::try_new(Arc::clone(&target_schema), columns)
            .map_err(|e| Error::Csv(format!("could not assemble a batch: {e}")))
    });
    Ok(Source { schema, batches: Box::new(batches) })
}

/// What a CSV value error says the column expects: its type, and for dates the forms read.
fn expected(t: DeclaredType, form: Option<&str>) -> String {
    match (t, form) {
        (DeclaredType::Date | DeclaredType::Timestamp, Some(form)) => format!("{} in the form {form}", t.as_str()),
        (DeclaredType::Date | DeclaredType::Timestamp, None) => format!("{} ({})", t.as_str(), csv_infer::DATE_FORMS),
        (t, _) => t.as_str().to_owned(),
    }
}

/// A UTF-8 copy of `path` when it is not plain UTF-8 already: a UTF-8, UTF-16LE or UTF-16BE
/// file with a byte-order mark (the mark dropped, so the first column keeps its name), or a
/// GB18030 (GBK) file, as Chinese office software saves CSV. `None` when the file is UTF-8
/// without a mark. Bytes that decode in none of these are refused with their line.
/// A temporary CSV file beside `path` (the upload's own directory, inside the data directory),
/// removed when dropped: a decoded copy of a steward's file stays where the file is.
fn beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let builder = tempfile::Builder::new().suffix(".csv").to_owned();
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => builder.tempfile_in(dir),
        None => builder.tempfile(),
    }
    .map_err(crate::error::write_error)
}

/// The CSV at `path` as UTF-8: `None` when it is UTF-8 already (read in place), else a decoded
/// copy beside it, from the `declared` encoding, or the one its byte-order mark names, or
/// GB18030 when it is not UTF-8.
fn utf8_copy(path: &Path, declared: Option<&'static encoding_rs::Encoding>) -> Result<Option<tempfile::TempPath>> {
    use encoding_rs::{Encoding, GB18030, UTF_8, UTF_16BE, UTF_16LE};
    if let Some(encoding) = declared {
        let named = |e: Error| match e {
            Error::CsvEncoding { line } => Error::CsvDeclaredEncoding { line, encoding: encoding.name() },
            other => other,
        };
        let copy = beside(path)?;
        let (file, copy_path) = copy.into_parts();
        let mut out = std::io::BufWriter::new(file);
        decode(path, encoding, Some(&mut out)).map_err(named)?;
        std::io::Write::flush(&mut out).map_err(crate::error::write_error)?;
        return Ok(Some(copy_path));
    }
    let mut head = [0u8; 3];
    let read =
        std::io::Read::read(&mut File::open(path).map_err(Error::ReadFile)?, &mut head).map_err(Error::ReadFile)?;
    let marked: Option<&'static Encoding> = match &head[..read] {
        [0xEF, 0xBB, 0xBF, ..] => Some(UTF_8),
        [0xFF, 0xFE, ..] => Some(UTF_16LE),
        [0xFE, 0xFF, ..] => Some(UTF_16BE),
        _ => None,
    };
    let encoding = match marked {
        Some(encoding) => encoding,
        None => match decode(path, UTF_8, None) {
            Ok(()) => return Ok(None),
            Err(Error::CsvEncoding { .. }) => GB18030,
            Err(e) => return Err(e),
        },
    };
    let copy = beside(path)?;
    let (file, copy_path) = copy.into_parts();
    let mut out = std::io::BufWriter::new(file);
    decode(path, encoding, Some(&mut out))?;
    std::io::Write::flush(&mut out).map_err(crate::error::write_error)?;
    Ok(Some(copy_path))
}

/// Decodes `path` from `encoding` (dropping a byte-order mark) into `out`, or only checks that
/// it decodes; a malformed sequence is [`Error::CsvEncoding`] with its line.
///
/// Why by hand: `encoding_rs` decodes buffers; this is its streaming loop over a file.
fn decode(
    path: &Path,
    encoding: &'static encoding_rs::Encoding,
    mut out: Option<&mut dyn std::io::Write>,
) -> Result<()> {
    use encoding_rs::DecoderResult;
    use std::io::Read;
    let mut decoder = encoding.new_decoder_with_bom_removal();
    let mut reader = BufReader::with_capacity(1 << 16, File::open(path).map_err(Error::ReadFile)?);
    let (mut input, mut output) = (vec![0u8; 1 << 16], vec![0u8; 1 << 18]);
    let mut line = 1u64;
    loop {
        let n = reader.read(&mut input).map_err(Error::ReadFile)?;
        let last = n == 0;
        let mut src = &input[..n];
        loop {
            let (result, read, written) = decoder.decode_to_utf8_without_replacement(src, &mut output, last);
            let decoded = &output[..written];
            if let Some(out) = out.as_mut() {
                out.write_all(decoded).map_err(crate::error::write_error)?;
            }
            line += decoded.iter().filter(|b| **b == b'\n').count() as u64;
            src = &src[read..];
            match result {
                DecoderResult::InputEmpty => break,
                DecoderResult::OutputFull => continue,
                DecoderResult::Malformed(..) => return Err(Error::CsvEncoding { line }),
            }
        }
        if last {
            return Ok(());
        }
    }
}

/// Refuses a CSV file that ends inside a quoted field: the rest of the file after a stray quote
/// would otherwise become one value, silently.
///
/// Why a scan of our own: neither `arrow::csv` nor the `csv` crate reports it (both end the
/// record at the end of the file). RFC 4180's rules only: a field that starts with `"` is quoted
/// until a `"` that is not doubled; a `"` inside an unquoted field is a character like any other.
fn check_quotes_closed(path: &Path, delimiter: u8) -> Result<()> {
    use std::io::Read;
    let mut reader = BufReader::with_capacity(1 << 16, File::open(path).map_err(Error::ReadFile)?);
    let (mut line, mut opened_on) = (1u64, 0u64);
    let (mut field_start, mut quoted, mut quote_seen) = (true, false, false);
    let mut buffer = [0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buffer).map_err(Error::ReadFile)?;
        if n == 0 {
            break;
        }
        for &byte in &buffer[..n] {
            if quoted {
                if quote_seen {
                    quote_seen = false;
                    if byte == b'"' {
                        continue; // a doubled quote inside the field
                    }
                    quoted = false; // the field's closing quote; this byte follows it
                } else {
                    if byte == b'"' {
                        quote_seen = true;
                    } else if byte == b'\n' {
                        line += 1;
                    }
                    continue;
                }
            }
            match byte {
                _ if byte == delimiter => field_start = true,
                b'\n' => {
                    line += 1;
                    field_start = true;
                }
                b'"' if field_start => {
                    quoted = true;
                    opened_on = line;
                    field_start = false;
                }
                b'\r' => {}
                _ => field_start = false,
            }
        }
    }
    if quoted && !quote_seen {
        return Err(Error::CsvStructure {
            line: opened_on,
            problem: "a quoted field opened on this line is never closed: the file ends inside it".to_owned(),
        });
    }
    Ok(())
}

/// Maps an `arrow::csv` structural error to ours. Its messages name a line and a field number
/// and never quote the data, but we still rebuild the message rather than pass it through, so a
/// future change upstream cannot put a value in front of a steward or a log.
fn csv_structure_error(e: &ArrowError) -> Error {
    let text = e.to_string();
    let line = text
        .split("line ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok());
    let problem = if text.contains("incorrect number of fields") {
        "the number of fields differs from the header"
    } else if text.contains("invalid UTF-8") {
        "the line is not valid UTF-8"
    } else {
        "the line is malformed"
    };
    match line {
        Some(line) => Error::CsvStructure { line, problem: problem.to_owned() },
        None => Error::Csv(problem.to_owned()),
    }
}

/// The encoding a steward declares by name (`utf-8`, `gb18030`, `gbk`, `utf-16le`, `utf-16be`,
/// or any WHATWG label), or `None` for a name no encoding has.
pub fn encoding_named(label: &str) -> Option<&'static encoding_rs::Encoding> {
    encoding_rs::Encoding::for_label(label.trim().as_bytes())
}

/// The field separator a steward declares: `,`, `;`, `|`, or a tab (`\t` or `tab`); `None`
/// for anything else.
pub fn delimiter_named(text: &str) -> Option<u8> {
    match text {
        "," => Some(b','),
        ";" => Some(b';'),
        "|" => Some(b'|'),
        "\t" | "\\t" | "tab" => Some(b'\t'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::DataType;

    #[test]
    fn flat_scalars_and_decimals_parquet_stores_are_storable() {
        for t in [
            DataType::Int64,
            DataType::Utf8,
            DataType::Decimal128(15, 2),
            DataType::Decimal128(5, 5),
            DataType::Decimal256(60, 0),
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        ] {
            assert!(super::is_storable(&t), "{t}");
        }
        for t in [
            DataType::Decimal128(15, -5),
            DataType::Decimal128(5, 10),
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Decimal128(38, 18))),
            DataType::Binary,
            DataType::Null,
            DataType::List(std::sync::Arc::new(arrow::datatypes::Field::new("x", DataType::Int64, true))),
        ] {
            assert!(!super::is_storable(&t), "{t}");
        }
    }
}
