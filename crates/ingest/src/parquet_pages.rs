//! Checks what a Parquet file's pages declare before a reader decodes any of them.
//!
//! The parquet crate allocates and fills the decoded size a page header declares, and a page
//! compresses well: a red team's 254 KiB upload decoded to 265 MiB before its refusal, and the
//! format allows 2 GiB per page. The crate does not expose page headers without decoding the
//! pages, so this walks each column chunk's headers itself: a page header is a Thrift struct in
//! the compact protocol, of which only a few fields are read (its type, its decoded and stored
//! sizes, and its own header's value count and encoding) and the rest skipped by their wire
//! types. That, and the lengths of a text dictionary's entries (below), is the whole of the
//! parsing written here; the file is then read by the parquet crate as before.
//!
//! A page's decoded size is not what its values take in memory: a dictionary page of one long
//! text and data pages repeating its index by run-length encoding stay a few kilobytes, and
//! decode to the text once per row. So the walk also bounds each column chunk's values as
//! Arrow holds them: every value of a fixed-width type at its width; a text or binary value
//! from a dictionary at the dictionary's longest entry (read from the dictionary page, which
//! the parquet crate decodes, bounded by the page cap); a plainly encoded page at its decoded
//! size; a value of a page that shares prefixes between values (`DELTA_BYTE_ARRAY`) at the
//! whole page's decoded size.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use std::sync::Arc;

use parquet::basic::Type as PhysicalType;
use parquet::column::page::Page as DecodedPage;
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData, RowGroupMetaData};
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::RowGroupReader;
use parquet::file::serialized_reader::SerializedRowGroupReader;

use crate::{Error, Result};

/// The most one page may decode to. Writers cut pages at about 1 MiB and dictionaries at a few.
pub const MAX_PAGE_BYTES: u64 = 64 << 20;

/// The most a whole file may decode to per byte it holds, beyond [`FREE_DECODED_BYTES`]:
/// columnar data compresses, but not by this much across a whole file.
pub const DECODED_PER_BYTE: u64 = 256;

/// What any file may decode to, however small.
pub const FREE_DECODED_BYTES: u64 = 256 << 20;

/// What Arrow adds per value of a variable-width column besides its bytes (an offset).
const OFFSET_BYTES: u64 = 4;

/// The most one batch of decoded rows may take in memory, as the page headers bound it.
pub const MAX_BATCH_BYTES: u64 = 256 << 20;

/// How deep Thrift structs may nest in a page header (statistics inside a data page header are
/// two levels down).
const MAX_DEPTH: usize = 8;

