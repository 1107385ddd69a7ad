//! Reading each input format and writing Parquet, through the public API.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use veil_ingest::{DeclaredType, Error, ReadOptions, SourceFormat, open, write_parquet};

fn read_back(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).expect("open parquet");
    ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("batches")
}

fn ingest_csv(text: &str, declared: HashMap<String, DeclaredType>) -> Result<Vec<RecordBatch>, Error> {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("in.csv");
    std::fs::write(&src, text).expect("write");
    assert_eq!(SourceFormat::sniff(&src).expect("sniff"), SourceFormat::Csv);
    let mut options = ReadOptions::with_declared(declared);
    options.batch_size = 2; // several batches, so line numbers must carry across them
    let source = open(&src, SourceFormat::Csv, &options)?;
    let dst = dir.path().join("out.parquet");
    write_parquet(source, &dst, |_| Ok(()))?;
    Ok(read_back(&dst))
}

#[test]
fn csv_round_trips_with_inferred_types_and_empty_fields_as_null() {
    let batches =
        ingest_csv("id,age,district\n0101,70,朝阳区\n0102,,海淀区\n0103,81,\n", HashMap::new()).expect("ingest");
    let schema = batches[0].schema();
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8, "leading zeros keep the id text");
    assert_eq!(schema.field(1).data_type(), &DataType::Int64);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 3);
    let ages = batches[0].column(1).as_any().downcast_ref::<Int64Array>().expect("int64");
    assert_eq!(ages.value(0), 70);
    assert!(ages.is_null(1), "an empty field is null");
    let ids = batches[0].column(0).as_any().downcast_ref::<StringArray>().expect("utf8");
    assert_eq!(ids.value(0), "0101");
}

#[test]
fn csv_value_error_names_line_and_column_but_not_the_value() {
    let mut declared = HashMap::new();
    declared.insert("cost".to_owned(), DeclaredType::Int64);
    let text = "id,cost\na,1\nb,2\nc,3\nd,SECRET-VALUE\ne,5\n";
    let err = ingest_csv(text, declared).expect_err("bad value");
    let msg = err.to_string();
    assert!(matches!(err, Error::CsvValue { line: 5, .. }), "{msg}");
    assert!(msg.contains("`cost`") && msg.contains("int64"), "{msg}");
    assert!(!msg.contains("SECRET"), "the value must not appear: {msg}");
}

#[test]
fn csv_structure_error_names_the_line() {
    let err = ingest_csv("a,b\n1,2\n3,4\n5\n", HashMap::new()).expect_err("short row");
    // The sampling pass sees the short row first and reports it with its exact line.
    assert!(matches!(err, Error::CsvStructure { line: 4, .. }), "{err}");
}

#[test]
fn csv_structure_error_past_the_sample_names_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("in.csv");
    std::fs::write(&src, "a,b\n1,2\n3,4\n5,6\n7\n").expect("write");
    let mut options = ReadOptions::with_declared(HashMap::new());
    options.csv_sample_rows = 1;
    options.batch_size = 2;
    let source = open(&src, SourceFormat::Csv, &options).expect("open");
    let err = write_parquet(source, &dir.path().join("o.parquet"), |_| Ok(())).expect_err("short row");
    assert!(matches!(err, Error::CsvStructure { line: 5, .. }), "{err}");
}

#[test]
fn csv_header_problems_are_refused() {
    assert!(matches!(ingest_csv("a,a\n1,2\n", HashMap::new()), Err(Error::CsvHeader(_))));
    assert!(matches!(ingest_csv("a,,c\n1,2,3\n", HashMap::new()), Err(Error::CsvHeader(_))));
    assert!(matches!(ingest_csv("", HashMap::new()), Err(Error::CsvHeader(_))));
}

fn sample_batch() -> RecordBatch {
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false), Field::new("n", DataType::Int64, true)]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
        ],
    )
    .expect("batch")
}

#[test]
fn arrow_file_stream_and_parquet_are_sniffed_and_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = sample_batch();
    let file_path = dir.path().join("a.arrow");
    {
        let f = std::fs::File::create(&file_path).expect("create");
        let mut w = arrow::ipc::writer::FileWriter::try_new(f, &batch.schema()).expect("writer");
        w.write(&batch).expect("write");
        w.finish().expect("finish");
    }
    let stream_path = dir.path().join("a.arrows");
    {
        let f = std::fs::File::create(&stream_path).expect("create");
        let mut w = arrow::ipc::writer::StreamWriter::try_new(f, &batch.schema()).expect("writer");
        w.write(&batch).expect("write");
        w.finish().expect("finish");
    }
    let parquet_path = dir.path().join("a.parquet");
    {
        let f = std::fs::File::create(&parquet_path).expect("create");
        let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
    }
    for (path, format) in [
        (&file_path, SourceFormat::ArrowFile),
        (&stream_path, SourceFormat::ArrowStream),
        (&parquet_path, SourceFormat::Parquet),
    ] {
        assert_eq!(SourceFormat::sniff(path).expect("sniff"), format);
        let source = open(path, format, &ReadOptions::with_declared(HashMap::new())).expect("open");
        let dst = dir.path().join(format!("{}.out.parquet", format.as_str()));
        let report = write_parquet(source, &dst, |_| Ok(())).expect("write");
        assert_eq!(report.rows, 3);
        assert_eq!(read_back(&dst)[0], batch);
    }
}

