//! `.xls` workbooks (BIFF5/BIFF8 inside an OLE2 compound file), made safe for calamine.
//!
//! calamine reads an `.xls` file whole as it opens it: every sheet becomes a dense grid between
//! its outermost cells, a sheet's declared dimensions are reserved up front, and its own
//! compound-file reader follows sector chains and sizes as the file declares them. A few
//! hundred crafted bytes can ask any of these for terabytes, an allocation that aborts the
//! process, or send a chain round a loop. So before calamine sees a file:
//!
//! 1. the compound file is read with the `cfb` crate, which checks every chain and size against
//!    the file, and only its workbook stream is kept;
//! 2. that stream's records are walked as calamine will walk them (the sheets' positions from
//!    the workbook globals, then each sheet's records to its end), counting the cells each
//!    sheet's grids and reservation will hold; over the cap, the file is refused;
//! 3. calamine gets a new compound file holding only that stream, written by `cfb` (version 3,
//!    512-byte sectors, as Excel writes them), so the
//!    container it parses is well formed whatever the upload was.
//!
//! The walk reads record types, lengths and cell positions only, never a cell's value. Why by
//! hand: no maintained crate exposes a BIFF record walk, and the part needed is the record
//! header (type and length, two little-endian `u16`) and each cell record's leading row and
//! column ([MS-XLS] 2.4).

use std::io::{Cursor, Read, Write};

/// A workbook stream longer than this is refused: an `.xls` file's format caps a sheet at
/// 65,536 × 256 cells, and Excel itself does not write workbooks this large.
const MAX_STREAM_BYTES: u64 = 1 << 30;

/// The workbook in the OLE2 file `bytes`, rewritten for calamine: a compound file holding only
/// its workbook stream, once the cells calamine would hold for every sheet are at most
/// `max_cells`.
///
/// # Errors
/// A message for the steward: the container cannot be read, there is no workbook stream, the
/// records are malformed where calamine would fail on them, or the sheets span too many cells.
pub(crate) fn checked(bytes: Vec<u8>, max_cells: usize) -> Result<Vec<u8>, String> {
    let mut container = cfb::CompoundFile::open(Cursor::new(bytes))
        .map_err(|e| format!("the file is not an .xls workbook: its container cannot be read ({e})"))?;
    // BIFF8 names the stream `Workbook`, BIFF5 `Book` (names in a compound file ignore case).
    let name = ["Workbook", "Book"]
        .into_iter()
        .find(|name| container.is_stream(name))
        .ok_or("the file is an OLE2 container without a workbook stream (is it a Word or other Office file?)")?;
    let mut stream = Vec::new();
    container
        .open_stream(name)
        .and_then(|s| s.take(MAX_STREAM_BYTES + 1).read_to_end(&mut stream))
        .map_err(|e| format!("the workbook stream cannot be read ({e})"))?;
    if stream.len() as u64 > MAX_STREAM_BYTES {
        return Err(format!("the workbook stream is larger than {MAX_STREAM_BYTES} bytes"));
    }
    let cells = cells_held(&stream)?;
    if cells > max_cells as u64 {
        return Err(format!(
            "an .xls workbook is read whole, every sheet at once, and its sheets span {cells} cells \
             between their outermost values; at most {max_cells} (save the sheet as .xlsx to read one sheet)"
        ));
    }
    let mut rebuilt = cfb::CompoundFile::create_with_version(cfb::Version::V3, Cursor::new(Vec::new()))
        .and_then(|mut file| {
            file.create_stream(name)?.write_all(&stream)?;
            file.flush()?;
            Ok(file.into_inner().into_inner())
        })
        .map_err(|e| format!("the workbook stream cannot be copied ({e})"))?;
    rebuilt.shrink_to_fit();
    Ok(rebuilt)
}