/// Checks every page of every column chunk of the file at `path`: its header lies within its
/// chunk, its stored size within the chunk, its decoded size at most [`MAX_PAGE_BYTES`], and the
/// file's decoded sizes together at most [`DECODED_PER_BYTE`] per byte of the file plus
/// [`FREE_DECODED_BYTES`], and the file's values as Arrow holds them (see the module's
/// documentation) within the same bound. Returns how many rows one batch may hold, at most
/// `batch_rows`, so that a batch takes at most [`MAX_BATCH_BYTES`] (see [`Batch`]).
///
/// # Errors
/// [`Error::Decode`] naming the column and what it declares; never a value of the file.
pub fn check(path: &Path, metadata: &ParquetMetaData, batch_rows: usize) -> Result<usize> {
    let file = Arc::new(File::open(path).map_err(Error::ReadFile)?);
    let size = file.metadata().map_err(Error::ReadFile)?.len();
    let mut reader = BufReader::with_capacity(16 << 10, file.as_ref());
    let refuse = |message: String| Error::Decode { format: "Parquet", message };
    let allowed = size.saturating_mul(DECODED_PER_BYTE).saturating_add(FREE_DECODED_BYTES);
    let mut decoded: u64 = 0;
    let mut in_memory: u64 = 0;
    let mut batch = vec![Batch::default(); metadata.file_metadata().schema_descr().num_columns()];
    for row_group in metadata.row_groups() {
        for (index, column) in row_group.columns().iter().enumerate() {
            let name = column.column_path().string();
            let mut values = Values::default();
            let (start, length) = column.byte_range();
            let end = start.checked_add(length).filter(|end| *end <= size).ok_or_else(|| {
                refuse(format!("column `{name}` declares a chunk beyond the end of the file; the file is damaged"))
            })?;
            let mut at = start;
            while at < end {
                reader.seek(SeekFrom::Start(at)).map_err(Error::ReadFile)?;
                let mut counted = Counted { inner: (&mut reader).take(end - at), read: 0 };
                let page = page_header(&mut counted).map_err(|_| {
                    refuse(format!(
                        "a page header of column `{name}` cannot be read; the file is damaged or not Parquet"
                    ))
                })?;
                let stored = u64::try_from(page.stored).ok().filter(|s| at + counted.read + s <= end);
                let (Some(stored), Ok(pages_decoded)) = (stored, u64::try_from(page.decoded)) else {
                    return Err(refuse(format!(
                        "a page of column `{name}` declares sizes beyond its chunk; the file is damaged"
                    )));
                };
                if pages_decoded > MAX_PAGE_BYTES {
                    return Err(refuse(format!(
                        "a page of column `{name}` declares {} MiB once decoded; at most {} MiB are accepted per page",
                        pages_decoded >> 20,
                        MAX_PAGE_BYTES >> 20
                    )));
                }
                decoded = decoded.saturating_add(pages_decoded);
                if decoded > allowed {
                    return Err(refuse(format!(
                        "the file's pages declare more than {} MiB once decoded, over {DECODED_PER_BYTE} times its size; \
                         it is not accepted",
                        allowed >> 20
                    )));
                }
                values.add(&page, pages_decoded, column);
                at += counted.read + stored;
            }
            let longest_entry = if values.from_dictionary > 0 && column.column_type() == PhysicalType::BYTE_ARRAY {
                longest_dictionary_entry(&file, row_group, index).map_err(|()| {
                    refuse(format!("the dictionary of column `{name}` cannot be read; the file is damaged"))
                })?
            } else {
                0
            };
            if let Some(b) = batch.get_mut(index) {
                b.add(&values, longest_entry);
            }
            in_memory = in_memory.saturating_add(values.bytes(longest_entry));
            if in_memory > allowed {
                return Err(refuse(format!(
                    "the file's values take more than {} MiB once decoded (at column `{name}`), over \
                     {DECODED_PER_BYTE} times its size; it is not accepted",
                    allowed >> 20
                )));
            }
        }
    }
    let per_row: u64 = batch.iter().map(|b| b.per_value).fold(0, u64::saturating_add);
    let fixed: u64 = batch.iter().map(|b| b.partial_pages).fold(0, u64::saturating_add);
    let rows = MAX_BATCH_BYTES.saturating_sub(fixed) / per_row.max(1);
    Ok(usize::try_from(rows).unwrap_or(usize::MAX).clamp(1, batch_rows.max(1)))
}

/// What one column takes in a batch of B consecutive rows: at most B × `per_value` plus
/// `partial_pages`. The pages a batch reads whole hold at most B values (flat columns have a
/// value, or a null, per row), each page at most `per_value` per value it holds; the first and
/// the last page may be read in part. Fixed-width and dictionary values have no page term.
#[derive(Debug, Clone, Copy, Default)]
struct Batch {
    per_value: u64,
    partial_pages: u64,
}

impl Batch {
    fn add(&mut self, values: &Values, longest_entry: u64) {
        let dictionary = if values.from_dictionary > 0 { longest_entry.saturating_add(OFFSET_BYTES) } else { 0 };
        self.per_value = self.per_value.max(values.per_value).max(dictionary);
        self.partial_pages = self.partial_pages.max(values.largest_page.saturating_mul(2));
    }
}

/// What one column chunk's values take in memory, as its page headers bound it.
#[derive(Default)]
struct Values {
    /// Bytes known without the dictionary.
    bytes: u64,
    /// Values of variable width taken from the chunk's dictionary.
    from_dictionary: u64,
    /// The most a value of a page takes, per value the page holds (see [`Batch`]), for the
    /// pages not read through the dictionary.
    per_value: u64,
    /// The largest decoded page whose values are its own bytes.
    largest_page: u64,
}

