//! CSV: schema inference, header checks, and parsing chunks of lines with polars, falling back
//! to the `csv` crate to name the exact line and column when polars rejects a chunk.
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;

use super::discover::Split;
use super::lines::{line_of, CsvShape};
use super::values::{truncate, type_problem};
use super::{ChunkParser, SourceConfig};
use crate::error::{Error, Result};
use crate::plan::expr::clean;

fn read_options(delimiter: u8) -> CsvReadOptions {
    CsvReadOptions::default().map_parse_options(move |o| o.with_separator(delimiter).with_try_parse_dates(true))
}

/// Infers the schema from the first `infer_rows` rows of `path`.
pub fn infer(path: &Path, header: bool, delimiter: u8, infer_rows: usize, declared: &[(String, DataType)]) -> std::result::Result<Schema, String> {
    if std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len() == 0 {
        return Err(format!("{}: the file is empty (expected a header line)", path.display()));
    }
    if !header {
        return Ok(declared.iter().map(|(n, t)| Field::new(n.as_str().into(), t.clone())).collect());
    }
    // Read only the sample: polars would map the whole file.
    let sample = super::lines::head_lines(path, infer_rows + 1, Some(b'"')).map_err(|e| format!("{}: {e}", path.display()))?;
    let df = read_options(delimiter)
        .with_has_header(true)
        .with_infer_schema_length(Some(infer_rows))
        .into_reader_with_file_handle(Cursor::new(&sample))
        .finish()
        .map_err(|e| match first_ragged_line(&sample, delimiter, None) {
            Some((line, column, msg)) => format!("{}:{line}:{column}: {msg}", path.display()),
            None => format!("{}: cannot infer the schema: {}", path.display(), clean(&e)),
        })?;
    Ok((**df.schema()).clone())
}

/// The first record whose field count differs from `width` (default: the first record's):
/// (line in `sample`, column, message).
pub fn first_ragged_line(sample: &[u8], delimiter: u8, width: Option<usize>) -> Option<(u64, usize, String)> {
    let mut reader = ::csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(delimiter).from_reader(sample);
    let mut records = reader.byte_records();
    let width = match width {
        Some(w) => w,
        None => records.next()?.ok()?.len(),
    };
    for record in records {
        let record = record.ok()?;
        if record.len() != width {
            let pos = record.position()?;
            let start = pos.byte() as usize;
            let end = memchr::memchr(b'\n', &sample[start..]).map_or(sample.len(), |i| start + i);
            let raw = String::from_utf8_lossy(&sample[start..end]).trim_end_matches('\r').to_string();
            let starts = field_starts(&raw, delimiter);
            let column = if record.len() > width { starts.get(width).copied().unwrap_or(0) } else { raw.len() } + 1;
            return Some((pos.line(), column, format!("expected {width} fields but found {}: {}", record.len(), truncate(&raw, 120))));
        }
    }
    None
}

/// Checks that a file's header names the source's columns, in order.
pub fn check_header(config: &SourceConfig, path: &Path, header: Option<&[u8]>) -> Result<()> {
    let Some(line) = header else {
        return Err(Error::Input { path: path.into(), line: 1, column: 1, message: "the file is empty (expected a header line)".into() });
    };
    let mut reader = ::csv::ReaderBuilder::new().has_headers(false).delimiter(config.delimiter).from_reader(line);
    let found: Vec<String> = match reader.records().next() {
        Some(Ok(r)) => r.iter().map(|s| s.trim_start_matches('\u{feff}').to_string()).collect(),
        _ => Vec::new(),
    };
    let expected: Vec<String> = config.schema.iter_names().map(|n| n.to_string()).collect();
    if found != expected {
        return Err(Error::Input {
            path: path.into(),
            line: 1,
            column: 1,
            message: format!(
                "the header has columns [{}] but the source '{}' has [{}] (from {})",
                found.join(", "),
                config.name,
                expected.join(", "),
                config.files[0].display()
            ),
        });
    }
    Ok(())
}

/// Parses chunks of CSV lines with the source's schema.
pub struct CsvChunkParser {
    config: Arc<SourceConfig>,
    shape: CsvShape,
}

impl CsvChunkParser {
    /// A parser for `config`'s files, whose records have `shape`.
    pub fn new(config: Arc<SourceConfig>, shape: CsvShape) -> Self {
        CsvChunkParser { config, shape }
    }
}