#[test]
fn truncated_parquet_is_a_decode_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.parquet");
    std::fs::write(&path, b"PAR1 this is not really parquet").expect("write");
    let err =
        open(&path, SourceFormat::Parquet, &ReadOptions::with_declared(HashMap::new())).err().expect("decode error");
    assert!(matches!(err, Error::Decode { format: "Parquet", .. }), "{err}");
}

#[test]
fn a_csv_that_ends_inside_a_quoted_field_is_refused_with_the_line_it_opens_on() {
    let err = ingest_csv("name,note\na,\"fine\"\nb,\"never closed\nc,SECRET\nd,x\n", HashMap::new())
        .expect_err("unterminated quote");
    assert!(matches!(err, Error::CsvStructure { line: 3, .. }), "{err}");
    assert!(!err.to_string().contains("SECRET"), "{err}");
    // Doubled quotes, quoted line breaks and a quote inside an unquoted field are all fine.
    let batches =
        ingest_csv("name,note\na,\"say \"\"hi\"\"\"\nb,\"two\nlines\"\nc,5\"\n", HashMap::new()).expect("well formed");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
}

#[test]
fn a_file_with_too_many_columns_is_refused_before_it_is_read() {
    let header: Vec<String> = (0..veil_ingest::MAX_COLUMNS + 1).map(|i| format!("c{i}")).collect();
    let row = vec!["1"; veil_ingest::MAX_COLUMNS + 1];
    let text = format!("{}\n{}\n", header.join(","), row.join(","));
    let err = ingest_csv(&text, HashMap::new()).expect_err("too many columns");
    assert!(matches!(err, Error::CsvHeader(_)), "{err}");
    assert!(err.to_string().contains("1025 columns"), "{err}");
}

fn ingest_bytes(bytes: &[u8]) -> Result<Vec<RecordBatch>, Error> {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("in.csv");
    std::fs::write(&src, bytes).expect("write");
    let source = open(&src, SourceFormat::Csv, &ReadOptions::with_declared(HashMap::new()))?;
    let dst = dir.path().join("out.parquet");
    write_parquet(source, &dst, |_| Ok(()))?;
    Ok(read_back(&dst))
}

/// The `district` column of the first batch.
fn districts(batches: &[RecordBatch]) -> Vec<String> {
    let column = batches[0].column_by_name("district").expect("district column");
    let text = column.as_any().downcast_ref::<StringArray>().expect("utf8");
    (0..text.len()).map(|i| text.value(i).to_owned()).collect()
}

#[test]
fn gb18030_utf16_and_marked_utf8_files_are_read_as_the_same_text() {
    let text = "district,people\n朝阳区,12\n海淀区,7\n";
    let want = ["朝阳区", "海淀区"];
    // GB18030 (GBK), as office software in China saves CSV.
    let (gbk, _, unmappable) = encoding_rs::GB18030.encode(text);
    assert!(!unmappable);
    assert_eq!(districts(&ingest_bytes(&gbk).expect("gb18030")), want);
    // UTF-8 with a byte-order mark: the first column keeps its name.
    let marked = [&[0xEF, 0xBB, 0xBF][..], text.as_bytes()].concat();
    assert_eq!(districts(&ingest_bytes(&marked).expect("utf-8 with a mark")), want);
    // UTF-16 little-endian with its mark.
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    assert_eq!(districts(&ingest_bytes(&utf16).expect("utf-16")), want);
}

#[test]
fn bytes_in_no_encoding_tried_are_refused_with_their_line() {
    // Valid UTF-8 up to line 3, then bytes that are neither UTF-8 nor GB18030.
    let bytes = [&b"district,people\nA,1\n"[..], &[0x81, 0x20, 0xFF, b',', b'2', b'\n']].concat();
    let err = ingest_bytes(&bytes).expect_err("undecodable");
    assert!(matches!(err, Error::CsvEncoding { line: 3 }), "{err}");
    assert!(err.to_string().contains("GB18030"), "{err}");
}

#[test]
fn the_earliest_bad_value_is_reported_whatever_its_column() {
    let mut declared = HashMap::new();
    declared.insert("a".to_owned(), DeclaredType::Int64);
    declared.insert("b".to_owned(), DeclaredType::Int64);
    // Column b fails on line 2, column a only on line 3: line 2, column b.
    let err = ingest_csv("a,b\n1,x\ny,2\n", declared).expect_err("bad values");
    assert!(matches!(&err, Error::CsvValue { line: 2, column, .. } if column == "b"), "{err}");
}

#[test]
fn semicolon_tab_and_bar_separated_files_are_read_by_their_delimiter() {
    for text in [
        "district;people;note\n朝阳区;12;\"a;b\"\n海淀区;7;x,y\n",
        "district\tpeople\tnote\n朝阳区\t12\ta\n海淀区\t7\tx,y\n",
        "district|people|note\n朝阳区|12|a\n海淀区|7|x,y\n",
    ] {
        let batches = ingest_csv(text, HashMap::new()).expect("read");
        let schema = batches[0].schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["district", "people", "note"], "{text:?}");
        assert_eq!(schema.field(1).data_type(), &DataType::Int64, "{text:?}");
        assert_eq!(districts(&batches), ["朝阳区", "海淀区"]);
    }
    // A comma inside a quoted field of the header does not count.
    let batches = ingest_csv("\"a,b\";c\n1;2\n", HashMap::new()).expect("read");
    assert_eq!(batches[0].num_columns(), 2);
}

