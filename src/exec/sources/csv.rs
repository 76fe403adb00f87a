//! CSV: schema inference, header checks, and parsing chunks of lines with polars, falling back
//! to the `csv` crate to name the exact line and column when polars rejects a chunk.
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use polars::io::csv::read::_csv_read_internal as csv_internal;
use polars::prelude::*;

use super::csv_fields::{FieldPicker, NULL_INT, ParsedKind, ParsedValues, PickedValues};
use super::discover::Split;
use super::iso_dates;
use super::lines::{CsvShape, Records};
use super::records::{LineCounter, Span, concat_frames, has_long_line, parse_good};
use super::values::{truncate, type_problem};
use super::{ChunkParser, DataProblem, Parsed, SourceConfig};
use crate::error::{Error, Result};
use crate::exec::dead_letter::{ErrorKind, Rejection};
use crate::exec::guard::catch_panic;
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
) -> std::result::Result<Schema, DataProblem> {
    let unreadable = |e: std::io::Error| DataProblem { kind: Some(ErrorKind::Unreadable), message: format!("{}: {e}", path.display()) };
    // Without a header the declared columns are the schema: an empty file is just no rows yet
    // (a log that `tail` waits on).
    if !header {
        return Ok(declared.iter().map(|(n, t)| Field::new(n.as_str().into(), t.clone())).collect());
    }
    if std::fs::metadata(path).map_err(unreadable)?.len() == 0 {
        return Err(DataProblem { kind: Some(ErrorKind::EmptyFile), message: format!("{}: the file is empty (expected a header line)", path.display()) });
    }
    // Read only the sample: polars would map the whole file.
    let mut sample = super::lines::head_lines(path, infer_rows + 1, Some(b'"')).map_err(unreadable)?;
    if tolerant {
        sample = well_formed_records(&sample, delimiter);
    }
    let located = |e: String| match first_bad_record(&sample, delimiter, None) {
        Some((line, column, kind, msg)) => DataProblem { kind: Some(kind), message: format!("{}:{line}:{column}: {msg}", path.display()) },
        None => DataProblem { kind: None, message: format!("{}: cannot infer the schema: {e}", path.display()) },
    };
    if let Some(schema) = super::csv_infer::quick_schema(&sample, delimiter) {
        return Ok(schema);
    }
    // Dates are looked for afterwards, only in the columns that can hold them: polars tries
    // some 70 date formats on every text value, which took 90 ms for TPC-H's four CSV tables.
    let read = || {
        read_options(delimiter)
            .map_parse_options(|o| o.with_try_parse_dates(false))
            .with_has_header(true)
            .with_infer_schema_length(Some(infer_rows))
            .into_reader_with_file_handle(Cursor::new(&sample))
            .finish()
    };
    match catch_panic(read) {
        Ok(Ok(df)) => Ok(super::csv_infer::with_dates(&sample, delimiter, (**df.schema()).clone())),
        Ok(Err(e)) => Err(located(clean(&e))),
        Err(panic) => Err(located(panic)),
    }
}

