//! Spreadsheets (`.xlsx`, `.xlsm`, `.xls`): one sheet, read with calamine, written as a
//! UTF-8 CSV copy that the CSV reader then reads, so a sheet gets every check and inference a
//! CSV file gets (types from the values, dates in any common form, declared types, line numbers
//! in errors, counted from the header row).

use std::io::{Cursor, Write};
use std::path::Path;

use calamine::{Data, Reader};

use crate::{Error, Result};

/// The most cells a sheet may hold (an `.xls` workbook's sheets together): a sheet is read whole
/// into memory before it is converted. A red team measured about 68 bytes of the server's peak
/// memory per cell (a 5.6 KB `.xls` at 49.9 million cells took 3.4 GB, two at once 6.5 GB): ten
/// million cells stay within the one query's room a registration holds (1 GiB by default).
pub const MAX_CELLS: usize = 10_000_000;

/// Writes the sheet named `sheet` (the first when `None`) of the spreadsheet at `path` as CSV
/// to `out`: from its header row ([`header_row`]) to its last, each cell as text, empty cells
/// empty.
///
/// # Errors
/// [`Error::Decode`] for a file that is not a spreadsheet calamine reads, a sheet that is not
/// there (naming the sheets there are), a sheet too large or without a header row.
pub fn to_csv(path: &Path, sheet: Option<&str>, out: &mut impl Write) -> Result<()> {
    let bytes = std::fs::read(path).map_err(Error::ReadFile)?;
    // calamine indexes into records as their headers say, and a malformed record can panic it;
    // that is a file it cannot read, not a failure of the server.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sheet_to_csv(bytes, sheet, out))).unwrap_or_else(|_| {
        Err(refuse("the workbook has a malformed record that cannot be read; open and save it again".to_owned()))
    })
}

fn refuse(message: String) -> Error {
    Error::Decode { format: "spreadsheet", message }
}

fn sheet_to_csv(bytes: Vec<u8>, sheet: Option<&str>, out: &mut impl Write) -> Result<()> {
    let mut workbook = open_workbook(bytes).map_err(refuse)?;
    let names = workbook.sheet_names();
    let name = match sheet {
        Some(wanted) => names.iter().find(|n| n.as_str() == wanted).cloned().ok_or_else(|| {
            let shown: String = wanted.chars().take(64).collect();
            refuse(format!("the workbook has no sheet `{shown}`; its sheets: {}", names.join(", ")))
        })?,
        None => names.first().cloned().ok_or_else(|| refuse("the workbook has no sheet".into()))?,
    };
    let too_large = |(height, width): (usize, usize)| {
        (height.saturating_mul(width) > MAX_CELLS)
            .then(|| refuse(format!("sheet `{name}` has {height} rows of {width} cells; at most {MAX_CELLS} cells")))
    };
    // calamine reads a sheet into a dense grid between its outermost cells: two cells at A1 and
    // XFD1048576 are 17 billion, an allocation that aborts the process. Where calamine can read
    // the cells one by one (xlsx, xlsm, xlsb), their extent is checked first.
    let extent =
        cell_extent(&mut workbook, &name).map_err(|e| refuse(format!("sheet `{name}` cannot be read ({e})")))?;
    if let Some(refused) = extent.and_then(too_large) {
        return Err(refused);
    }
    let range = workbook.worksheet_range(&name).map_err(|e| refuse(format!("sheet `{name}` cannot be read ({e})")))?;
    if let Some(refused) = too_large(range.get_size()) {
        return Err(refused);
    }
    let filled = |row: &[Data]| row.iter().filter(|c| **c != Data::Empty).count();
    let Some(first) = range.rows().position(|row| filled(row) > 0) else {
        return Err(refuse(format!("sheet `{name}` is empty: its first row with a value is read as the header")));
    };
    let mut writer = csv::WriterBuilder::new().flexible(false).from_writer(out);
    for row in range.rows().skip(header_row(&range, first)) {
        writer.write_record(row.iter().map(text)).map_err(|e| Error::Csv(e.to_string()))?;
    }
    writer.flush().map_err(crate::error::write_error)?;
    Ok(())
}

/// Rows looked at for the header.
const HEADER_SEARCH: usize = 20;

/// The row of `range` that is its header: among the first [`HEADER_SEARCH`] rows from `first`
/// (the first with a value), the first with as many cells filled as the fullest and every one of
/// them text; `first` if there is none. Titles and notes above a table (a department's name, the
/// date it was drawn up) fill fewer cells than its header and are left out.
fn header_row(range: &calamine::Range<Data>, first: usize) -> usize {
    let filled = |row: &[Data]| row.iter().filter(|c| **c != Data::Empty).count();
    let rows: Vec<&[Data]> = range.rows().skip(first).take(HEADER_SEARCH).collect();
    let widest = rows.iter().map(|row| filled(row)).max().unwrap_or(0);
    rows.iter()
        .position(|row| filled(row) == widest && row.iter().all(|c| matches!(c, Data::Empty | Data::String(_))))
        .map_or(first, |at| first + at)
}