#[test]
fn dates_in_the_forms_hand_entered_registers_mix_are_read_row_by_row() {
    let text = "person,born,seen\np1,1932/07/31,2024-01-05 08:30:00\np2,1945年3月5日,2024/1/6 09:00:00\np3,1950-1-9,2024.1.7T10:00:00\np4,1961.12.1,2024-01-08\n";
    let batches = ingest_csv(text, HashMap::new()).expect("read");
    let schema = batches[0].schema();
    assert_eq!(schema.field(1).data_type(), &DataType::Date32, "inferred from the mixed forms");
    assert!(matches!(schema.field(2).data_type(), DataType::Timestamp(..)));
    let mut born = Vec::new();
    for b in &batches {
        let column = arrow::compute::cast(b.column(1), &DataType::Utf8).expect("cast");
        let column = column.as_any().downcast_ref::<StringArray>().expect("utf8");
        born.extend((0..column.len()).map(|i| column.value(i).to_owned()));
    }
    assert_eq!(born, ["1932-07-31", "1945-03-05", "1950-01-09", "1961-12-01"]);
    // Bare digits are a date beside dates in other forms, or where the column is declared
    // one; alone they are a number.
    let mixed = ingest_csv("person,born\np1,19320731\np2,1945/3/5\n", HashMap::new()).expect("mixed");
    assert_eq!(mixed[0].schema().field(1).data_type(), &DataType::Date32);
    let digits = ingest_csv("person,born\np1,19320731\np2,19450305\n", HashMap::new()).expect("digits");
    assert_eq!(digits[0].schema().field(1).data_type(), &DataType::Int64);
    let mut declared = HashMap::new();
    declared.insert("born".to_owned(), DeclaredType::Date);
    assert!(ingest_csv("person,born\np1,19320731\np2,1945/3/5\n", declared.clone()).is_ok());
    // A value in no form: the line and the forms, never the value.
    let err = ingest_csv("person,born\np1,1932/07/31\np2,31.07.1932\n", declared).expect_err("bad date");
    let message = err.to_string();
    assert!(matches!(err, Error::CsvValue { line: 3, .. }), "{message}");
    assert!(message.contains("2024年1月5日") && !message.contains("31.07.1932"), "{message}");
}

/// Hostile input: arrow's IPC readers allocate the body a message declares before reading it,
/// so a 520-byte stream declaring a 2 GiB body cost 2 GiB of memory before its refusal. Every
/// declared length is now checked against the file first.
#[test]
fn arrow_messages_declaring_more_than_the_file_holds_are_refused_before_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = sample_batch();
    let mut stream = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut stream, &batch.schema()).expect("writer");
        w.write(&batch).expect("write");
        w.finish().expect("finish");
    }
    let mut file = Vec::new();
    {
        let mut w = arrow::ipc::writer::FileWriter::try_new(&mut file, &batch.schema()).expect("writer");
        w.write(&batch).expect("write");
        w.finish().expect("finish");
    }
    // A stream: its record batch's message, second after the schema's (continuation, length,
    // metadata), made to declare a 2 GiB body.
    let length = |bytes: &[u8], at: usize| i32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    let second = 8 + length(&stream, 0);
    let metadata = second + 8..second + 8 + length(&stream, second);
    let real = arrow::ipc::root_as_message(&stream[metadata.clone()]).unwrap().bodyLength();
    let declared = |bytes: &[u8]| arrow::ipc::root_as_message(&bytes[metadata.clone()]).map(|m| m.bodyLength());
    let stream = patched(&stream, metadata.clone(), real, |b| declared(b).ok());
    // A file: the block its footer lists for the batch (its reader reads by the footer).
    let footer_length = i32::from_le_bytes(file[file.len() - 10..file.len() - 6].try_into().unwrap()) as usize;
    let footer = file.len() - 10 - footer_length..file.len() - 10;
    let block = |bytes: &[u8]| {
        let footer = arrow::ipc::root_as_footer(&bytes[footer.clone()]).ok()?;
        Some(footer.recordBatches()?.get(0).bodyLength())
    };
    let real = block(&file).unwrap();
    let file = patched(&file, footer.clone(), real, block);
    for (name, bytes, format) in
        [("s.arrows", stream, SourceFormat::ArrowStream), ("f.arrow", file, SourceFormat::ArrowFile)]
    {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).expect("write");
        let err = open(&path, format, &ReadOptions::with_declared(HashMap::new())).err().expect("refused");
        assert!(matches!(err, Error::Decode { format: "Arrow IPC", .. }), "{err}");
        assert!(err.to_string().contains("beyond the end of the file"), "{name}: {err}");
    }
}

/// `bytes` with the 64-bit `real` somewhere in `within` replaced by 2³¹, where `declared` (the
/// field as the format reads it) then says 2³¹.
fn patched(
    bytes: &[u8],
    within: std::ops::Range<usize>,
    real: i64,
    declared: impl Fn(&[u8]) -> Option<i64>,
) -> Vec<u8> {
    for p in within.start..within.end - 8 {
        if bytes[p..p + 8] != real.to_le_bytes() {
            continue;
        }
        let mut patched = bytes.to_vec();
        patched[p..p + 8].copy_from_slice(&(1i64 << 31).to_le_bytes());
        if declared(&patched) == Some(1 << 31) {
            return patched;
        }
    }
    panic!("no length to patch");
}