impl Values {
    fn add(&mut self, page: &Page, page_decoded: u64, column: &ColumnChunkMetaData) {
        // Data pages of either version; dictionary and index pages hold no row's value.
        if !matches!(page.kind, 0 | 3) {
            return;
        }
        let n = u64::try_from(page.values).unwrap_or(0);
        let width = match column.column_type() {
            PhysicalType::BOOLEAN => Some(1),
            PhysicalType::INT32 | PhysicalType::FLOAT => Some(4),
            PhysicalType::INT64 | PhysicalType::DOUBLE => Some(8),
            PhysicalType::INT96 => Some(12),
            PhysicalType::FIXED_LEN_BYTE_ARRAY => Some(u64::try_from(column.column_descr().type_length()).unwrap_or(0)),
            PhysicalType::BYTE_ARRAY => None,
        };
        let bytes = match (width, page.encoding) {
            (Some(width), _) => {
                self.per_value = self.per_value.max(width);
                n.saturating_mul(width)
            }
            // PLAIN_DICTIONARY, RLE_DICTIONARY: counted once the dictionary is read.
            (None, 2 | 8) => {
                self.from_dictionary = self.from_dictionary.saturating_add(n);
                n.saturating_mul(OFFSET_BYTES)
            }
            // PLAIN, DELTA_LENGTH_BYTE_ARRAY: the values' bytes are the page's.
            (None, 0 | 6) => {
                self.per_value = self.per_value.max(page_decoded / n.max(1) + 1 + OFFSET_BYTES);
                self.largest_page = self.largest_page.max(page_decoded);
                page_decoded.saturating_add(n.saturating_mul(OFFSET_BYTES))
            }
            // DELTA_BYTE_ARRAY (each value may repeat all of the page's bytes before it), or
            // what else a page declares.
            (None, _) => {
                self.per_value = self.per_value.max(page_decoded.saturating_add(OFFSET_BYTES));
                self.largest_page = self.largest_page.max(page_decoded);
                n.saturating_mul(page_decoded.saturating_add(OFFSET_BYTES))
            }
        };
        self.bytes = self.bytes.saturating_add(bytes);
    }

    fn bytes(&self, longest_entry: u64) -> u64 {
        self.bytes.saturating_add(self.from_dictionary.saturating_mul(longest_entry))
    }
}

/// The longest entry of the dictionary of column `index` of `row_group`, a text or binary
/// column: the parquet crate decodes the dictionary page (its decoded size already checked);
/// its entries are PLAIN (a 4-byte little-endian length, then the bytes), which is read here
/// because the crate gives a dictionary's entries only by decoding the data pages too.
fn longest_dictionary_entry(file: &Arc<File>, row_group: &RowGroupMetaData, index: usize) -> Wire<u64> {
    let properties = Arc::new(ReaderProperties::builder().build());
    let reader = SerializedRowGroupReader::new(Arc::clone(file), row_group, None, properties).map_err(|_| ())?;
    let mut pages = reader.get_column_page_reader(index).map_err(|_| ())?;
    let Some(DecodedPage::DictionaryPage { buf, .. }) = pages.get_next_page().map_err(|_| ())? else {
        return Err(());
    };
    let mut longest = 0u64;
    let mut rest: &[u8] = &buf;
    while !rest.is_empty() {
        let (length, tail) = rest.split_first_chunk::<4>().ok_or(())?;
        let length = u32::from_le_bytes(*length) as usize;
        if length > tail.len() {
            return Err(());
        }
        longest = longest.max(length as u64);
        rest = &tail[length..];
    }
    Ok(longest)
}

/// What a page header declares that the walk uses.
struct Page {
    /// `type` (field 1): 0 a data page, 2 a dictionary, 3 a data page of version 2.
    kind: i32,
    /// `uncompressed_page_size` (field 2).
    decoded: i32,
    /// `compressed_page_size` (field 3).
    stored: i32,
    /// `num_values` of the data or dictionary page header (fields 5, 7, 8).
    values: i32,
    /// `encoding` of the data or dictionary page header.
    encoding: i32,
}

/// A reader that counts what was read through it: the header's length.
struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

type Wire<T> = std::result::Result<T, ()>;

fn page_header(r: &mut impl Read) -> Wire<Page> {
    let (mut kind_of_page, mut decoded, mut stored) = (None, None, None);
    let (mut values, mut encoding) = (0, -1);
    let mut last = 0i16;
    loop {
        let byte = read_byte(r)?;
        if byte == 0 {
            break;
        }
        let kind = byte & 0x0f;
        let id = field_id(r, byte, last)?;
        last = id;
        match (id, kind) {
            (1, 5) => kind_of_page = Some(i32_value(r)?),
            (2, 5) => decoded = Some(i32_value(r)?),
            (3, 5) => stored = Some(i32_value(r)?),
            // data_page_header, dictionary_page_header: num_values 1, encoding 2;
            // data_page_header_v2: num_values 1, encoding 4.
            (5 | 7, 12) => (values, encoding) = values_and_encoding(r, 2)?,
            (8, 12) => (values, encoding) = values_and_encoding(r, 4)?,
            _ => skip(r, kind, 0)?,
        }
    }
    Ok(Page { kind: kind_of_page.ok_or(())?, decoded: decoded.ok_or(())?, stored: stored.ok_or(())?, values, encoding })
}

fn i32_value(r: &mut impl Read) -> Wire<i32> {
    i32::try_from(zigzag(varint(r)?)).map_err(|_| ())
}