/// The records of `sample` with as many fields as its first (the header), and no unclosed quote.
fn well_formed_records(sample: &[u8], delimiter: u8) -> Vec<u8> {
    let mut reader = records_reader(sample, delimiter);
    let mut record = ::csv::ByteRecord::new();
    let mut out = Vec::with_capacity(sample.len());
    let mut width = None;
    loop {
        let start = reader.position().byte() as usize;
        if !matches!(reader.read_byte_record(&mut record), Ok(true)) {
            return out;
        }
        let raw = &sample[start..(reader.position().byte() as usize).min(sample.len())];
        if *width.get_or_insert(record.len()) == record.len() && unclosed_quote(raw, b'"').is_none() && std::str::from_utf8(raw).is_ok() {
            out.extend_from_slice(raw);
            if !raw.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
    }
}

/// The first record of `sample` that is malformed: an unclosed quote, invalid UTF-8, or a field
/// count other than `width` (default: the first record's). (line in `sample`, column, kind,
/// message).
pub fn first_bad_record(sample: &[u8], delimiter: u8, width: Option<usize>) -> Option<(u64, usize, ErrorKind, String)> {
    let mut reader = records_reader(sample, delimiter);
    let mut record = ::csv::ByteRecord::new();
    let mut width = width;
    loop {
        let start = reader.position().byte() as usize;
        if !matches!(reader.read_byte_record(&mut record), Ok(true)) {
            return None;
        }
        let (start, line) = skip_blank_lines(sample, start, record.position().map_or(1, |p| p.line()));
        let raw = &sample[start..(reader.position().byte() as usize).min(sample.len()).max(start)];
        let want = *width.get_or_insert(record.len());
        if let Some((column, kind, message)) = shape_problem(raw, &record, want, delimiter) {
            return Some((line, column, kind, message));
        }
        if std::str::from_utf8(raw).is_err() {
            let starts = field_starts(raw, delimiter);
            let field = (0..record.len()).find(|&i| std::str::from_utf8(field(&record, i)).is_err()).unwrap_or(0);
            return Some((line, starts.get(field).copied().unwrap_or(0) + 1, ErrorKind::Utf8, format!("invalid UTF-8: {}", shown(raw))));
        }
    }
}

/// A reader of the records of `bytes` as polars sees them: any number of fields, and only `\n`
/// ends a record (the csv crate would also end one at a bare `\r`; a `\r` before `\n` stays on
/// the last field, see [`field`]).
pub(super) fn records_reader(bytes: &[u8], delimiter: u8) -> ::csv::Reader<&[u8]> {
    ::csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(delimiter).terminator(::csv::Terminator::Any(b'\n')).from_reader(bytes)
}

/// Field `i` of a record, without the `\r` of a `\r\n` line end.
pub(super) fn field(record: &::csv::ByteRecord, i: usize) -> &[u8] {
    let f = &record[i];
    if i + 1 == record.len() { f.strip_suffix(b"\r").unwrap_or(f) } else { f }
}

/// The csv crate's record position includes the blank lines it passed over: the record really
/// starts after them. (start byte, line) past them.
fn skip_blank_lines(bytes: &[u8], mut start: usize, mut line: u64) -> (usize, u64) {
    while let Some(&b) = bytes.get(start).filter(|&&b| b == b'\n' || b == b'\r') {
        line += u64::from(b == b'\n');
        start += 1;
    }
    (start, line)
}

/// The first line of a record as text, for messages.
fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    truncate(text.lines().next().unwrap_or("").trim_end_matches('\r'), 120)
}

/// A record with an unclosed quote or not `width` fields: (column, kind, message).
fn shape_problem(raw: &[u8], record: &::csv::ByteRecord, width: usize, delimiter: u8) -> Option<(usize, ErrorKind, String)> {
    if let Some(column) = unclosed_quote(raw, b'"') {
        return Some((column + 1, ErrorKind::Quote, format!("a quoted field is never closed: {}", shown(raw))));
    }
    if record.len() != width {
        let line = super::trim_line_end(raw);
        let column = if record.len() > width { field_starts(line, delimiter).get(width).copied().unwrap_or(0) } else { line.len() } + 1;
        return Some((column, ErrorKind::FieldCount, format!("expected {width} fields but found {}: {}", record.len(), shown(raw))));
    }
    None
}

/// Checks that a file's header names the source's columns, in order.
pub fn check_header(config: &SourceConfig, path: &Path, header: Option<&[u8]>) -> std::result::Result<(), Box<Rejection>> {
    let Some(line) = header else {
        return Err(Box::new(Rejection::in_file(path, 1, 0, 1, ErrorKind::EmptyFile, "the file is empty (expected a header line)".into(), b"")));
    };
    let mut reader = ::csv::ReaderBuilder::new().has_headers(false).delimiter(config.delimiter).from_reader(line);
    let found: Vec<String> = match reader.records().next() {
        Some(Ok(r)) => r.iter().map(|s| s.trim_start_matches('\u{feff}').to_string()).collect(),
        _ => Vec::new(),
    };
    if found.iter().all(|f| f.trim().is_empty()) {
        return Err(Box::new(Rejection::in_file(path, 1, 0, 1, ErrorKind::EmptyFile, "the first line is blank (expected a header line)".into(), line)));
    }
    let expected: Vec<String> = config.schema.iter_names().map(|n| n.to_string()).collect();
    if found != expected {
        let message = format!(
            "the header has columns [{}] but the source '{}' has [{}] (from {})",
            found.join(", "),
            config.name,
            expected.join(", "),
            config.files[0].display()
        );
        return Err(Box::new(Rejection::in_file(path, 1, 0, 1, ErrorKind::SchemaMismatch, message, line)));
    }
    Ok(())
}

/// Parses chunks of CSV lines with the source's schema.
pub struct CsvChunkParser {
    config: Arc<SourceConfig>,
    shape: CsvShape,
    direct: DirectParse,
    /// When only some columns are read: those fields, picked out of each record for polars.
    picked: Option<(FieldPicker, DirectParse)>,
    /// When date, `i64` or `f64` columns are among the columns picked: their fields parsed
    /// while the others are picked. None once a chunk held a date written otherwise than
    /// `YYYY-MM-DD`, an integer otherwise than `-?[0-9]{1,18}`, or a float quoted, with leading
    /// blanks or not a float: polars parses them from then on.
    typed: Option<TypedPick>,
    /// The picked fields of the chunk being parsed (kept for its capacity).
    scratch: Vec<u8>,
    /// The columns parsed out of the chunk being parsed.
    values: PickedValues,
}