/// Registers write numbers as people read them: `"1,500.12"` with thousands separators, `２０００`
/// in full-width digits. Both are numbers; a comma anywhere else is a bad value, reported by
/// line and column without the value.
#[test]
fn thousands_separators_and_full_width_digits_are_read_as_numbers() {
    let batches = ingest_csv("amount,count\n\"1,500.12\",１２\n２０００,\"3,000\"\n", HashMap::new()).expect("numbers");
    let amount = batches[0].column(0).as_any().downcast_ref::<arrow::array::Float64Array>().expect("float");
    let count = batches[0].column(1).as_any().downcast_ref::<Int64Array>().expect("int");
    let rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>();
    assert_eq!(rows, 2);
    assert_eq!((amount.value(0), count.value(0)), (1500.12, 12));
    let amount = batches.last().unwrap().column(0).as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
    assert_eq!(amount.value(amount.len() - 1), 2000.0);
    let declared = HashMap::from([("amount".to_owned(), DeclaredType::Float64)]);
    let err = ingest_csv("amount\n\"1,500\"\n\"12,34\"\n", declared).expect_err("a decimal comma");
    assert!(matches!(err, Error::CsvValue { line: 3, .. }), "{err}");
    assert!(!err.to_string().contains("12,34"), "{err}");
}

/// A Parquet file of `batch` written with `properties`.
fn parquet_with(
    dir: &Path,
    name: &str,
    batch: &RecordBatch,
    properties: parquet::file::properties::WriterProperties,
) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).expect("create");
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(properties)).expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
    path
}

/// The page walk reads what writers write: dictionaries, statistics, both data page versions,
/// every codec Veil builds with, several pages per chunk.
#[test]
fn parquet_pages_of_every_common_shape_are_walked_and_read() {
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 50_000;
    let schema = Arc::new(Schema::new(vec![
        Field::new("district", DataType::Utf8, false),
        Field::new("n", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from((0..n).map(|i| format!("区{}", i % 7)).collect::<Vec<_>>())),
            Arc::new(Int64Array::from((0..n).map(|i| (i % 3 != 0).then_some(i64::from(i))).collect::<Vec<_>>())),
        ],
    )
    .expect("batch");
    for (i, (version, codec, statistics)) in [
        (WriterVersion::PARQUET_1_0, Compression::SNAPPY, EnabledStatistics::Page),
        (WriterVersion::PARQUET_2_0, Compression::ZSTD(ZstdLevel::default()), EnabledStatistics::Chunk),
        (WriterVersion::PARQUET_2_0, Compression::UNCOMPRESSED, EnabledStatistics::None),
    ]
    .into_iter()
    .enumerate()
    {
        let properties = WriterProperties::builder()
            .set_writer_version(version)
            .set_compression(codec)
            .set_statistics_enabled(statistics)
            .set_data_page_row_count_limit(1000)
            .set_write_batch_size(1000)
            .build();
        let path = parquet_with(dir.path(), &format!("{i}.parquet"), &batch, properties);
        let source = open(&path, SourceFormat::Parquet, &ReadOptions::with_declared(HashMap::new())).expect("open");
        let sizes: Vec<usize> = source.batches.map(|b| b.expect("batch").num_rows()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), n as usize);
        // Ordinary values leave batches at their usual length.
        assert_eq!(sizes.iter().max(), Some(&8192), "batches of {sizes:?}");
    }
}

/// A batch of rows stays within its bound however large each value is: each value of this
/// file is a 2 MiB page of its own, so a batch of the usual 8,192 rows would take 16 GiB.
#[test]
fn a_parquet_batch_holds_as_many_rows_as_its_bound_allows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = notes(dir.path(), "long.parquet", 2 << 20, 20, |p| {
        p.set_dictionary_enabled(false).set_data_page_size_limit(1 << 20).set_write_batch_size(1)
    });
    let file = std::fs::File::open(&path).expect("open");
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&file).expect("metadata");
    let rows = veil_ingest::parquet_pages::check(&path, &metadata, 8192).expect("accepted");
    let bound = (veil_ingest::parquet_pages::MAX_BATCH_BYTES >> 21) as usize;
    assert!((1..bound).contains(&rows), "a batch of {rows} rows of 2 MiB values");
}

/// Red team: a 254 KiB Parquet upload decoded to 265 MiB before its refusal; a page may declare
/// 2 GiB. A page declaring more than the page cap is refused before any page is decoded.
#[test]
fn a_parquet_page_that_decodes_to_more_than_the_cap_is_refused_before_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = (veil_ingest::parquet_pages::MAX_PAGE_BYTES + (1 << 20)) as usize;
    let path = notes(dir.path(), "bomb.parquet", long, 1, |p| p.set_dictionary_enabled(false));
    let message = refused_note(&path);
    assert!(message.contains("at most 64 MiB"), "{message}");
}

/// A small Parquet file of one text column `note`: `rows` copies of `len` zeros, compressed
/// with ZSTD, written with the properties `with` sets.
fn notes(
    dir: &Path,
    name: &str,
    len: usize,
    rows: usize,
    with: impl FnOnce(
        parquet::file::properties::WriterPropertiesBuilder,
    ) -> parquet::file::properties::WriterPropertiesBuilder,
) -> PathBuf {
    use parquet::basic::{Compression, ZstdLevel};
    let schema = Arc::new(Schema::new(vec![Field::new("note", DataType::Utf8, false)]));
    let long = "0".repeat(len);
    let batch =
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![long.as_str(); rows]))]).expect("batch");
    let properties = with(
        parquet::file::properties::WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("level"))),
    )
    .build();
    parquet_with(dir, name, &batch, properties)
}