/// Record types ([MS-XLS] 2.3) the walk reads.
mod record {
    pub(super) const EOF: u16 = 0x000A;
    pub(super) const BOUND_SHEET: u16 = 0x0085;
    pub(super) const DIMENSIONS: u16 = 0x0200;
    pub(super) const NUMBER: u16 = 0x0203;
    pub(super) const LABEL: u16 = 0x0204;
    pub(super) const BOOL_ERR: u16 = 0x0205;
    pub(super) const STRING: u16 = 0x0207;
    pub(super) const RK: u16 = 0x027E;
    pub(super) const LABEL_SST: u16 = 0x00FD;
    pub(super) const MUL_RK: u16 = 0x00BD;
    pub(super) const FORMULA: u16 = 0x0006;
}

/// The records of `stream` from its start: type and data, until the stream ends; a record
/// whose length runs past the end is an error.
fn records(stream: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), String>> {
    let mut rest = stream;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let header = rest.get(..4).ok_or_else(|| "the workbook stream ends inside a record header".to_owned());
        let record = header.and_then(|h| {
            let typ = u16::from_le_bytes([h[0], h[1]]);
            let len = usize::from(u16::from_le_bytes([h[2], h[3]]));
            let data =
                rest.get(4..4 + len).ok_or_else(|| format!("record 0x{typ:04X} runs past the workbook stream"))?;
            rest = &rest[4 + len..];
            Ok((typ, data))
        });
        if record.is_err() {
            rest = &[];
        }
        Some(record)
    })
}

fn u16_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 2).map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The rows × columns between the outermost of some positions: the size of the dense grid
/// calamine builds over them.
#[derive(Default)]
pub(crate) struct Extent(Option<((u32, u32), (u32, u32))>);

impl Extent {
    pub(crate) fn include(&mut self, (row, col): (u32, u32)) {
        let ((r0, c0), (r1, c1)) = self.0.unwrap_or(((row, col), (row, col)));
        self.0 = Some(((r0.min(row), c0.min(col)), (r1.max(row), c1.max(col))));
    }

    /// Rows and columns (none for no position).
    pub(crate) fn size(&self) -> (u64, u64) {
        self.0.map_or((0, 0), |((r0, c0), (r1, c1))| (u64::from(r1 - r0) + 1, u64::from(c1 - c0) + 1))
    }

    fn cells(&self) -> u64 {
        let (rows, cols) = self.size();
        rows * cols
    }
}

/// Every cell calamine holds at once when it opens the workbook in `stream`: for each sheet
/// the globals list, its values' grid, its formulas' grid and the reservation its dimensions
/// record asks for, added over the sheets. Counted high where calamine's reading is uncertain.
fn cells_held(stream: &[u8]) -> Result<u64, String> {
    let mut positions = Vec::new();
    for record in records(stream) {
        match record? {
            (record::EOF, _) => break,
            (record::BOUND_SHEET, data) => {
                // calamine reads the position and the two state bytes after it unchecked.
                if data.len() < 6 {
                    return Err("a sheet entry (BoundSheet8) of the workbook is truncated".to_owned());
                }
                positions.push(u32_at(data, 0).map_or(usize::MAX, |p| p as usize));
            }
            _ => {}
        }
    }
    let mut held = 0u64;
    for (number, position) in positions.into_iter().enumerate() {
        let sheet = stream.get(position..).ok_or_else(|| {
            format!("sheet {} of the workbook starts past the end of the workbook stream", number + 1)
        })?;
        held = held.saturating_add(sheet_cells(sheet).map_err(|e| format!("sheet {}: {e}", number + 1))?);
    }
    Ok(held)
}