/// Fields picked for polars, but for the date, integer and float fields, which the picker
/// parses itself.
struct TypedPick {
    picker: FieldPicker,
    /// The parse of the other fields picked (None: every column read is parsed by the picker).
    text: Option<DirectParse>,
    /// Where each column the picker parses goes in the frame, and its name.
    columns: Vec<(usize, PlSmallStr)>,
}

/// How a chunk's fields were picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Picked {
    /// Not picked: polars parses the chunk as it is.
    No,
    /// The fields read, into `scratch`.
    Fields,
    /// The fields read but the dates and numbers into `scratch`, those into `values`.
    Typed,
}

/// What polars' chunk parser needs, prepared once per source.
struct DirectParse {
    options: CsvParseOptions,
    /// The schema polars parses into (a `time` column is read as text, then cast).
    schema: SchemaRef,
    to_cast: Vec<Field>,
    /// Indices of the columns read, ascending.
    projection: Vec<usize>,
    /// True when a text column is read: polars leaves its UTF-8 check to the caller.
    check_utf8: bool,
}

impl CsvChunkParser {
    /// A parser for `config`'s files, whose records have `shape`.
    pub fn new(config: Arc<SourceConfig>, shape: CsvShape) -> Self {
        let mut schema = config.schema.clone();
        let mut to_cast = Vec::new();
        // It only moves `time` columns to `to_cast`; it cannot fail on a schema polars inferred.
        let _ = csv_internal::prepare_csv_schema(&mut schema, &mut to_cast);
        let projection: Vec<usize> = match config.file_projection() {
            Some(p) => config.schema.iter_names().enumerate().filter(|(_, n)| p.iter().any(|c| c == n.as_str())).map(|(i, _)| i).collect(),
            None => (0..config.schema.len()).collect(),
        };
        let options = (*read_options(config.delimiter).parse_options).clone();
        // The schema of the columns read that `keep` keeps, for a parse of picked fields.
        let picked_schema = |keep: &dyn Fn(usize) -> bool| -> Schema {
            projection.iter().filter(|&&i| keep(i)).filter_map(|&i| schema.get_at_index(i)).map(|(n, t)| Field::new(n.clone(), t.clone())).collect()
        };
        let picked = (!projection.is_empty() && projection.len() < config.schema.len())
            .then(|| (FieldPicker::new(shape, &projection), DirectParse::new(options.clone(), Arc::new(picked_schema(&|_| true)), to_cast.clone(), None)));
        let kind = |i: usize| match schema.get_at_index(i).map(|(_, t)| t) {
            Some(DataType::Date) => Some(ParsedKind::Date),
            Some(DataType::Int64) => Some(ParsedKind::Int),
            Some(DataType::Float64) => Some(ParsedKind::Float),
            _ => None,
        };
        let parsed: Vec<(usize, ParsedKind)> = projection.iter().filter_map(|&i| kind(i).map(|k| (i, k))).collect();
        // Only where fields are picked anyway: picking every field of a record cost more than
        // polars' date parser (orders read whole, one date in nine columns: 6% slower).
        let typed = (picked.is_some() && !parsed.is_empty()).then(|| {
            let text = picked_schema(&|i| kind(i).is_none());
            let columns = projection
                .iter()
                .enumerate()
                .filter(|&(_, &i)| kind(i).is_some())
                .filter_map(|(at, &i)| schema.get_at_index(i).map(|(n, _)| (at, n.clone())))
                .collect();
            let text = (!text.is_empty()).then(|| DirectParse::new(options.clone(), Arc::new(text), to_cast.clone(), None));
            TypedPick { picker: FieldPicker::with_parsed(shape, &projection, &parsed), text, columns }
        });
        let direct = DirectParse::new(options, schema, to_cast, Some(projection));
        CsvChunkParser { config, shape, direct, picked, typed, scratch: Vec::new(), values: PickedValues::default() }
    }

    /// The records of `bytes` ([`CsvShape::scan`]) and, when only some columns are read, how
    /// their fields were picked ([`FieldPicker::scan_and_pick`]; dates and numbers parsed on
    /// the way where some of them are).
    fn scan(&mut self, bytes: &[u8]) -> Option<(Records, Picked)> {
        if let Some(typed) = &self.typed {
            match typed.picker.scan_pick_and_parse(bytes, &mut self.scratch, &mut self.values) {
                Some((records, true)) => return Some((records, Picked::Typed)),
                Some(_) if !self.values.ok => self.typed = None,
                scanned => return scanned.map(|(records, _)| (records, Picked::No)),
            }
        }
        match &self.picked {
            Some((picker, _)) => picker.scan_and_pick(bytes, &mut self.scratch).map(|(r, picked)| (r, if picked { Picked::Fields } else { Picked::No })),
            None => self.shape.scan(bytes).map(|r| (r, Picked::No)),
        }
    }

