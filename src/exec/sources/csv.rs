//! CSV: schema inference, header checks, and parsing chunks of lines with polars, falling back
//! to the `csv` crate to name the exact line and column when polars rejects a chunk.
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;

use super::discover::Split;
use super::lines::CsvShape;
use super::records::{LineCounter, Span, concat_frames, has_long_line, parse_good};
use super::values::{truncate, type_problem};
use super::{ChunkParser, Parsed, SourceConfig};
use crate::error::{Error, Result};
use crate::exec::dead_letter::{ErrorKind, Rejection};
use crate::plan::expr::clean;

fn read_options(delimiter: u8) -> CsvReadOptions {
    CsvReadOptions::default().map_parse_options(move |o| o.with_separator(delimiter).with_try_parse_dates(true))
}

/// Infers the schema from the first `infer_rows` rows of `path`.
/// `tolerant`: records with the wrong number of fields are left out of the sample.
pub fn infer(
    path: &Path,
    header: bool,
    delimiter: u8,
    infer_rows: usize,
    declared: &[(String, DataType)],
    tolerant: bool,
) -> std::result::Result<Schema, String> {
    if std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len() == 0 {
        return Err(format!("{}: the file is empty (expected a header line)", path.display()));
    }
    if !header {
        return Ok(declared.iter().map(|(n, t)| Field::new(n.as_str().into(), t.clone())).collect());
    }
    // Read only the sample: polars would map the whole file.
    let mut sample = super::lines::head_lines(path, infer_rows + 1, Some(b'"')).map_err(|e| format!("{}: {e}", path.display()))?;
    if tolerant {
        sample = well_formed_records(&sample, delimiter);
    }
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

/// The records of `sample` with as many fields as its first (the header), and no unclosed quote.
fn well_formed_records(sample: &[u8], delimiter: u8) -> Vec<u8> {
    let mut reader = ::csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(delimiter).from_reader(sample);
    let mut record = ::csv::ByteRecord::new();
    let mut out = Vec::with_capacity(sample.len());
    let mut width = None;
    loop {
        let start = reader.position().byte() as usize;
        if !matches!(reader.read_byte_record(&mut record), Ok(true)) {
            return out;
        }
        let raw = &sample[start..(reader.position().byte() as usize).min(sample.len())];
        if *width.get_or_insert(record.len()) == record.len() && unclosed_quote(raw, b'"').is_none() {
            out.extend_from_slice(raw);
            if !raw.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
    }
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
pub fn check_header(config: &SourceConfig, path: &Path, header: Option<&[u8]>) -> std::result::Result<(), Rejection> {
    let Some(line) = header else {
        return Err(Rejection::in_file(path, 1, 0, 1, ErrorKind::EmptyFile, "the file is empty (expected a header line)".into(), b""));
    };
    let mut reader = ::csv::ReaderBuilder::new().has_headers(false).delimiter(config.delimiter).from_reader(line);
    let found: Vec<String> = match reader.records().next() {
        Some(Ok(r)) => r.iter().map(|s| s.trim_start_matches('\u{feff}').to_string()).collect(),
        _ => Vec::new(),
    };
    let expected: Vec<String> = config.schema.iter_names().map(|n| n.to_string()).collect();
    if found != expected {
        let message = format!(
            "the header has columns [{}] but the source '{}' has [{}] (from {})",
            found.join(", "),
            config.name,
            expected.join(", "),
            config.files[0].display()
        );
        return Err(Rejection::in_file(path, 1, 0, 1, ErrorKind::SchemaMismatch, message, line));
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

    /// polars' parse of whole records with the source's schema and projection.
    fn read(&self, bytes: &[u8]) -> PolarsResult<DataFrame> {
        let c = &self.config;
        let columns = c.file_projection().map(|p| p.iter().map(|s| PlSmallStr::from(s.as_str())).collect::<Arc<[_]>>());
        read_options(c.delimiter)
            .with_has_header(false)
            .with_schema(Some(c.schema.clone()))
            .with_columns(columns)
            .with_n_threads(Some(1))
            .with_rechunk(false)
            .into_reader_with_file_handle(Cursor::new(bytes))
            .finish()
    }
}

impl ChunkParser for CsvChunkParser {
    fn parse(&mut self, split: &Split, offset: u64, chunk: Vec<u8>, lines: &mut LineCounter) -> Result<Parsed> {
        let c = &self.config;
        if self.shape.all_records_complete(&chunk)
            && !has_long_line(&chunk, c.max_line_bytes)
            && let Ok(df) = self.read(&chunk)
        {
            return Ok(Parsed { df: Some(df), rejected: Vec::new() });
        }
        // Slow path: check record by record.
        let base = lines.line_at(offset);
        let (good, mut rejected) = classify(c, &split.path, offset, base, &chunk);
        let (frames, bad) = parse_good(&chunk, &good, &mut |b| self.read(b).map_err(|e| clean(&e)));
        for (span, message) in bad {
            let raw = &chunk[span.start..span.end];
            let message = format!("cannot parse the record: {message}");
            rejected.push(Rejection::in_file(&split.path, base + span.line - 1, offset + span.start as u64, 1, ErrorKind::Type, message, raw));
        }
        rejected.sort_by_key(|r| r.offset);
        Ok(Parsed { df: concat_frames(frames).map_err(|e| Error::execution("source", &c.name, e))?, rejected })
    }
}

/// Checks every record of a chunk: the good ones, and a rejection for each bad one (too long,
/// an unterminated quote, the wrong number of fields, invalid UTF-8 or a value of the wrong
/// type in a column that is read). `base` is the file line of the chunk's first byte.
fn classify(config: &SourceConfig, path: &Path, offset: u64, base: u64, chunk: &[u8]) -> (Vec<Span>, Vec<Rejection>) {
    let width = config.schema.len();
    let read: Vec<bool> = match config.file_projection() {
        Some(p) => config.schema.iter_names().map(|n| p.iter().any(|c| c == n.as_str())).collect(),
        None => vec![true; width],
    };
    let mut reader = ::csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(config.delimiter).from_reader(chunk);
    let mut record = ::csv::ByteRecord::new();
    let (mut good, mut rejected) = (Vec::new(), Vec::new());
    loop {
        let at = reader.position().clone();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // The csv crate fails only on I/O, which a byte slice cannot have: keep the rest.
                let line = base + e.position().map_or(at.line(), |p| p.line()) - 1;
                let raw = &chunk[at.byte() as usize..];
                rejected.push(Rejection::in_file(path, line, offset + at.byte(), 1, ErrorKind::Quote, format!("malformed CSV: {e}"), raw));
                break;
            }
        }
        let pos = record.position().cloned().unwrap_or(at);
        let (start, end) = (pos.byte() as usize, (reader.position().byte() as usize).min(chunk.len()));
        let span = Span { line: pos.line(), start, end };
        let raw = &chunk[start..end];
        if record.len() == 1 && record[0].is_empty() && raw.iter().all(|b| b.is_ascii_whitespace()) {
            continue; // blank line
        }
        let reject = |column: usize, kind: ErrorKind, message: String| {
            Rejection::in_file(path, base + span.line - 1, offset + start as u64, column as u64, kind, message, raw)
        };
        let text = String::from_utf8_lossy(raw);
        let line_text = text.trim_end_matches(['\n', '\r']);
        if line_text.len() > config.max_line_bytes {
            let message = format!("the record is {} bytes long, more than max_line_bytes = {}", line_text.len(), config.max_line_bytes);
            rejected.push(reject(config.max_line_bytes + 1, ErrorKind::LineTooLong, message));
            continue;
        }
        if let Some(column) = unclosed_quote(raw, b'"') {
            rejected.push(reject(column + 1, ErrorKind::Quote, format!("a quoted field is never closed: {}", truncate(line_text, 120))));
            continue;
        }
        let starts = field_starts(line_text, config.delimiter);
        if record.len() != width {
            let column = if record.len() > width { starts.get(width).copied().unwrap_or(0) } else { line_text.len() } + 1;
            let message = format!("expected {width} fields but found {}: {}", record.len(), truncate(line_text, 120));
            rejected.push(reject(column, ErrorKind::FieldCount, message));
            continue;
        }
        let problem = config.schema.iter().enumerate().filter(|(i, _)| read[*i]).find_map(|(i, (name, dtype))| {
            let column = starts.get(i).copied().unwrap_or(0) + 1;
            let Ok(value) = std::str::from_utf8(&record[i]) else {
                return Some(reject(column, ErrorKind::Utf8, format!("column '{name}': invalid UTF-8: {}", truncate(line_text, 120))));
            };
            type_problem(value, dtype).map(|problem| {
                let hint = if config.declared.iter().any(|d| d == name.as_str()) {
                    " (the type declared in `schema`)"
                } else {
                    " (the type was inferred from the first rows: declare it in `schema`, or raise `infer_rows`)"
                };
                reject(column, ErrorKind::Type, format!("column '{name}': {problem}{hint}"))
            })
        });
        match problem {
            Some(r) => rejected.push(r),
            None => good.push(span),
        }
    }
    (good, rejected)
}

/// Where a quoted field that is never closed starts (byte in `raw`), if one is.
fn unclosed_quote(raw: &[u8], quote: u8) -> Option<usize> {
    let mut open = None;
    for (i, &b) in raw.iter().enumerate() {
        if b == quote {
            open = if open.is_some() { None } else { Some(i) };
        }
    }
    open
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