/// The cells calamine holds for the sheet whose records start `sheet`.
fn sheet_cells(sheet: &[u8]) -> Result<u64, String> {
    let truncated = |typ: u16| format!("a cell record (0x{typ:04X}) is too short to hold its position");
    let mut values = Extent::default();
    let mut formulas = Extent::default();
    let mut reserved = 0u64;
    // A string record holds the value of the formula before it (calamine starts at A1).
    let mut formula_at = (0, 0);
    for record in records(sheet) {
        let (typ, data) = record?;
        let at = || Some((u16_at(data, 0)?, u16_at(data, 2)?));
        match typ {
            record::EOF => break,
            record::NUMBER | record::LABEL | record::BOOL_ERR | record::RK | record::LABEL_SST => {
                values.include(at().ok_or_else(|| truncated(typ))?);
            }
            record::FORMULA => {
                formula_at = at().ok_or_else(|| truncated(typ))?;
                values.include(formula_at);
                formulas.include(formula_at);
            }
            record::STRING => values.include(formula_at),
            record::MUL_RK => {
                // Row, first column, six bytes per cell, last column: calamine pushes one cell
                // per six bytes from the first column on.
                let (row, first) = at().ok_or_else(|| truncated(typ))?;
                let count = data.len().saturating_sub(6).div_ceil(6) as u32;
                values.include((row, first));
                values.include((row, first + count.saturating_sub(1)));
            }
            record::DIMENSIONS => reserved = reserved.saturating_add(dimensions(data)),
            _ => {}
        }
    }
    Ok(values.cells().saturating_add(formulas.cells()).saturating_add(reserved))
}

/// The cells a dimensions record makes calamine reserve: its rows × columns as calamine reads
/// them (BIFF8's 32-bit rows; a first column past 255 or past the last taken as 0; rows that
/// run backwards wrap round to billions). A record of another length reserves nothing.
fn dimensions(data: &[u8]) -> u64 {
    let read = match data.len() {
        10 => (|| Some((u16_at(data, 0)?, u16_at(data, 2)?, u16_at(data, 4)?, u16_at(data, 6)?)))(),
        14 => (|| Some((u32_at(data, 0)?, u32_at(data, 4)?, u16_at(data, 8)?, u16_at(data, 10)?)))(),
        _ => None,
    };
    let Some((first_row, rows_end, mut first_col, cols_end)) = read else { return 0 };
    if first_col > 0xFF || cols_end < first_col {
        first_col = 0;
    }
    let (last_row, last_col) =
        if rows_end >= 1 && cols_end >= 1 { (rows_end - 1, cols_end - 1) } else { (first_row, first_col) };
    let rows = last_row.wrapping_sub(first_row).wrapping_add(1);
    let cols = last_col.wrapping_sub(first_col).wrapping_add(1);
    u64::from(rows) * u64::from(cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(typ: u16, data: &[u8]) -> Vec<u8> {
        let mut out = typ.to_le_bytes().to_vec();
        out.extend((data.len() as u16).to_le_bytes());
        out.extend(data);
        out
    }

    fn cell(row: u16, col: u16) -> Vec<u8> {
        let mut data = [row.to_le_bytes(), col.to_le_bytes(), [0, 0]].concat();
        data.extend(1.5f64.to_le_bytes());
        record(record::NUMBER, &data)
    }

    /// A sheet's count is its values' grid, its formulas' grid and its reservation.
    #[test]
    fn a_sheet_counts_every_grid_calamine_builds() {
        let sheet = [cell(2, 1), cell(11, 4), record(record::EOF, &[]), cell(60_000, 200)].concat();
        assert_eq!(sheet_cells(&sheet), Ok(10 * 4));
        let mut formula = [4u16.to_le_bytes(), 0u16.to_le_bytes()].concat();
        formula.resize(20, 0);
        let sheet = [cell(0, 0), record(record::FORMULA, &formula), record(record::EOF, &[])].concat();
        assert_eq!(sheet_cells(&sheet), Ok(5 + 1));
        let mut mul_rk = [7u16.to_le_bytes(), 3u16.to_le_bytes()].concat();
        mul_rk.extend([0u8; 18]);
        mul_rk.extend(5u16.to_le_bytes());
        assert_eq!(sheet_cells(&record(record::MUL_RK, &mul_rk)), Ok(3));
        // Rows 10 to 4 (backwards): calamine's subtraction wraps to four billion rows.
        let dims = [&10u32.to_le_bytes()[..], &5u32.to_le_bytes(), &[0, 0, 2, 0, 0, 0]].concat();
        assert_eq!(dimensions(&dims), (u64::from(u32::MAX) - 4) * 2);
        assert_eq!(sheet_cells(&record(record::NUMBER, &[1, 0, 2])).map_err(|e| e.contains("too short")), Err(true));
    }
}