    /// The parse of a chunk of `records` whole records without a blank line, as `picked`.
    fn read_records(&mut self, bytes: &[u8], records: usize, picked: Picked) -> std::result::Result<DataFrame, String> {
        match (&self.picked, &self.typed, picked) {
            (_, Some(typed), Picked::Typed) if records > 0 && self.values.columns.iter().all(|c| c.len() == records) => {
                let mut df = match &typed.text {
                    Some(text) => read_guarded(text, &self.shape, &self.scratch, Some(records))?,
                    None => DataFrame::new(records, Vec::new()).map_err(|e| clean(&e))?,
                };
                for ((at, name), values) in typed.columns.iter().zip(&mut self.values.columns) {
                    let column = match values {
                        ParsedValues::Days(days) => iso_dates::column(name.clone(), std::mem::take(days)),
                        ParsedValues::Ints(ints) => int_column(name.clone(), std::mem::take(ints)),
                        ParsedValues::Floats(floats, nulls) => float_column(name.clone(), std::mem::take(floats), nulls),
                    };
                    df.insert_column(*at, column).map_err(|e| clean(&e))?;
                }
                Ok(df)
            }
            (Some((_, direct)), _, Picked::Fields) if records > 0 => read_guarded(direct, &self.shape, &self.scratch, Some(records)),
            _ => read_guarded(&self.direct, &self.shape, bytes, Some(records)),
        }
    }

    /// polars' parse of whole records (a panic in polars counts as a failed parse), of their
    /// picked fields where they can be picked: records are parsed again this way on the slow
    /// path, and only the columns read are checked for UTF-8 on both paths alike.
    fn read(&mut self, bytes: &[u8]) -> std::result::Result<DataFrame, String> {
        match self.scan(bytes) {
            Some((r, picked)) if !r.blank => self.read_records(bytes, r.count, picked),
            _ => read_guarded(&self.direct, &self.shape, bytes, None),
        }
    }
}

/// An integer column of `ints` ([`NULL_INT`] for null).
fn int_column(name: PlSmallStr, ints: Vec<i64>) -> Column {
    use polars_arrow::array::PrimitiveArray;
    use polars_arrow::bitmap::MutableBitmap;
    let validity = ints.contains(&NULL_INT).then(|| ints.iter().map(|&v| v != NULL_INT).collect::<MutableBitmap>().into());
    Int64Chunked::with_chunk(name, PrimitiveArray::new(ArrowDataType::Int64, ints.into(), validity)).into_column()
}

/// A float column of `floats`, null at rows `nulls`.
fn float_column(name: PlSmallStr, floats: Vec<f64>, nulls: &[u32]) -> Column {
    use polars_arrow::array::PrimitiveArray;
    use polars_arrow::bitmap::MutableBitmap;
    let validity = (!nulls.is_empty()).then(|| {
        let mut valid = MutableBitmap::from_len_set(floats.len());
        nulls.iter().for_each(|&row| valid.set(row as usize, false));
        valid.into()
    });
    Float64Chunked::with_chunk(name, PrimitiveArray::new(ArrowDataType::Float64, floats.into(), validity)).into_column()
}

impl DirectParse {
    /// `projection`: the columns of `schema` read (None: all).
    fn new(options: CsvParseOptions, schema: SchemaRef, to_cast: Vec<Field>, projection: Option<Vec<usize>>) -> Self {
        let projection = projection.unwrap_or_else(|| (0..schema.len()).collect());
        let check_utf8 = projection.iter().any(|&i| schema.get_at_index(i).is_some_and(|(_, t)| t.is_string()));
        DirectParse { options, schema, to_cast, projection, check_utf8 }
    }
}

/// [`read_unguarded`], with a panic in polars counted as a failed parse.
fn read_guarded(d: &DirectParse, shape: &CsvShape, bytes: &[u8], records: Option<usize>) -> std::result::Result<DataFrame, String> {
    match catch_panic(|| read_unguarded(d, shape, bytes, records)) {
        Ok(r) => r.map_err(|e| clean(&e)),
        Err(panic) => Err(format!("the CSV reader failed: {panic}")),
    }
}

