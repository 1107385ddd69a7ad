//! Column types for CSV files.
//!
//! A steward may declare a column's type in the dataset metadata; otherwise it is inferred from
//! the first rows. We infer ourselves rather than use `arrow::csv`'s inference because its
//! integer rule turns identifiers with leading zeros (postal codes, some phone formats) and long
//! digit strings into numbers, silently changing them. Parsing itself stays with the `csv` and
//! `arrow::csv` readers; only the choice of type is ours.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use arrow::datatypes::{DataType, TimeUnit};

use crate::{Error, Result};

/// A column type a steward can declare for a CSV column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredType {
    /// Text (`Utf8`).
    String,
    /// 64-bit signed integer.
    Int64,
    /// 64-bit float.
    Float64,
    /// `true` / `false`.
    Boolean,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A date and time, `YYYY-MM-DD HH:MM:SS` or RFC 3339.
    Timestamp,
}

impl DeclaredType {
    /// Parses a declared type name.
    ///
    /// # Errors
    /// [`Error::UnknownType`] naming the column.
    pub fn parse(column: &str, given: &str) -> Result<Self> {
        Ok(match given {
            "string" | "utf8" | "text" => DeclaredType::String,
            "int64" | "integer" | "int" => DeclaredType::Int64,
            "float64" | "double" | "float" => DeclaredType::Float64,
            "boolean" | "bool" => DeclaredType::Boolean,
            "date" => DeclaredType::Date,
            "timestamp" => DeclaredType::Timestamp,
            other => {
                return Err(Error::UnknownType { column: column.to_owned(), given: other.chars().take(32).collect() });
            }
        })
    }

    /// The Arrow type a column of this declared type is stored as.
    pub fn data_type(self) -> DataType {
        match self {
            DeclaredType::String => DataType::Utf8,
            DeclaredType::Int64 => DataType::Int64,
            DeclaredType::Float64 => DataType::Float64,
            DeclaredType::Boolean => DataType::Boolean,
            DeclaredType::Date => DataType::Date32,
            DeclaredType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }

    /// The name shown to stewards.
    pub fn as_str(self) -> &'static str {
        match self {
            DeclaredType::String => "string",
            DeclaredType::Int64 => "int64",
            DeclaredType::Float64 => "float64",
            DeclaredType::Boolean => "boolean",
            DeclaredType::Date => "date",
            DeclaredType::Timestamp => "timestamp",
        }
    }

    /// The declared type a stored Arrow type corresponds to, if any.
    pub fn of(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DeclaredType::String,
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => DeclaredType::Int64,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => DeclaredType::Float64,
            DataType::Boolean => DeclaredType::Boolean,
            DataType::Date32 | DataType::Date64 => DeclaredType::Date,
            DataType::Timestamp(_, _) => DeclaredType::Timestamp,
            _ => return None,
        })
    }
}

/// What the sampled values of one column could all be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidate {
    Nothing,
    Boolean,
    Int,
    /// A run of eight digits that is also a date (`20240105`): a number, unless other values of
    /// the column are dates in other forms.
    DigitsDate,
    Float,
    Date,
    Timestamp,
    String,
}