/// The refusal of a small file of [`notes`] as it is opened: a decode error naming the
/// column, before it is read.
fn refused_note(path: &Path) -> String {
    let size = std::fs::metadata(path).expect("size").len();
    assert!(size < 64 << 10, "the bomb is small: {size} bytes");
    let err = open(path, SourceFormat::Parquet, &ReadOptions::with_declared(HashMap::new())).err().expect("refused");
    let message = err.to_string();
    assert!(matches!(err, Error::Decode { format: "Parquet", .. }) && message.contains("column `note`"), "{message}");
    message
}

/// Red team: page sizes are not what values take in memory. A dictionary of one 2 MiB text and
/// data pages repeating its index: a few kilobytes whose pages declare 2 MiB, whose 300 rows
/// decode to 600 MiB. Refused before any data page is decoded, naming the column.
#[test]
fn a_parquet_dictionary_repeated_past_the_bound_is_refused_before_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = notes(dir.path(), "dictionary.parquet", 2 << 20, 300, |p| p.set_dictionary_page_size_limit(8 << 20));
    let message = refused_note(&path);
    assert!(message.contains("values take more than"), "{message}");

    // The same column with a short text in its dictionary reads.
    let path = notes(dir.path(), "fine.parquet", 5, 300, |p| p.set_dictionary_page_size_limit(8 << 20));
    let source = open(&path, SourceFormat::Parquet, &ReadOptions::with_declared(HashMap::new())).expect("open");
    assert_eq!(source.batches.map(|b| b.expect("batch").num_rows()).sum::<usize>(), 300);
}

/// A workbook as stewards keep registers: a notes sheet first, then the register with two
/// blank rows above its header, a text id, a name, an Excel date, a money amount, a count and a
/// yes/no column.
fn register_workbook(path: &Path) {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let mut workbook = Workbook::new();
    let notes = workbook.add_worksheet();
    notes.set_name("说明").unwrap();
    notes.write_string(0, 0, "note").unwrap();
    notes.write_string(1, 0, "民政局 2024 年名册").unwrap();
    let sheet = workbook.add_worksheet();
    sheet.set_name("名册").unwrap();
    let date = Format::new().set_num_format("yyyy/m/d");
    for (col, name) in ["身份证号", "姓名", "出生日期", "补贴", "人数", "独居"].iter().enumerate() {
        sheet.write_string(2, col as u16, *name).unwrap();
    }
    let rows = [
        ("110101193207310011", "张三", (1932, 7, 31), 1500.12, 3.0, true),
        ("110101194501020022", "李四", (1945, 1, 2), 800.0, 1.0, false),
    ];
    for (i, (id, name, (y, m, d), subsidy, count, alone)) in rows.into_iter().enumerate() {
        let row = 3 + i as u32;
        sheet.write_string(row, 0, id).unwrap();
        sheet.write_string(row, 1, name).unwrap();
        sheet.write_datetime_with_format(row, 2, ExcelDateTime::from_ymd(y, m, d).unwrap(), &date).unwrap();
        sheet.write_number(row, 3, subsidy).unwrap();
        sheet.write_number(row, 4, count).unwrap();
        sheet.write_boolean(row, 5, alone).unwrap();
    }
    workbook.save(path).unwrap();
}

/// Spreadsheets are recognised and read as the CSV of their sheet would be: the first sheet or
/// the one named, from its first row with a value, with types from the values.
#[test]
fn a_sheet_of_a_workbook_is_read_with_the_types_of_its_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("名册.xlsx");
    register_workbook(&path);
    assert_eq!(SourceFormat::sniff(&path).expect("sniff"), SourceFormat::Spreadsheet);
    let declared = HashMap::from([("身份证号".to_owned(), DeclaredType::String)]);
    let options = ReadOptions { sheet: Some("名册".into()), ..ReadOptions::with_declared(declared) };
    let source = open(&path, SourceFormat::Spreadsheet, &options).expect("open");
    let types: Vec<(String, DataType)> =
        source.schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    assert_eq!(
        types,
        [
            ("身份证号".to_owned(), DataType::Utf8),
            ("姓名".to_owned(), DataType::Utf8),
            ("出生日期".to_owned(), DataType::Date32),
            ("补贴".to_owned(), DataType::Float64),
            ("人数".to_owned(), DataType::Int64),
            ("独居".to_owned(), DataType::Boolean),
        ]
    );
    let batches: Vec<RecordBatch> = source.batches.collect::<Result<_, _>>().expect("batches");
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat");
    assert_eq!(batch.num_rows(), 2);
    let text = |i: usize| arrow::util::display::array_value_to_string(batch.column(i), 0).expect("text");
    assert_eq!(
        (text(0), text(2), text(3), text(4), text(5)),
        ("110101193207310011".into(), "1932-07-31".into(), "1500.12".into(), "3".into(), "true".into())
    );
    // The first sheet when none is named.
    let first = open(&path, SourceFormat::Spreadsheet, &ReadOptions::with_declared(HashMap::new())).expect("open");
    assert_eq!(first.schema.field(0).name(), "note");
    // A sheet that is not there is named, with the ones that are.
    let options = ReadOptions { sheet: Some("Sheet9".into()), ..ReadOptions::with_declared(HashMap::new()) };
    let err = open(&path, SourceFormat::Spreadsheet, &options).err().expect("refused").to_string();
    assert!(err.contains("no sheet `Sheet9`") && err.contains("说明, 名册"), "{err}");
    assert_eq!(SourceFormat::from_name("xlsx").expect("name"), SourceFormat::Spreadsheet);
}

