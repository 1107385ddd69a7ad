//! Errors of reading and writing dataset files.

use veil_common::ErrorKind;

/// A failure to read an uploaded file or to write its Parquet version.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read on our side.
    #[error("reading the uploaded file failed: {0}")]
    ReadFile(#[source] std::io::Error),
    /// The file is not in a format Veil reads.
    #[error("unsupported file format: {0}")]
    UnsupportedFormat(String),
    /// The CSV header is unusable (empty, duplicate or missing column names).
    #[error("CSV header: {0}")]
    CsvHeader(String),
    /// The CSV's bytes are in none of the encodings Veil reads.
    #[error(
        "CSV line {line}: the bytes are neither UTF-8 nor GB18030 (GBK); UTF-16 is read when the file starts with its byte-order mark"
    )]
    CsvEncoding {
        /// 1-based line of the first bytes that decode in no encoding tried.
        line: u64,
    },
    /// The CSV's bytes are not in the encoding the steward declared.
    #[error("CSV line {line}: the bytes are not {encoding}, the encoding the metadata declares")]
    CsvDeclaredEncoding {
        /// 1-based line of the first bytes that do not decode.
        line: u64,
        /// The declared encoding's name.
        encoding: &'static str,
    },
    /// The CSV's structure is broken at a line (wrong number of fields, bad UTF-8).
    #[error("CSV line {line}: {problem}")]
    CsvStructure {
        /// 1-based line in the file, the header being line 1.
        line: u64,
        /// What is wrong, without the line's content.
        problem: String,
    },
    /// A CSV value does not parse as its column's type.
    #[error("CSV line {line}, column `{column}`: value is not a valid {expected}")]
    CsvValue {
        /// 1-based line in the file, the header being line 1.
        line: u64,
        /// The column's name from the header.
        column: String,
        /// The type the column has (declared or inferred).
        expected: String,
    },
    /// A CSV problem that the reader could not place on a line.
    #[error("CSV could not be read: {0}")]
    Csv(String),
    /// An Arrow IPC or Parquet file that does not decode.
    #[error("the {format} file could not be decoded: {message}")]
    Decode {
        /// `Parquet` or `Arrow IPC`.
        format: &'static str,
        /// The decoder's message (structure only: decoders do not quote values).
        message: String,
    },
    /// A column of a type Veil does not store.
    #[error(
        "column `{column}` has type {data_type}, which Veil does not store (nested, binary and null columns are refused, decimals whose scale is below 0 or above their precision, and dictionaries of decimals)"
    )]
    UnsupportedType {
        /// The column's name.
        column: String,
        /// The Arrow type, as text.
        data_type: String,
    },
    /// A declared type for a CSV column that Veil does not know.
    #[error(
        "column `{column}`: unknown type `{given}`: expected one of string, int64, float64, boolean, date, timestamp"
    )]
    UnknownType {
        /// The column's name.
        column: String,
        /// What was declared.
        given: String,
    },
    /// A date or time outside the years queries can compute on ([`crate::write`]'s
    /// `representable`).
    #[error(
        "column `{column}`, row {row}: a date or time outside 1678-01-01 to 2261-12-31, the years queries can compute on (truncating it to a month or reading it as a timestamp fails); store a placeholder date such as 9999-12-31 as empty (NULL)"
    )]
    TimeOutOfRange {
        /// The column's name.
        column: String,
        /// 1-based row among the data rows (a CSV's header not counted).
        row: u64,
    },
    /// A row of a dataset about people whose privacy unit is empty.
    #[error(
        "column `{column}`, row {row}: the privacy unit is empty; every row of a dataset about people names its person (rows without one would count as one person together): give the row its person, or leave the row out"
    )]
    UnitMissing {
        /// The privacy unit's column.
        column: String,
        /// 1-based row among the data rows (a CSV's header not counted).
        row: u64,
    },
    /// A floating-point value that is not a number or is infinite.
    #[error(
        "column `{column}`, row {row}: a number that is not finite (NaN or infinity), which no sum or bound can hold; store a missing value as empty (NULL)"
    )]
    NotFinite {
        /// The column's name.
        column: String,
        /// 1-based row among the data rows (a CSV's header not counted).
        row: u64,
    },
    /// Writing the Parquet version failed on our side.
    #[error("writing the dataset file failed: {0}")]
    WriteFile(String),
    /// The data directory's disk is full: nothing was stored.
    #[error("the server's disk is full: the dataset was not stored; try again once the operator has made room")]
    StorageFull,
}

impl Error {
    /// The coarse class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ReadFile(_) | Error::WriteFile(_) => ErrorKind::Internal,
            Error::StorageFull => ErrorKind::StorageFull,
            Error::UnsupportedFormat(_)
            | Error::CsvHeader(_)
            | Error::CsvStructure { .. }
            | Error::CsvEncoding { .. }
            | Error::CsvDeclaredEncoding { .. }
            | Error::CsvValue { .. }
            | Error::Csv(_)
            | Error::Decode { .. }
            | Error::UnsupportedType { .. }
            | Error::UnknownType { .. }
            | Error::TimeOutOfRange { .. }
            | Error::UnitMissing { .. }
            | Error::NotFinite { .. } => ErrorKind::Unprocessable,
        }
    }

    /// A stable machine-readable code for the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Error::ReadFile(_) | Error::WriteFile(_) => "internal",
            Error::StorageFull => "storage_full",
            Error::UnsupportedFormat(_) => "unsupported_format",
            Error::CsvHeader(_) => "csv_header",
            Error::CsvStructure { .. } | Error::Csv(_) => "csv_malformed",
            Error::CsvEncoding { .. } | Error::CsvDeclaredEncoding { .. } => "csv_encoding",
            Error::CsvValue { .. } => "csv_value",
            Error::Decode { .. } => "file_undecodable",
            Error::UnsupportedType { .. } => "unsupported_type",
            Error::UnknownType { .. } => "unknown_type",
            Error::TimeOutOfRange { .. } => "time_out_of_range",
            Error::UnitMissing { .. } => "privacy_unit_missing",
            Error::NotFinite { .. } => "not_finite",
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// [`Error::WriteFile`], or [`Error::StorageFull`] when the disk is full.
pub(crate) fn write_error(e: impl std::error::Error + 'static) -> Error {
    if veil_common::is_storage_full(&e) { Error::StorageFull } else { Error::WriteFile(e.to_string()) }
}