impl Candidate {
    fn of(original: &str) -> Candidate {
        if original.eq_ignore_ascii_case("true") || original.eq_ignore_ascii_case("false") {
            return Candidate::Boolean;
        }
        let number = normalize_number(original);
        let value: &str = &number;
        let digits = value.strip_prefix('-').unwrap_or(value);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            // A leading zero, or more digits than a float holds exactly (身份证号 has 18, bank
            // cards 16 to 19), means a code, not a quantity.
            let leading_zero = digits.len() > 1 && digits.starts_with('0');
            return if leading_zero || digits.len() > 15 {
                Candidate::String
            } else if digits.len() == value.len() && digits.len() == 8 && date_shape(digits, true).is_some() {
                Candidate::DigitsDate
            } else {
                Candidate::Int
            };
        }
        if digits.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
            && digits.bytes().any(|b| b.is_ascii_digit())
            && !digits.starts_with("00")
            && value.parse::<f64>().is_ok()
        {
            return Candidate::Float;
        }
        // A bare run of digits (20240105) was a number above: a date only beside other dates,
        // or where the column is declared one.
        match iso_date(original) {
            Some(iso) if iso.len() == 10 => Candidate::Date,
            Some(_) => Candidate::Timestamp,
            None => Candidate::String,
        }
    }

    fn join(self, other: Candidate) -> Candidate {
        use Candidate::*;
        match (self, other) {
            (Nothing, x) | (x, Nothing) => x,
            (a, b) if a == b => a,
            (Int | DigitsDate, Float) | (Float, Int | DigitsDate) => Float,
            (Int, DigitsDate) | (DigitsDate, Int) => Int,
            // Hand-entered registers mix `20240105` with `2024/1/5` and `2024年1月5日`.
            (DigitsDate, Date) | (Date, DigitsDate) => Date,
            (DigitsDate, Timestamp) | (Timestamp, DigitsDate) => Timestamp,
            (Date, Timestamp) | (Timestamp, Date) => Timestamp,
            _ => String,
        }
    }

    fn declared(self) -> DeclaredType {
        match self {
            Candidate::Boolean => DeclaredType::Boolean,
            Candidate::Int | Candidate::DigitsDate => DeclaredType::Int64,
            Candidate::Float => DeclaredType::Float64,
            Candidate::Date => DeclaredType::Date,
            Candidate::Timestamp => DeclaredType::Timestamp,
            Candidate::Nothing | Candidate::String => DeclaredType::String,
        }
    }
}

/// `value` as a number in ASCII when it is written the way registers and office software write
/// numbers: full-width digits, point, sign and comma (`１２３．５`), surrounding spaces (also the
/// full-width one), and thousands separators in their places (`1,500.12`, `-12,345`); else
/// unchanged, so that inference sees text and the cast reports the value's line. A comma
/// anywhere else (`12,34`, a decimal comma) is not read as a separator.
pub(crate) fn normalize_number(value: &str) -> std::borrow::Cow<'_, str> {
    let ascii = |c: char| match c {
        '０'..='９' => char::from_u32(u32::from(c) - u32::from('０') + u32::from('0')).unwrap_or(c),
        '．' => '.',
        '－' => '-',
        '＋' => '+',
        '，' => ',',
        other => other,
    };
    let trimmed = value.trim_matches(|c: char| c.is_whitespace());
    if trimmed.len() == value.len() && value.is_ascii() && !value.contains(',') {
        return std::borrow::Cow::Borrowed(value);
    }
    let text: String = trimmed.chars().map(ascii).collect();
    let (sign, rest) = match text.strip_prefix(['-', '+']) {
        Some(rest) => (&text[..1], rest),
        None => ("", text.as_str()),
    };
    let (whole, fraction) = match rest.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (rest, None),
    };
    let grouped = whole.contains(',') && {
        let groups: Vec<&str> = whole.split(',').collect();
        (1..=3).contains(&groups[0].len())
            && groups[1..].iter().all(|g| g.len() == 3)
            && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()))
            && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
    };
    if whole.contains(',') && !grouped {
        return std::borrow::Cow::Borrowed(value);
    }
    let digits = whole.replace(',', "");
    std::borrow::Cow::Owned(match fraction {
        Some(f) => format!("{sign}{digits}.{f}"),
        None => format!("{sign}{digits}"),
    })
}

/// The forms of dates read, for error messages.
pub(crate) const DATE_FORMS: &str =
    "2024-01-05, 2024/1/5, 2024.1.5, 2024年1月5日 or 20240105, with a time after a space or T for timestamps";

/// `value` as an ISO date (`2024-01-05`), with its time part (`2024-01-05 08:30:00`) when it has
/// one, if it is a date in one of the forms hand-entered registers mix: `2024-1-5`, `2024/1/5`,
/// `2024.1.5`, `2024年1月5日`, and `20240105` (only when `digits` allows a bare run of digits).
/// The calendar is checked when the value is cast; here only the shape.
fn date_shape(value: &str, digits: bool) -> Option<String> {
    let value = value.trim();
    let (date, time) = match value.find([' ', 'T']) {
        Some(at) if at >= 8 => (&value[..at], Some(value[at + 1..].trim())),
        _ => (value, None),
    };
    let parts: Vec<&str> = if let Some(rest) = date.strip_suffix('日') {
        rest.split(['年', '月']).collect()
    } else if digits && date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
        vec![&date[..4], &date[4..6], &date[6..]]
    } else {
        date.split(['-', '/', '.']).collect()
    };
    let [y, m, d] = parts.as_slice() else { return None };
    let number = |s: &str, len: std::ops::RangeInclusive<usize>| {
        (len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u32>().ok()).flatten()
    };
    let (y, m, d) = (number(y, 4..=4)?, number(m, 1..=2)?, number(d, 1..=2)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let iso = format!("{y:04}-{m:02}-{d:02}");
    Some(match time {
        Some(t) if !t.is_empty() => format!("{iso} {t}"),
        _ => iso,
    })
}

