//! Rejected rows: why a row could not be read or computed, and the dead-letter frame that carries
//! them to the side output `<component>.dead_letter`.
//!
//! Every source and operator writes the same columns, so one sink can take the union of all of
//! them.
use polars::prelude::*;

use crate::error::Error;

/// What was wrong with a rejected row (the `kind` column, and `error[kind]` in messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A CSV record with too few or too many fields.
    FieldCount,
    /// A value that does not parse as its column's type.
    Type,
    /// Bytes that are not UTF-8 in a text value.
    Utf8,
    /// A JSON line that is not a JSON object.
    Json,
    /// A quoted CSV field with no closing quote.
    Quote,
    /// A line longer than the source's `max_line_bytes`.
    LineTooLong,
    /// A file that cannot be opened or read (permissions, vanished).
    Unreadable,
    /// A file with no bytes where a header or data was expected.
    EmptyFile,
    /// A file whose columns differ from the source's.
    SchemaMismatch,
    /// A Parquet file whose bytes cannot be decoded.
    CorruptParquet,
    /// An Arrow IPC file that cannot be decoded.
    CorruptIpc,
    /// A value a `parse` regex does not match.
    NoMatch,
    /// An operator's expression failed on the row (a strict cast, say).
    Expression,
    /// A row with no event time (its time column is null), so no window can take it.
    NullTime,
}

impl ErrorKind {
    /// The name used in the `kind` column and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::FieldCount => "field_count",
            ErrorKind::Type => "type",
            ErrorKind::Utf8 => "utf8",
            ErrorKind::Json => "json",
            ErrorKind::Quote => "quote",
            ErrorKind::LineTooLong => "line_too_long",
            ErrorKind::Unreadable => "unreadable",
            ErrorKind::EmptyFile => "empty_file",
            ErrorKind::SchemaMismatch => "schema_mismatch",
            ErrorKind::CorruptParquet => "corrupt_parquet",
            ErrorKind::CorruptIpc => "corrupt_ipc",
            ErrorKind::NoMatch => "no_match",
            ErrorKind::Expression => "expression",
            ErrorKind::NullTime => "null_time",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most bytes of the raw text kept in a rejection (the rest is cut, marked with `...`).
pub const RAW_LIMIT: usize = 1024;

/// One rejected row or file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The file, for sources.
    pub file: Option<String>,
    /// 1-based line where the record starts (None for a whole file or a computed row).
    pub line: Option<u64>,
    /// Byte offset of the record in the file.
    pub offset: Option<u64>,
    /// 1-based column (byte in the line) of the problem.
    pub column: Option<u64>,
    /// What kind of problem.
    pub kind: ErrorKind,
    /// What was expected and what was found.
    pub message: String,
    /// The record as it was (a computed row: as JSON), cut to [`RAW_LIMIT`] bytes.
    pub raw: String,
}

impl Rejection {
    /// A rejection of raw bytes read from a file.
    pub fn in_file(path: &std::path::Path, line: u64, offset: u64, column: u64, kind: ErrorKind, message: String, raw: &[u8]) -> Self {
        Rejection { file: Some(path.display().to_string()), line: Some(line), offset: Some(offset), column: Some(column), kind, message, raw: raw_text(raw) }
    }

    /// A rejection of a whole file (it cannot be read, or is not what the source reads).
    pub fn of_file(path: &std::path::Path, kind: ErrorKind, message: String) -> Self {
        Rejection { file: Some(path.display().to_string()), line: None, offset: None, column: None, kind, message, raw: String::new() }
    }

    /// The error `on_error = "fail"` reports for this rejection of component `who`.
    pub fn into_error(self, who: (&'static str, &str)) -> Error {
        match (self.file, self.line) {
            (Some(file), Some(line)) => {
                Error::Input { path: file.into(), line, column: self.column.unwrap_or(1), kind: Some(self.kind), message: self.message }
            }
            (Some(file), None) => Error::Input { path: file.into(), line: 0, column: 0, kind: Some(self.kind), message: self.message },
            _ => Error::execution(who.0, who.1, format!("error[{}]: {}", self.kind, self.message)),
        }
    }
}

/// Raw bytes as text for the `raw` column: invalid UTF-8 replaced, cut at [`RAW_LIMIT`] bytes,
/// and without the line end.
pub fn raw_text(raw: &[u8]) -> String {
    let raw = raw.iter().rposition(|&b| b != b'\n' && b != b'\r').map_or(&raw[..0], |i| &raw[..=i]);
    if raw.len() > RAW_LIMIT {
        let mut s = String::from_utf8_lossy(&raw[..RAW_LIMIT]).into_owned();
        s.push_str("...");
        s
    } else {
        String::from_utf8_lossy(raw).into_owned()
    }
}

/// The columns of every dead-letter output.
pub fn schema() -> Schema {
    [
        ("source", DataType::String),
        ("file", DataType::String),
        ("line", DataType::UInt64),
        ("offset", DataType::UInt64),
        ("column", DataType::UInt64),
        ("kind", DataType::String),
        ("message", DataType::String),
        ("raw", DataType::String),
    ]
    .into_iter()
    .map(|(n, t)| Field::new(n.into(), t))
    .collect()
}

/// The dead-letter frame for `rejections` of component `component`.
pub fn frame(component: &str, rejections: &[Rejection]) -> PolarsResult<DataFrame> {
    let n = rejections.len();
    let strings = |f: &dyn Fn(&Rejection) -> Option<&str>| rejections.iter().map(f).collect::<Vec<_>>();
    let numbers = |f: &dyn Fn(&Rejection) -> Option<u64>| rejections.iter().map(f).collect::<Vec<_>>();
    DataFrame::new(
        n,
        vec![
            Column::new("source".into(), vec![component; n]),
            Column::new("file".into(), strings(&|r| r.file.as_deref())),
            Column::new("line".into(), numbers(&|r| r.line)),
            Column::new("offset".into(), numbers(&|r| r.offset)),
            Column::new("column".into(), numbers(&|r| r.column)),
            Column::new("kind".into(), strings(&|r| Some(r.kind.as_str()))),
            Column::new("message".into(), strings(&|r| Some(r.message.as_str()))),
            Column::new("raw".into(), strings(&|r| Some(r.raw.as_str()))),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_has_the_dead_letter_schema() {
        let r = Rejection::in_file(std::path::Path::new("a.csv"), 3, 40, 7, ErrorKind::FieldCount, "expected 2 fields".into(), b"1,2,3\r\n");
        let df = frame("src", &[r.clone(), Rejection { file: None, line: None, offset: None, column: None, ..r }]).unwrap();
        assert_eq!(**df.schema(), schema());
        assert_eq!(df.column("raw").unwrap().str().unwrap().get(0), Some("1,2,3"));
        assert_eq!(df.column("line").unwrap().u64().unwrap().get(1), None);
    }

    #[test]
    fn long_raw_text_is_cut() {
        let raw = raw_text(&[b'x'; 5000]);
        assert_eq!(raw.len(), RAW_LIMIT + 3);
        assert_eq!(raw_text(b"a\xffb"), "a\u{fffd}b");
    }
}