/// A sheet of two cells, one at A1 and one at the last cell a sheet may have (XFD1048576):
/// calamine builds a sheet as a dense grid between its outermost cells, 17 billion cells here,
/// an allocation that aborts the process. Refused by the cells' extent before any grid is built.
#[test]
fn a_sheet_whose_cells_span_more_than_the_cell_cap_is_refused_before_its_grid_is_built() {
    use rust_xlsxwriter::Workbook;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spread.xlsx");
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.write_string(0, 0, "note").unwrap();
    sheet.write_string(1_048_575, 16_383, "far").unwrap();
    workbook.save(&path).unwrap();
    assert!(std::fs::metadata(&path).expect("size").len() < 16 << 10, "the bomb is small");
    let err = open(&path, SourceFormat::Spreadsheet, &ReadOptions::with_declared(HashMap::new()))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("1048576 rows of 16384 cells") && err.contains("at most"), "{err}");
}

/// A BIFF8 record: type, length, data.
fn biff(typ: u16, data: &[u8]) -> Vec<u8> {
    [&typ.to_le_bytes()[..], &(data.len() as u16).to_le_bytes(), data].concat()
}

/// A text cell (LABEL) at `row`, `col`, as UTF-16.
fn xls_text(row: u16, col: u16, text: &str) -> Vec<u8> {
    let units: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let chars = text.encode_utf16().count() as u16;
    let data = [&row.to_le_bytes()[..], &col.to_le_bytes(), &[0, 0], &chars.to_le_bytes(), &[1], &units].concat();
    biff(0x0204, &data)
}

/// A number cell (NUMBER) at `row`, `col`.
fn xls_number(row: u16, col: u16, value: f64) -> Vec<u8> {
    biff(0x0203, &[&row.to_le_bytes()[..], &col.to_le_bytes(), &[0, 0], &value.to_le_bytes()].concat())
}

/// An `.xls` workbook (BIFF8 in an OLE2 compound file) whose sheets hold `records` each:
/// the globals (BOF, one BoundSheet8 per sheet, EOF), then each sheet between its BOF and EOF.
/// `position` moves where the globals say a sheet starts, for malformed files.
fn xls_workbook(sheets: &[(&str, Vec<Vec<u8>>)], position: impl Fn(usize, u32) -> u32) -> Vec<u8> {
    let bof = |kind: u16| biff(0x0809, &[&0x0600u16.to_le_bytes()[..], &kind.to_le_bytes(), &[0; 12]].concat());
    let eof = biff(0x000A, &[]);
    let entry = |at: u32, name: &str| {
        let units: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let data = [&at.to_le_bytes()[..], &[0, 0, name.encode_utf16().count() as u8, 1], &units].concat();
        biff(0x0085, &data)
    };
    let bodies: Vec<Vec<u8>> =
        sheets.iter().map(|(_, records)| [bof(0x0010), records.concat(), eof.clone()].concat()).collect();
    let globals_len = bof(5).len() + sheets.iter().map(|(name, _)| entry(0, name).len()).sum::<usize>() + eof.len();
    let mut stream = bof(5);
    let mut at = globals_len as u32;
    for (i, ((name, _), body)) in sheets.iter().zip(&bodies).enumerate() {
        stream.extend(entry(position(i, at), name));
        at += body.len() as u32;
    }
    stream.extend(eof);
    stream.extend(bodies.concat());
    let mut file =
        cfb::CompoundFile::create_with_version(cfb::Version::V3, std::io::Cursor::new(Vec::new())).expect("container");
    file.create_stream("Workbook").expect("stream").write_all(&stream).expect("write");
    file.flush().expect("flush");
    file.into_inner().into_inner()
}

fn open_xls(dir: &Path, bytes: &[u8]) -> Result<Vec<RecordBatch>, String> {
    let path = dir.join("名册.xls");
    std::fs::write(&path, bytes).expect("write");
    let source = open(&path, SourceFormat::Spreadsheet, &ReadOptions::with_declared(HashMap::new()))
        .map_err(|e| e.to_string())?;
    source.batches.collect::<Result<_, _>>().map_err(|e| e.to_string())
}

/// An `.xls` workbook is read as its `.xlsx` twin: the first sheet or the one named, text
/// (Chinese included) and numbers with their types.
#[test]
fn an_xls_workbook_is_read_like_an_xlsx_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let roster = vec![
        xls_text(0, 0, "姓名"),
        xls_text(0, 1, "补贴"),
        xls_text(1, 0, "张三"),
        xls_number(1, 1, 1500.5),
        xls_text(2, 0, "李四"),
        xls_number(2, 1, 800.0),
    ];
    let bytes = xls_workbook(&[("名册", roster)], |_, at| at);
    let batches = open_xls(dir.path(), &bytes).expect("read");
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat");
    let schema = batch.schema();
    let names: Vec<(&str, &DataType)> = schema.fields().iter().map(|f| (f.name().as_str(), f.data_type())).collect();
    assert_eq!(names, [("姓名", &DataType::Utf8), ("补贴", &DataType::Float64)]);
    let text = |c: usize, r: usize| arrow::util::display::array_value_to_string(batch.column(c), r).expect("text");
    assert_eq!(
        (text(0, 0), text(1, 0), text(0, 1), text(1, 1)),
        ("张三".into(), "1500.5".into(), "李四".into(), "800.0".into())
    );
}