/// `value` as ISO when it has a date's shape in a form inference accepts (not bare digits).
fn iso_date(value: &str) -> Option<String> {
    date_shape(value, false)
}

/// `value` rewritten to ISO for a column declared or inferred a date or timestamp (bare digits
/// allowed there); unchanged when it has no date's shape, so that the cast reports it.
pub(crate) fn normalize_date(value: &str) -> std::borrow::Cow<'_, str> {
    match date_shape(value, true) {
        Some(iso) => std::borrow::Cow::Owned(iso),
        None => std::borrow::Cow::Borrowed(value),
    }
}

/// The header and chosen column types of a CSV file.
#[derive(Debug, Clone)]
pub struct CsvLayout {
    /// The field delimiter: `,`, `;`, tab or `|`, whichever the header line holds most of.
    pub delimiter: u8,
    /// Column names in file order.
    pub names: Vec<String>,
    /// The type of each column, in the same order.
    pub types: Vec<DeclaredType>,
}

/// The delimiter a CSV file uses: of `,` `;` tab `|`, the one its header line holds most of
/// outside quotes (a comma on a tie or when there is none). European and some Chinese office
/// software save `;`-separated files, databases tab- or `|`-separated ones; read with commas,
/// each became one column.
pub(crate) fn sniff_delimiter(path: &Path) -> Result<u8> {
    use std::io::Read;
    let mut head = Vec::with_capacity(1 << 16);
    File::open(path).map_err(Error::ReadFile)?.take(1 << 16).read_to_end(&mut head).map_err(Error::ReadFile)?;
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0), (b'|', 0)];
    let mut quoted = false;
    for &byte in &head {
        match byte {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => break,
            _ if !quoted => {
                if let Some(slot) = counts.iter_mut().find(|(d, _)| *d == byte) {
                    slot.1 += 1;
                }
            }
            _ => {}
        }
    }
    // The first of the largest counts: a comma wins every tie.
    let best = counts.iter().fold((b',', 0), |best, &(d, n)| if n > best.1 { (d, n) } else { best });
    Ok(best.0)
}

/// Reads the header and up to `sample_rows` records of `path`, fields separated by `delimiter`
/// ([`sniff_delimiter`]), and decides each column's type:
/// the declared one where `declared` names the column, else the narrowest type every sampled
/// value fits.
///
/// # Errors
/// [`Error::CsvHeader`] for an empty, blank or duplicate column name; [`Error::CsvStructure`]
/// for a sampled record that is malformed.
pub fn infer(
    path: &Path,
    delimiter: u8,
    declared: &HashMap<String, DeclaredType>,
    sample_rows: usize,
) -> Result<CsvLayout> {
    let file = File::open(path).map_err(Error::ReadFile)?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).delimiter(delimiter).from_reader(BufReader::new(file));
    let header = reader.headers().map_err(csv_error)?.clone();
    if header.len() > crate::MAX_COLUMNS {
        return Err(Error::CsvHeader(format!(
            "the header has {} columns; at most {} are accepted",
            header.len(),
            crate::MAX_COLUMNS
        )));
    }
    if header.is_empty() || (header.len() == 1 && header[0].trim().is_empty()) {
        return Err(Error::CsvHeader("the file is empty or has no header line".into()));
    }
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let name = name.trim_start_matches('\u{feff}').trim();
        if name.is_empty() {
            return Err(Error::CsvHeader(format!("column {} has no name", i + 1)));
        }
        if !seen.insert(name.to_owned()) {
            return Err(Error::CsvHeader(format!("column name `{name}` appears twice")));
        }
        names.push(name.to_owned());
    }
    let mut candidates = vec![Candidate::Nothing; names.len()];
    for record in reader.records().take(sample_rows) {
        let record = record.map_err(csv_error)?;
        for (slot, value) in candidates.iter_mut().zip(record.iter()) {
            if !value.is_empty() && *slot != Candidate::String {
                *slot = slot.join(Candidate::of(value));
            }
        }
    }
    let types = names
        .iter()
        .zip(candidates)
        .map(|(name, c)| declared.get(name).copied().unwrap_or_else(|| c.declared()))
        .collect();
    Ok(CsvLayout { delimiter, names, types })
}