/// `num_values` (field 1) and the encoding (field `encoding_field`) of a page's own header,
/// a struct; its other fields skipped.
fn values_and_encoding(r: &mut impl Read, encoding_field: i16) -> Wire<(i32, i32)> {
    let (mut values, mut encoding) = (0, -1);
    let mut last = 0i16;
    loop {
        let byte = read_byte(r)?;
        if byte == 0 {
            return Ok((values, encoding));
        }
        let kind = byte & 0x0f;
        last = field_id(r, byte, last)?;
        match (last, kind) {
            (1, 5) => values = i32_value(r)?,
            (id, 5) if id == encoding_field => encoding = i32_value(r)?,
            _ => skip(r, kind, 1)?,
        }
    }
}

/// A field's id: the short form adds the header's high nibble to the last id, the long form
/// follows as a zigzag varint.
fn field_id(r: &mut impl Read, byte: u8, last: i16) -> Wire<i16> {
    match byte >> 4 {
        0 => i16::try_from(zigzag(varint(r)?)).map_err(|_| ()),
        delta => last.checked_add(i16::from(delta)).ok_or(()),
    }
}

/// Skips a value of compact type `kind` (a field's: booleans carry their value in the type).
fn skip(r: &mut impl Read, kind: u8, depth: usize) -> Wire<()> {
    if depth > MAX_DEPTH {
        return Err(());
    }
    match kind {
        1 | 2 => Ok(()),
        _ => skip_element(r, kind, depth),
    }
}

/// Skips a value of compact type `kind` inside a list, set or map (booleans take a byte).
fn skip_element(r: &mut impl Read, kind: u8, depth: usize) -> Wire<()> {
    match kind {
        1..=3 => read_byte(r).map(drop),
        4..=6 => varint(r).map(drop),
        7 => bytes(r, 8),
        8 => {
            let length = varint(r)?;
            bytes(r, length)
        }
        9 | 10 => {
            let header = read_byte(r)?;
            let count = match header >> 4 {
                15 => varint(r)?,
                n => u64::from(n),
            };
            for _ in 0..count {
                skip_element(r, header & 0x0f, depth + 1)?;
            }
            Ok(())
        }
        11 => {
            let count = varint(r)?;
            if count > 0 {
                let kinds = read_byte(r)?;
                for _ in 0..count {
                    skip_element(r, kinds >> 4, depth + 1)?;
                    skip_element(r, kinds & 0x0f, depth + 1)?;
                }
            }
            Ok(())
        }
        12 => {
            let mut last = 0i16;
            loop {
                let byte = read_byte(r)?;
                if byte == 0 {
                    return Ok(());
                }
                last = field_id(r, byte, last)?;
                skip(r, byte & 0x0f, depth + 1)?;
            }
        }
        _ => Err(()),
    }
}

fn read_byte(r: &mut impl Read) -> Wire<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).map_err(|_| ())?;
    Ok(b[0])
}

/// Skips `n` bytes, failing if the chunk ends first.
fn bytes(r: &mut impl Read, n: u64) -> Wire<()> {
    let skipped = std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(|_| ())?;
    if skipped == n { Ok(()) } else { Err(()) }
}

fn varint(r: &mut impl Read) -> Wire<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = read_byte(r)?;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(())
}

fn zigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::{page_header, zigzag};

    #[test]
    fn a_page_headers_sizes_are_read_and_the_rest_skipped() {
        // type = 0 (i32, field 1), decoded = 300 (field 2), stored = 10 (field 3), crc (field 4,
        // i32), data_page_header (field 5, struct: num_values i32, then a nested statistics
        // struct with a binary max), stop.
        let header: Vec<u8> = vec![
            0x15, 0x00, // field 1, i32: 0
            0x15, 0xd8, 0x04, // field 2, i32: 300
            0x15, 0x14, // field 3, i32: 10
            0x15, 0x02, // field 4, i32: 1
            0x1c, // field 5, struct
            0x15, 0x06, // num_values: 3
            0x5c, // field 6 (+5), struct: statistics
            0x18, 0x02, b'h', b'i', // field 1, binary "hi"
            0x00, // end of statistics
            0x00, // end of data page header
            0x00, // end of page header
        ];
        let page = page_header(&mut header.as_slice()).unwrap();
        assert_eq!((page.kind, page.decoded, page.stored, page.values, page.encoding), (0, 300, 10, 3, -1));
        assert_eq!(zigzag(3), -2);
        assert!(page_header(&mut &header[..6]).is_err(), "a header cut short is refused");
    }
}