/// `.xls` bombs: calamine reads every sheet of an `.xls` file whole as it opens it, as a
/// dense grid between each sheet's outermost cells, after reserving what a sheet's dimensions
/// record declares. A file of a few hundred bytes with two cells 65,535 rows and columns apart,
/// or a dimensions record of four billion rows, asks for hundreds of gigabytes and aborts the
/// process; a sheet entry pointing past the stream, or a compound file whose sector chain loops,
/// would panic or spin in calamine. Each is refused with what is wrong, and the server's
/// process is still there to say so.
#[test]
fn an_xls_bomb_is_refused_before_calamine_reads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = |bytes: &[u8]| open_xls(dir.path(), bytes).expect_err("refused");
    let header = vec![xls_text(0, 0, "note")];

    let far = xls_workbook(&[("a", [header.clone(), vec![xls_number(65_535, 65_535, 1.0)]].concat())], |_, at| at);
    assert!(far.len() < 8 << 10, "the bomb is small: {}", far.len());
    let err = refused(&far);
    assert!(err.contains("4294967296 cells") && err.contains("at most"), "{err}");

    // Spread over sheets: each within the cap, together over it (calamine holds them all).
    let wide = |name| (name, [header.clone(), vec![xls_number(9_999, 599, 1.0)]].concat());
    let err = refused(&xls_workbook(&[wide("a"), wide("b")], |_, at| at));
    assert!(err.contains("12000000 cells"), "{err}");

    // A dimensions record (BIFF8: 32-bit rows) declaring rows 0 to 4,294,967,295.
    let dims = [&0u32.to_le_bytes()[..], &u32::MAX.to_le_bytes(), &0u16.to_le_bytes(), &256u16.to_le_bytes(), &[0, 0]]
        .concat();
    let err = refused(&xls_workbook(&[("a", [header.clone(), vec![biff(0x0200, &dims)]].concat())], |_, at| at));
    assert!(err.contains("cells") && err.contains("at most"), "{err}");

    // A sheet entry past the end of the stream.
    let err = refused(&xls_workbook(&[("a", header.clone())], |_, _| 1 << 30));
    assert!(err.contains("sheet 1") && err.contains("past the end"), "{err}");

    // A malformed defined name (calamine indexes a two-byte record at its fourth byte): a
    // refusal, not a panic.
    let good = xls_workbook(&[("a", header.clone())], |_, at| at);
    let mut container = cfb::CompoundFile::open(std::io::Cursor::new(good.clone())).expect("open");
    let mut stream = Vec::new();
    container.open_stream("Workbook").expect("stream").read_to_end(&mut stream).expect("read");
    let name_record = biff(0x0018, &[0, 0]);
    // After the globals' BOF (20 bytes); the sheet's position moves by the record's length.
    let mut patched = [&stream[..20], &name_record[..], &stream[20..]].concat();
    let position = 20 + name_record.len() + 4..20 + name_record.len() + 8;
    let at = u32::from_le_bytes(patched[position.clone()].try_into().expect("four bytes")) + name_record.len() as u32;
    patched[position].copy_from_slice(&at.to_le_bytes());
    let mut file =
        cfb::CompoundFile::create_with_version(cfb::Version::V3, std::io::Cursor::new(Vec::new())).expect("container");
    file.create_stream("Workbook").expect("stream").write_all(&patched).expect("write");
    file.flush().expect("flush");
    let err = refused(&file.into_inner().into_inner());
    assert!(err.contains("malformed record"), "{err}");

    // A compound file whose directory chain is its own next sector: read by cfb, which checks
    // every chain, and refused.
    let mut looped = good.clone();
    let sector = 1usize << u16::from_le_bytes([looped[30], looped[31]]);
    let first_dir = u32::from_le_bytes(looped[48..52].try_into().expect("four bytes")) as usize;
    let fat = u32::from_le_bytes(looped[76..80].try_into().expect("four bytes")) as usize;
    let entry = sector * (fat + 1) + 4 * first_dir;
    looped[entry..entry + 4].copy_from_slice(&(first_dir as u32).to_le_bytes());
    let err = refused(&looped);
    assert!(err.contains("container cannot be read"), "{err}");
    assert!(open_xls(dir.path(), &good).is_ok(), "the unbroken workbook reads");
}