/// Maps a `csv` crate error to ours without its record content.
fn csv_error(e: csv::Error) -> Error {
    let line = e.position().map(|p| p.line());
    let problem = match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("expected {expected_len} fields, found {len}")
        }
        csv::ErrorKind::Utf8 { .. } => "the line is not valid UTF-8".to_owned(),
        csv::ErrorKind::Io(_) => return Error::Csv("the file could not be read".into()),
        _ => "the line is malformed".to_owned(),
    };
    match line {
        Some(line) => Error::CsvStructure { line, problem },
        None => Error::Csv(problem),
    }
}

/// `value` read in the strftime `form` and written as ISO (`YYYY-MM-DD`, with ` HH:MM:SS` when
/// `timed`), or `None` when it is not in that form.
pub(crate) fn in_form(value: &str, form: &str, timed: bool) -> Option<String> {
    use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
    let value = value.trim();
    let (date, time) = if timed {
        let at = NaiveDateTime::parse_from_str(value, form).ok()?;
        (at.date(), Some((at.hour(), at.minute(), at.second())))
    } else {
        (NaiveDate::parse_from_str(value, form).ok()?, None)
    };
    let day = format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day());
    Some(match time {
        Some((h, m, s)) => format!("{day} {h:02}:{m:02}:{s:02}"),
        None => day,
    })
}

/// Whether `form` is a strftime form chrono reads (`Some`), and whether it has a time of day.
pub fn date_form(form: &str) -> Option<bool> {
    use chrono::format::{Item, StrftimeItems};
    let valid = form.len() <= 64 && !StrftimeItems::new(form).any(|i| matches!(i, Item::Error));
    valid.then(|| ["%H", "%M", "%S", "%T", "%R", "%I"].iter().any(|t| form.contains(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types_of(rows: &str) -> Vec<DeclaredType> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.csv");
        std::fs::write(&path, rows).expect("write");
        let layout = infer(&path, b',', &HashMap::new(), 100).expect("infer");
        layout.types
    }

    #[test]
    fn keeps_codes_with_leading_zeros_and_long_digit_strings_as_text() {
        use DeclaredType::*;
        let t = types_of(
            "zip,id_number,n,x,d,ts,b,empty\n010020,110101199001011234,1,1.5,2024-01-02,2024-01-02 10:00:00,true,\n100000,110101199001011230,22,2,2024-03-04,2024-01-02T10:00:00Z,FALSE,\n",
        );
        assert_eq!(t, vec![String, String, Int64, Float64, Date, Timestamp, Boolean, String]);
    }

    #[test]
    fn multibyte_text_of_timestamp_length_is_text() {
        // 急性上呼吸道感染 is 24 bytes: byte 10 falls inside a character.
        assert_eq!(types_of("d\n急性上呼吸道感染\n2024-01-02 10:00:00\n"), vec![DeclaredType::String]);
    }

    #[test]
    fn numbers_with_thousands_separators_and_full_width_digits_are_numbers() {
        assert_eq!(normalize_number("1,500.12"), "1500.12");
        assert_eq!(normalize_number("-12,345"), "-12345");
        assert_eq!(normalize_number("１２３．５"), "123.5");
        assert_eq!(normalize_number("　４２ "), "42");
        assert_eq!(normalize_number("１，２００"), "1200");
        // Not separators: left for inference to call text and the cast to report.
        for text in ["12,34", "1,2345", ",500", "1,500.", "a,bcd", "3,5"] {
            assert_eq!(normalize_number(text), text);
        }
        let t = types_of("a,b,c\n\"1,500.12\",\"2,000\",１２\n3,\"12,000\",０\n");
        assert_eq!(t, vec![DeclaredType::Float64, DeclaredType::Int64, DeclaredType::Int64]);
    }

    #[test]
    fn mixed_values_fall_back_to_text() {
        use DeclaredType::*;
        assert_eq!(types_of("a,b\n1,2024-01-01\nx,3\n"), vec![String, String]);
    }
}