impl ChunkParser for CsvChunkParser {
    fn parse(&mut self, split: &Split, offset: u64, chunk: Vec<u8>) -> Result<DataFrame> {
        let c = &self.config;
        if !self.shape.all_records_complete(&chunk) {
            return Err(locate(c, &split.path, offset, &chunk).unwrap_or_else(|| Error::Input {
                path: split.path.clone(),
                line: line_of(&split.path, offset),
                column: 1,
                message: format!("a record in the lines from here on does not have {} fields", self.shape.width),
            }));
        }
        let columns = c.file_projection().map(|p| p.iter().map(|s| PlSmallStr::from(s.as_str())).collect::<Arc<[_]>>());
        let result = read_options(c.delimiter)
            .with_has_header(false)
            .with_schema(Some(c.schema.clone()))
            .with_columns(columns)
            .with_n_threads(Some(1))
            .with_rechunk(false)
            .into_reader_with_file_handle(Cursor::new(&chunk))
            .finish();
        match result {
            Ok(df) => Ok(df),
            Err(e) => Err(locate(c, &split.path, offset, &chunk).unwrap_or_else(|| {
                let line = line_of(&split.path, offset);
                Error::Input { path: split.path.clone(), line, column: 1, message: format!("cannot parse the lines from here on: {}", clean(&e)) }
            })),
        }
    }
}

/// Finds the first malformed record of a chunk: wrong field count or a value of the wrong type.
fn locate(config: &SourceConfig, path: &Path, offset: u64, chunk: &[u8]) -> Option<Error> {
    let width = config.schema.len();
    let mut reader = ::csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(config.delimiter).from_reader(chunk);
    let mut record = ::csv::ByteRecord::new();
    let first_line = line_of(path, offset);
    loop {
        let pos = reader.position().clone();
        let at = |line_in_chunk: u64, column: u64, message: String| Error::Input {
            path: path.into(),
            line: first_line + line_in_chunk - 1,
            column,
            message,
        };
        match reader.read_byte_record(&mut record) {
            Ok(false) => return None,
            Err(e) => {
                let line = e.position().map_or(pos.line(), |p| p.line());
                return Some(at(line, 1, format!("malformed CSV: {e}")));
            }
            Ok(true) => {}
        }
        let line = record.position().map_or(pos.line(), |p| p.line());
        let start = record.position().map_or(0, |p| p.byte()) as usize;
        let raw_end = memchr::memchr(b'\n', &chunk[start..]).map_or(chunk.len(), |i| start + i);
        let raw = String::from_utf8_lossy(&chunk[start..raw_end]).trim_end_matches('\r').to_string();
        let starts = field_starts(&raw, config.delimiter);
        if record.len() == 1 && record[0].is_empty() {
            continue; // blank line
        }
        if record.len() != width {
            let column = if record.len() > width { starts.get(width).copied().unwrap_or(0) } else { raw.len() } + 1;
            return Some(at(line, column as u64, format!("expected {width} fields but found {}: {}", record.len(), truncate(&raw, 120))));
        }
        for (i, (name, dtype)) in config.schema.iter().enumerate() {
            let Ok(text) = std::str::from_utf8(&record[i]) else {
                return Some(at(line, starts[i] as u64 + 1, format!("column '{name}': invalid UTF-8")));
            };
            if let Some(problem) = type_problem(text, dtype) {
                let column = starts.get(i).copied().unwrap_or(0) + 1;
                let hint = if config.declared.iter().any(|d| d == name.as_str()) {
                    " (the type declared in `schema`)"
                } else {
                    " (the type was inferred from the first rows: declare it in `schema`, or raise `infer_rows`)"
                };
                return Some(at(line, column as u64, format!("column '{name}': {problem}{hint}")));
            }
        }
    }
}

/// Byte offsets where each field of a raw CSV line starts (quote aware).
fn field_starts(line: &str, delimiter: u8) -> Vec<usize> {
    let mut starts = vec![0];
    let mut quoted = false;
    for (i, b) in line.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b if b == delimiter && !quoted => starts.push(i + 1),
            _ => {}
        }
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_starts_respect_quotes() {
        assert_eq!(field_starts("a,\"b,c\",d", b','), [0, 2, 8]);
    }
}
