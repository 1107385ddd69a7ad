//! Segment files: `segment-<first seq, 12 digits>.jsonl`, appended to and never rewritten.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One segment file.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    /// The sequence number its name says its first record has.
    pub(crate) first_seq: u64,
}

/// The file name of the segment whose first record is `first_seq`.
pub(crate) fn file_name(first_seq: u64) -> String {
    format!("segment-{first_seq:012}.jsonl")
}

/// The segments in `dir`, in order. Other files (set-aside torn writes) are not segments.
pub(crate) fn list(dir: &Path) -> Result<Vec<Segment>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("listing", dir))? {
        let entry = entry.map_err(Error::io("listing", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(seq) = name.strip_prefix("segment-").and_then(|n| n.strip_suffix(".jsonl")) else { continue };
        if let Ok(first_seq) = seq.parse::<u64>() {
            out.push(Segment { path: entry.path(), first_seq });
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// One line of a segment.
#[derive(Debug)]
pub(crate) struct Line {
    /// 1-based line number.
    pub(crate) number: u64,
    /// Byte offset of its start.
    pub(crate) offset: u64,
    /// The bytes, without the newline.
    pub(crate) bytes: Vec<u8>,
    /// Whether a newline ended it (a write that stopped half way leaves a last line without).
    pub(crate) complete: bool,
}

/// Reads a segment line by line.
pub(crate) struct Lines {
    reader: BufReader<File>,
    path: PathBuf,
    number: u64,
    offset: u64,
}

impl Lines {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(Error::io("opening", path))?;
        Ok(Self { reader: BufReader::with_capacity(1 << 16, file), path: path.to_path_buf(), number: 0, offset: 0 })
    }

    /// The next line, or `None` at the end.
    pub(crate) fn next_line(&mut self) -> Result<Option<Line>> {
        let mut bytes = Vec::new();
        let n = self.reader.read_until(b'\n', &mut bytes).map_err(Error::io("reading", &self.path))?;
        if n == 0 {
            return Ok(None);
        }
        let complete = bytes.last() == Some(&b'\n');
        if complete {
            bytes.pop();
        }
        self.number += 1;
        let line = Line { number: self.number, offset: self.offset, bytes, complete };
        self.offset += n as u64;
        Ok(Some(line))
    }
}

/// Calls `visit` with every line of every segment in `dir`, in order, until it says stop.
pub(crate) fn scan(
    dir: &Path,
    mut visit: impl FnMut(&Segment, Line) -> std::ops::ControlFlow<()>,
) -> Result<Vec<Segment>> {
    let segments = list(dir)?;
    for segment in &segments {
        let mut lines = Lines::open(&segment.path)?;
        while let Some(line) = lines.next_line()? {
            if visit(segment, line).is_break() {
                return Ok(segments);
            }
        }
    }
    Ok(segments)
}