/// The workbook in `bytes`: a ZIP archive as `.xlsx`/`.xlsm` (or `.xlsb`), an OLE2 file as
/// `.xls` (checked and rewritten first: calamine reads every sheet of one as it opens it, see
/// the `xls` module). OpenDocument (`.ods`) is not read: calamine expands a row's repeat count as it opens
/// the file (a row "repeated" a billion times is a billion rows in memory), before anything
/// here can look at it.
fn open_workbook(bytes: Vec<u8>) -> std::result::Result<calamine::Sheets<Cursor<Vec<u8>>>, String> {
    use calamine::{Sheets, Xls, Xlsb, Xlsx};
    let not_read =
        |e: &dyn std::fmt::Display| format!("the file is not an .xlsx or .xls workbook calamine reads ({e})");
    if bytes.starts_with(&[0xd0, 0xcf, 0x11, 0xe0]) {
        let workbook = crate::xls::checked(bytes, MAX_CELLS)?;
        return Xls::new(Cursor::new(workbook)).map(Sheets::Xls).map_err(|e| not_read(&e));
    }
    if bytes.windows(43).take(128).any(|w| w == b"application/vnd.oasis.opendocument.spreads") {
        return Err("OpenDocument spreadsheets (.ods) are not read; save the sheet as .xlsx".to_owned());
    }
    match Xlsx::new(Cursor::new(bytes.clone())) {
        Ok(xlsx) => Ok(Sheets::Xlsx(xlsx)),
        Err(xlsx) => Xlsb::new(Cursor::new(bytes)).map(Sheets::Xlsb).map_err(|_| not_read(&xlsx)),
    }
}

/// The rows and columns between the outermost cells with a value of sheet `name`, read cell by
/// cell without building the sheet, for the formats calamine reads that way; `None` for the
/// others (`.xls`, whose sheets are all counted before calamine opens the file).
fn cell_extent<RS: std::io::Read + std::io::Seek>(
    workbook: &mut calamine::Sheets<RS>,
    name: &str,
) -> std::result::Result<Option<(usize, usize)>, String> {
    use calamine::DataType;
    let mut extent = crate::xls::Extent::default();
    match workbook {
        calamine::Sheets::Xlsx(xlsx) => {
            let mut cells = xlsx.worksheet_cells_reader(name).map_err(|e| e.to_string())?;
            while let Some(cell) = cells.next_cell().map_err(|e| e.to_string())? {
                if !cell.get_value().is_empty() {
                    extent.include(cell.get_position());
                }
            }
        }
        calamine::Sheets::Xlsb(xlsb) => {
            let mut cells = xlsb.worksheet_cells_reader(name).map_err(|e| e.to_string())?;
            while let Some(cell) = cells.next_cell().map_err(|e| e.to_string())? {
                if !cell.get_value().is_empty() {
                    extent.include(cell.get_position());
                }
            }
        }
        _ => return Ok(None),
    }
    let (rows, cols) = extent.size();
    Ok(Some((rows as usize, cols as usize)))
}

/// A cell as the text a CSV file would hold: numbers without a needless `.0`, dates and times in
/// ISO form, errors (`#DIV/0!`) and empty cells empty.
fn text(cell: &Data) -> String {
    match cell {
        Data::Empty | Data::Error(_) => String::new(),
        Data::String(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::DateTime(d) if d.is_duration() => d.as_f64().to_string(),
        Data::DateTime(d) => excel_date(d.as_f64()),
    }
}

/// An Excel serial date (days since 1899-12-30, the fraction the time of day) as ISO text: a
/// date alone when there is no time of day.
fn excel_date(serial: f64) -> String {
    let epoch = chrono::NaiveDate::from_ymd_opt(1899, 12, 30).unwrap_or_default();
    let days = serial.floor();
    let seconds = ((serial - days) * 86_400.0).round() as u32;
    let Some(date) = (days.is_finite() && days.abs() < 3e6)
        .then(|| epoch.checked_add_signed(chrono::Duration::days(days as i64)))
        .flatten()
    else {
        return serial.to_string();
    };
    use chrono::Datelike;
    let day = format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day());
    if seconds == 0 || seconds >= 86_400 {
        return day;
    }
    format!("{day} {:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use super::excel_date;

    #[test]
    fn excel_serial_dates_become_iso() {
        assert_eq!(excel_date(45_296.0), "2024-01-05");
        assert_eq!(excel_date(11_901.0), "1932-07-31");
        assert_eq!(excel_date(45_296.5), "2024-01-05 12:00:00");
    }
}