/// Calls polars' chunk parser directly, as its streaming CSV source does. `CsvReader` would
/// first count the lines again with a byte-at-a-time loop (polars' SIMD version needs a
/// nightly compiler), which took 16% of TPC-H Q1 on CSV, and would hand back 16 chunks per
/// column.
/// `records`: how many records `bytes` holds, when the caller knows (no blank line).
fn read_unguarded(d: &DirectParse, shape: &CsvShape, bytes: &[u8], records: Option<usize>) -> PolarsResult<DataFrame> {
    if d.check_utf8 && !csv_internal::validate_utf8(bytes) {
        polars_bail!(ComputeError: "invalid utf-8 sequence");
    }
    let records = match records {
        Some(n) => n,
        None => shape.complete_records(bytes).ok_or_else(|| polars_err!(ComputeError: "a record has the wrong number of fields"))?,
    };
    let mut df = csv_internal::read_chunk(bytes, &d.options, &d.schema, false, &d.projection, 0, records, None, usize::MAX, bytes.len(), Some(0))?;
    csv_internal::cast_columns(&mut df, &d.to_cast, false, false)?;
    if df.height() != records {
        polars_bail!(ComputeError: "CSV malformed: expected {records} rows, found {}", df.height());
    }
    Ok(df)
}

impl ChunkParser for CsvChunkParser {
    fn parse(&mut self, split: &Split, offset: u64, chunk: &[u8], lines: &mut LineCounter) -> Result<Parsed> {
        let c = Arc::clone(&self.config);
        // One pass finds the records, blank lines and the longest record; the exact check of
        // line lengths runs only when a record is too long (it may hold quoted newlines).
        if let Some((scan, picked)) = self.scan(chunk)
            && !scan.blank
            && (scan.longest <= c.max_line_bytes || !has_long_line(chunk, c.max_line_bytes))
            && let Ok(df) = self.read_records(chunk, scan.count, picked)
        {
            return Ok(Parsed { df: Some(df), rejected: Vec::new(), dropped: Default::default() });
        }
        // Slow path: check record by record.
        let base = lines.line_at(offset);
        let (good, mut rejected) = classify(&c, &split.path, offset, base, chunk);
        let (frames, bad) = parse_good(chunk, &good, &mut |b| self.read(b));
        for (span, message) in bad {
            let raw = &chunk[span.start..span.end];
            let message = format!("cannot parse the record: {message}");
            rejected.push(Rejection::in_file(&split.path, base + span.line - 1, offset + span.start as u64, 1, ErrorKind::Type, message, raw));
        }
        rejected.sort_by_key(|r| r.offset);
        Ok(Parsed { df: concat_frames(frames).map_err(|e| Error::execution("source", &c.name, e))?, rejected, dropped: Default::default() })
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
    let mut reader = records_reader(chunk, config.delimiter);
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
        let (start, line) = skip_blank_lines(chunk, pos.byte() as usize, pos.line());
        let end = (reader.position().byte() as usize).min(chunk.len()).max(start);
        let span = Span { line, start, end };
        let raw = &chunk[start..end];
        if record.len() == 1 && field(&record, 0).is_empty() {
            continue; // blank line
        }
        let reject = |column: usize, kind: ErrorKind, message: String| {
            Rejection::in_file(path, base + span.line - 1, offset + start as u64, column as u64, kind, message, raw)
        };
        // The limit is on physical lines, as the fast path checks it.
        let line_len = raw.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l).len()).max().unwrap_or(0);
        if line_len > config.max_line_bytes {
            let message = format!("the line is {line_len} bytes long, more than max_line_bytes = {}", config.max_line_bytes);
            rejected.push(reject(config.max_line_bytes + 1, ErrorKind::LineTooLong, message));
            continue;
        }
        if let Some((column, kind, message)) = shape_problem(raw, &record, width, config.delimiter) {
            rejected.push(reject(column, kind, message));
            continue;
        }
        let starts = field_starts(raw, config.delimiter);
        let problem = config.schema.iter().enumerate().filter(|(i, _)| read[*i]).find_map(|(i, (name, dtype))| {
            let column = starts.get(i).copied().unwrap_or(0) + 1;
            let Ok(value) = std::str::from_utf8(field(&record, i)) else {
                return Some(reject(column, ErrorKind::Utf8, format!("column '{name}': invalid UTF-8: {}", shown(raw))));
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
fn field_starts(line: &[u8], delimiter: u8) -> Vec<usize> {
    let mut starts = vec![0];
    let mut quoted = false;
    for (i, &b) in line.iter().enumerate() {
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
    fn an_empty_file_needs_a_header_only_when_it_has_one() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let declared = [("t".to_string(), DataType::Int64), ("k".to_string(), DataType::String)];
        let schema = infer(tmp.path(), false, b',', 100, &declared, false).unwrap();
        assert_eq!(schema.iter_names().map(|n| n.as_str()).collect::<Vec<_>>(), ["t", "k"]);
        let e = infer(tmp.path(), true, b',', 100, &declared, false).unwrap_err();
        assert_eq!(e.kind, Some(ErrorKind::EmptyFile));
    }

    #[test]
    fn dates_are_inferred_as_polars_infers_them() {
        let samples = [
            "d,t,s,n\n2021-01-31,2021-01-31T10:00:00,x,1\n1999-12-01,2021-02-01T11:30:00,y,2\n",
            // Nulls among dates, a column of nulls, day-first dates, times, a quoted date.
            "d,e,dmy,tm,q\n,,31-01-2021,10:00:00,\"2021-01-01\"\n2021-01-31,,01-02-2021,11:30,\"2021-01-02\"\n",
            // Mixed kinds stay text: a date among numbers, names, dates and datetimes.
            "a,b,c,d\n2021-01-31,2021-01-31,2021-01-31,2021-01-31\n12,bob,2021-01-31T10:00:00,1\n",
            // Numbers that look like compact dates stay numbers; text never becomes a date.
            "a,b\n20210131,Customer#1\n20210201,2021-01-01\n",
            "a,b\r\n2021-01-31,x\r\n2021-02-01,y\r\n",
            "a;b\n2021-01-31;true\n",
            "a,b\n2021-01-31,\"\"\n\"\",2021-01-31\n2021-02-01,2021-02-01\n",
        ];
        for sample in samples {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            std::io::Write::write_all(&mut file, sample.as_bytes()).unwrap();
            let delimiter = if sample.contains(';') { b';' } else { b',' };
            let ours = infer(file.path(), true, delimiter, 100, &[], false).unwrap();
            let theirs = read_options(delimiter)
                .with_has_header(true)
                .with_infer_schema_length(Some(100))
                .into_reader_with_file_handle(Cursor::new(sample.as_bytes()))
                .finish()
                .unwrap();
            assert_eq!(&ours, &**theirs.schema(), "{sample}");
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, b"d,t\n2021-01-31,10:00:00\n").unwrap();
        let schema = infer(file.path(), true, b',', 100, &[], false).unwrap();
        assert_eq!(schema.iter_values().cloned().collect::<Vec<_>>(), [DataType::Date, DataType::Time]);
    }

    #[test]
    fn field_starts_respect_quotes() {
        assert_eq!(field_starts(b"a,\"b,c\",d", b','), [0, 2, 8]);
    }

    #[test]
    fn blank_lines_are_not_records() {
        // polars would read an empty line as a row of nulls: such a chunk takes the slow path,
        // which skips them, as DuckDB does.
        let shape = CsvShape { width: 2, delimiter: b',', quote: b'"' };
        assert!(shape.scan(b"1,a\n\n\n2,b\n").unwrap().blank);
        assert!(shape.scan(b"1,a\n\r\n2,b\n").unwrap().blank);
        assert!(shape.scan(b"\n1,a\n").unwrap().blank);
        assert!(!shape.scan(b"1,a\n2,b\n").unwrap().blank);
        assert!(!shape.scan(b"1,\"a\n\nb\"\n2,b\n").unwrap().blank, "a blank line inside quotes is data");
        assert_eq!(skip_blank_lines(b"1,a\n\r\n\n2,b\n", 4, 2), (7, 4));
    }

    #[test]
    fn picked_fields_parse_as_polars_parses_whole_records() {
        let mut next = crate::testing::below(0x2545_f491_4f6c_dd1du64);
        let columns = [("a", DataType::Int64), ("b", DataType::String), ("c", DataType::String), ("d", DataType::String)];
        let schema: Schema = columns.iter().map(|(n, t)| Field::new((*n).into(), t.clone())).collect();
        let projections: [&[&str]; 8] = [&["a"], &["b"], &["a", "c"], &["b", "d"], &["c"], &["a", "b"], &["b", "c", "d"], &["a", "b", "d"]];
        let shape = CsvShape { width: 4, delimiter: b',', quote: b'"' };
        let (mut picked, mut cases) = (0, 0);
        for case in 0..2400 {
            let mut text = Vec::new();
            for _ in 0..next(12) + 1 {
                for f in 0..4 {
                    if f > 0 {
                        text.push(b',');
                    }
                    let value: &[u8] = match (f, next(9)) {
                        (0, 0) => b"\"17\"",
                        (0, _) => b"42",
                        (_, 0) => b"\"x,\ny\"",
                        (_, 1) => b"\"say \"\"hi\"\"\"",
                        (_, 2) => b"",
                        (_, 3) if next(6) == 0 => b"mid\"quote",
                        (_, 4) => b"a long enough value to cross the 64-byte blocks of the masks",
                        _ => b"plain",
                    };
                    text.extend_from_slice(value);
                }
                text.extend_from_slice(if next(4) == 0 { b"\r\n" } else { b"\n" });
            }
            if next(4) == 0 {
                text.truncate(text.len() - 1);
            }
            let Some(scan) = shape.scan(&text).filter(|s| !s.blank) else { continue };
            let names = projections[case % projections.len()];
            let mut config = SourceConfig::plain(crate::pipeline::SourceFormat::Csv, Vec::new(), schema.clone(), crate::pipeline::OnError::Fail);
            config.projection = Some(names.iter().map(|n| n.to_string()).collect());
            let parser = CsvChunkParser::new(Arc::new(config), shape);
            let (picker, direct) = parser.picked.as_ref().expect("some columns are left out");
            let mut buf = Vec::new();
            cases += 1;
            let (records, ok) = picker.scan_and_pick(&text, &mut buf).expect("the scan found whole records");
            assert_eq!(records, scan);
            if !ok {
                continue;
            }
            picked += 1;
            let ours = read_guarded(direct, &shape, &buf, Some(scan.count));
            let theirs = read_guarded(&parser.direct, &shape, &text, Some(scan.count));
            let shown = String::from_utf8_lossy(&text);
            match (ours, theirs) {
                (Ok(a), Ok(b)) => assert!(a.equals_missing(&b), "{names:?} {shown:?}\n{a}\n{b}"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{names:?} {shown:?}: picked {a:?}, whole {b:?}"),
            }
        }
        assert!(picked > cases / 2, "{picked} of {cases} picked");
    }

    #[test]
    fn numbers_and_dates_parsed_while_picking_read_as_polars_reads_them() {
        // Chunks whose date columns mix ISO dates with empty and quoted values, other formats
        // polars reads, impossible dates, text and `\r\n` line ends, and whose integer and float
        // columns mix plain numbers with signs, blanks, quotes, overflow, special values and
        // text: the parse, rows and rejections alike, is the one polars' parsers give.
        let mut next = crate::testing::below(0x2545_f491_4f6c_dd1du64);
        let columns = [("a", DataType::Int64), ("d", DataType::Date), ("b", DataType::String), ("e", DataType::Date), ("f", DataType::Float64)];
        let schema: Schema = columns.iter().map(|(n, t)| Field::new((*n).into(), t.clone())).collect();
        let shape = CsvShape { width: 5, delimiter: b',', quote: b'"' };
        let reads: [&[&str]; 8] = [&["d"], &["a", "d"], &["d", "e"], &["a", "d", "e"], &["b", "e"], &["e"], &["a", "f"], &["b", "f"]];
        let odd: [&[u8]; 9] = [b"\"\"", b"\"1995-03-15\"", b"2023-02-29", b"1994/01/02", b"x", b"1994-01-01 ", b"1994-1-2", b"0000-01-01", b"\xff"];
        let path = std::path::PathBuf::from("/nonexistent/input.csv");
        let split = Split { file_index: 0, path: path.clone(), start: 0, end: 1 << 20, ordinal: 0, problem: None };
        let (mut fast, mut cases) = (0, 0);
        for case in 0..1200 {
            let (mut text, rare) = (Vec::new(), next(3) == 0);
            for row in 0..next(12) + 1 {
                let date = |next: &mut dyn FnMut(u64) -> u64| -> Vec<u8> {
                    match next(if rare { 12 } else { 40 }) {
                        0 => Vec::new(),
                        n @ 1..=9 if rare => odd[n as usize - 1].to_vec(),
                        n => format!("{:04}-{:02}-{:02}", 1990 + n % 9, 1 + n % 12, 1 + n % 28).into_bytes(),
                    }
                };
                let (d, e) = (date(&mut next), date(&mut next));
                let odd_ints: [&str; 14] = [
                    "",
                    "+5",
                    " 7",
                    "\"12\"",
                    "99999999999999999999",
                    "1.5",
                    "-",
                    "007",
                    "-0",
                    "9223372036854775807",
                    "-999999999999999999",
                    "x",
                    "1e3",
                    "\"\"",
                ];
                let int = match next(if rare { 20 } else { 60 }) {
                    n @ 0..=13 if rare => odd_ints[n as usize].to_string(),
                    n if n % 2 == 0 => format!("-{row}{n}"),
                    _ => row.to_string(),
                };
                text.extend_from_slice(format!("{int},").as_bytes());
                text.extend_from_slice(&d);
                text.extend_from_slice(if next(8) == 0 { b",\"t,u\"," } else { b",t," });
                text.extend_from_slice(&e);
                let odd_floats: [&str; 18] =
                    ["", " 2.5", "\"3\"", "1e3", "inf", "-inf", "NaN", "nan", "+1.0", ".5", "5.", "x", "0x10", "1.0e", "-0.0", "1_000", "2.5 ", "1e999"];
                let float = match next(if rare { 30 } else { 60 }) {
                    n @ 0..=17 if rare => odd_floats[n as usize].to_string(),
                    n => format!("{}.{:02}", row * 7 + n, n * 13 % 100),
                };
                text.extend_from_slice(format!(",{float}").as_bytes());
                text.extend_from_slice(if next(4) == 0 { b"\r\n" } else { b"\n" });
            }
            let read = reads[case % reads.len()];
            let mut config = SourceConfig::plain(crate::pipeline::SourceFormat::Csv, vec![path.clone()], schema.clone(), crate::pipeline::OnError::Skip);
            config.projection = Some(read.iter().map(|n| n.to_string()).collect());
            let config = Arc::new(config);
            let mut ours = CsvChunkParser::new(config.clone(), shape);
            let mut theirs = CsvChunkParser::new(config, shape);
            theirs.typed = None;
            let a = ours.parse(&split, 0, &text, &mut LineCounter::new(&path)).unwrap();
            let b = theirs.parse(&split, 0, &text, &mut LineCounter::new(&path)).unwrap();
            let shown = String::from_utf8_lossy(&text);
            match (&a.df, &b.df) {
                (Some(x), Some(y)) => assert!(x.equals_missing(y), "{read:?} {shown:?}\n{x}\n{y}"),
                (x, y) => assert_eq!(x.as_ref().map(|d| d.height()), y.as_ref().map(|d| d.height()), "{read:?} {shown:?}"),
            }
            let described = |p: &Parsed| p.rejected.iter().map(|r| format!("{:?} {:?} {:?} {}", r.line, r.column, r.kind, r.message)).collect::<Vec<_>>();
            assert_eq!(described(&a), described(&b), "{read:?} {shown:?}");
            cases += 1;
            fast += ours.typed.is_some() as usize;
        }
        assert!(fast > cases / 2 && fast < cases, "{fast} of {cases} chunks had their dates parsed while picking");
        // Where every column is read, nothing is picked, and polars parses the dates.
        let mut config = SourceConfig::plain(crate::pipeline::SourceFormat::Csv, vec![path.clone()], schema, crate::pipeline::OnError::Skip);
        config.projection = Some(columns.iter().map(|(n, _)| n.to_string()).collect());
        assert!(CsvChunkParser::new(Arc::new(config), shape).typed.is_none());
    }

    /// Rows kept and rejected (with their kinds) from one chunk of a source of columns
    /// `a: int, b: str, c: str` that reads `read`.
    fn parse_chunk(read: &[&str], chunk: &[u8]) -> (usize, Vec<ErrorKind>) {
        let columns = [("a", DataType::Int64), ("b", DataType::String), ("c", DataType::String)];
        let schema: Schema = columns.iter().map(|(n, t)| Field::new((*n).into(), t.clone())).collect();
        let path = std::path::PathBuf::from("/nonexistent/input.csv");
        let mut config = SourceConfig::plain(crate::pipeline::SourceFormat::Csv, vec![path.clone()], schema, crate::pipeline::OnError::Skip);
        config.projection = Some(read.iter().map(|n| n.to_string()).collect());
        let shape = CsvShape { width: 3, delimiter: b',', quote: b'"' };
        let mut parser = CsvChunkParser::new(Arc::new(config), shape);
        let split = Split { file_index: 0, path: path.clone(), start: 0, end: 1 << 20, ordinal: 0, problem: None };
        let parsed = parser.parse(&split, 0, chunk, &mut LineCounter::new(&path)).unwrap();
        (parsed.df.map_or(0, |d| d.height()), parsed.rejected.iter().map(|r| r.kind).collect())
    }

    #[test]
    fn only_the_columns_read_are_checked_for_utf8_on_every_path() {
        // Fields picked; a ragged record sends the chunk to the slow path; a quote in the middle
        // of a field leaves the chunk to polars whole.
        assert_eq!(parse_chunk(&["a", "c"], b"1,\xff,x\n2,p,y\n"), (2, vec![]));
        assert_eq!(parse_chunk(&["a", "c"], b"1,\xff,x\n2,p,y\n3,q\n"), (2, vec![ErrorKind::FieldCount]));
        assert_eq!(parse_chunk(&["a", "c"], b"1,\xff,x\n2,p\"q\",y\n"), (2, vec![]));
        assert_eq!(parse_chunk(&["a", "c"], b"1,p,\xff\n2,p,y\n"), (1, vec![ErrorKind::Utf8]));
        assert_eq!(parse_chunk(&["a", "b", "c"], b"1,\xff,x\n2,p,y\n"), (1, vec![ErrorKind::Utf8]));
    }

    #[test]
    fn a_quote_left_open_at_the_end_is_rejected_whatever_is_read() {
        for read in [&["a"][..], &["a", "c"], &["a", "b", "c"]] {
            assert_eq!(parse_chunk(read, b"1,p,x\n2,p,\"y"), (1, vec![ErrorKind::Quote]), "{read:?}");
            assert_eq!(parse_chunk(read, b"1,p,x\n2,\"p,y"), (1, vec![ErrorKind::Quote]), "{read:?}");
        }
    }
}
