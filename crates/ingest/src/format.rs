//! Which format an uploaded file is in.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// The formats Veil ingests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// Comma-separated values with a header line, UTF-8.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// Arrow IPC file format (`ARROW1` magic, random access).
    ArrowFile,
    /// Arrow IPC stream format.
    ArrowStream,
    /// A spreadsheet workbook (`.xlsx`, `.xlsm`, `.xls`): one of its sheets.
    Spreadsheet,
}

impl SourceFormat {
    /// The name used on the wire and in the catalogue.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Csv => "csv",
            SourceFormat::Parquet => "parquet",
            SourceFormat::ArrowFile => "arrow_file",
            SourceFormat::ArrowStream => "arrow_stream",
            SourceFormat::Spreadsheet => "spreadsheet",
        }
    }

    /// Parses a declared format name (`csv`, `parquet`, `arrow` or `arrow_file`, `arrow_stream`,
    /// `xlsx`, `xls` or `spreadsheet`).
    ///
    /// # Errors
    /// [`Error::UnsupportedFormat`] for any other name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "csv" => Ok(SourceFormat::Csv),
            "parquet" => Ok(SourceFormat::Parquet),
            "arrow" | "arrow_file" | "ipc" => Ok(SourceFormat::ArrowFile),
            "arrow_stream" | "arrows" => Ok(SourceFormat::ArrowStream),
            "xlsx" | "xlsm" | "xls" | "spreadsheet" => Ok(SourceFormat::Spreadsheet),
            other => Err(Error::UnsupportedFormat(format!(
                "`{}`: expected csv, parquet, arrow_file, arrow_stream or xlsx (xls)",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }

    /// Recognises a file by its first bytes: `PAR1` is Parquet, `ARROW1` an Arrow IPC file, an
    /// IPC continuation marker an Arrow IPC stream, a ZIP archive (`.xlsx`) or an OLE2
    /// compound file (`.xls`) a spreadsheet; anything else is read as CSV (whose own checks then
    /// report what is wrong with it).
    ///
    /// # Errors
    /// [`Error::ReadFile`] when the file cannot be read.
    pub fn sniff(path: &Path) -> Result<Self> {
        let mut head = [0u8; 8];
        let mut file = File::open(path).map_err(Error::ReadFile)?;
        let mut filled = 0;
        while filled < head.len() {
            match file.read(&mut head[filled..]).map_err(Error::ReadFile)? {
                0 => break,
                n => filled += n,
            }
        }
        let head = &head[..filled];
        Ok(if head.starts_with(b"PAR1") {
            SourceFormat::Parquet
        } else if head.starts_with(b"ARROW1") {
            SourceFormat::ArrowFile
        } else if head.starts_with(&[0xFF, 0xFF, 0xFF, 0xFF]) {
            SourceFormat::ArrowStream
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1])
        {
            SourceFormat::Spreadsheet
        } else {
            SourceFormat::Csv
        })
    }
}