/// An encoding and a separator the steward declares are used as declared: UTF-16 without its
/// byte-order mark (which detection cannot see), and `|` where the header line holds as many
/// `;`. A file not in the declared encoding is refused with the line and the encoding named.
#[test]
fn a_declared_encoding_and_separator_are_read_as_declared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("utf16.csv");
    let text = "姓名|备注;说明\n张三|甲;乙\n";
    let bytes: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    std::fs::write(&path, bytes).expect("write");
    let options = ReadOptions {
        encoding: veil_ingest::encoding_named("utf-16le"),
        delimiter: veil_ingest::delimiter_named("|"),
        ..ReadOptions::with_declared(HashMap::new())
    };
    let source = open(&path, SourceFormat::Csv, &options).expect("open");
    let names: Vec<&str> = source.schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["姓名", "备注;说明"]);
    let batch = source.batches.map(|b| b.expect("batch")).next().expect("a batch");
    assert_eq!(arrow::util::display::array_value_to_string(batch.column(1), 0).expect("text"), "甲;乙");

    let gbk = dir.path().join("gbk.csv");
    let (encoded, _, _) = encoding_rs::GBK.encode("name\nok\n张三\n");
    std::fs::write(&gbk, &encoded).expect("write");
    let options =
        ReadOptions { encoding: veil_ingest::encoding_named("utf-8"), ..ReadOptions::with_declared(HashMap::new()) };
    let err = open(&gbk, SourceFormat::Csv, &options).err().expect("refused").to_string();
    assert!(err.contains("line 3") && err.contains("UTF-8"), "{err}");
    assert!(veil_ingest::encoding_named("klingon").is_none() && veil_ingest::delimiter_named("::").is_none());
}

/// A date column in a form detection would misread (day first) is read in the form declared;
/// a value not in it names the line and the form, not the value.
#[test]
fn dates_in_a_declared_form_are_read_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dates.csv");
    std::fs::write(&path, "birth,seen\n05/01/2024,05.01.2024 08:30\n31/12/1999,31.12.1999 23:59\n").expect("write");
    let declared =
        HashMap::from([("birth".to_owned(), DeclaredType::Date), ("seen".to_owned(), DeclaredType::Timestamp)]);
    let formats =
        HashMap::from([("birth".to_owned(), "%d/%m/%Y".to_owned()), ("seen".to_owned(), "%d.%m.%Y %H:%M".to_owned())]);
    let options = ReadOptions { formats: formats.clone(), ..ReadOptions::with_declared(declared.clone()) };
    let batch = open(&path, SourceFormat::Csv, &options).expect("open").batches.next().expect("batch").expect("ok");
    let text = |c: usize, r: usize| arrow::util::display::array_value_to_string(batch.column(c), r).expect("text");
    assert_eq!((text(0, 0), text(0, 1)), ("2024-01-05".into(), "1999-12-31".into()));
    assert_eq!(text(1, 0), "2024-01-05T08:30:00");
    std::fs::write(&path, "birth,seen\n05/01/2024,05.01.2024 08:30\n1999-12-31,31.12.1999 23:59\n").expect("write");
    let options = ReadOptions { formats, ..ReadOptions::with_declared(declared) };
    let err = open(&path, SourceFormat::Csv, &options).expect("open").batches.find_map(Result::err).expect("refused");
    let message = err.to_string();
    assert!(message.contains("line 3") && message.contains("in the form %d/%m/%Y"), "{message}");
    assert!(!message.contains("1999-12-31"), "no value in the error: {message}");
    assert_eq!((veil_ingest::date_form("%d/%m/%Y"), veil_ingest::date_form("%Y%m%d %H:%M")), (Some(false), Some(true)));
    assert_eq!(veil_ingest::date_form("%Q"), None);
}

/// A date or timestamp that queries cannot compute on is refused where it is, by column and
/// row (batches of two rows, so the row counts across them), never quoting it; the first and
/// last years they can are stored.
#[test]
fn dates_and_times_outside_the_years_queries_compute_on_are_refused_by_column_and_row() {
    let dates = HashMap::from([("d".to_owned(), DeclaredType::Date)]);
    let times = HashMap::from([("t".to_owned(), DeclaredType::Timestamp)]);
    let mut messages = Vec::new();
    for (text, declared, column) in [
        ("id,d\n1,2024-01-01\n2,1678-01-01\n3,9999-12-30\n", &dates, "d"),
        ("id,d\n1,2024-01-01\n2,2261-12-31\n3,1677-12-31\n", &dates, "d"),
        ("id,t\n1,2024-01-01 08:00:00\n2,2261-12-31 23:59:59\n3,2300-01-01 00:00:00\n", &times, "t"),
    ] {
        let err = ingest_csv(text, declared.clone()).expect_err("a date beyond");
        assert_eq!(err.code(), "time_out_of_range");
        assert!(matches!(&err, Error::TimeOutOfRange { column: c, row: 3 } if c == column), "{err}");
        messages.push(err.to_string());
    }
    // The same words whatever the value: none of it is quoted.
    assert_eq!(messages[0], messages[1]);
    assert!(!messages[0].contains("9999-12-30") && !messages[2].contains("2300"), "{messages:?}");
    let kept = ingest_csv("id,d\n1,1678-01-01\n2,2261-12-31\n3,\n", dates).expect("within");
    assert_eq!(kept.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
}

/// A number that is not finite is refused where it is: a NaN passes any clamp to bounds and
/// made its group's sums NULL, one exact bit about its person.
#[test]
fn numbers_that_are_not_finite_are_refused_by_column_and_row() {
    let declared = HashMap::from([("x".to_owned(), DeclaredType::Float64)]);
    for text in ["id,x\n1,1.5\n2,NaN\n", "id,x\n1,1.5\n2,inf\n", "id,x\n1,1.5\n2,-inf\n"] {
        let err = ingest_csv(text, declared.clone()).expect_err("not finite");
        assert_eq!(err.code(), "not_finite");
        assert!(matches!(&err, Error::NotFinite { column, row: 2 } if column == "x"), "{err}");
    }
    let kept = ingest_csv("id,x\n1,1.5\n2,\n3,-1e300\n", declared).expect("finite or empty");
    assert_eq!(kept.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
}
