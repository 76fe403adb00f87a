//! CSV schema inference without polars' CSV reader, for samples plain enough that the answer
//! is certainly the one polars gives. polars' inference matches every sampled value against
//! Unicode regexes (compiled on first use, 2 ms a process) and then reads the whole sample into
//! a frame: 63% of `perf`'s samples of planning TPC-H Q10 over CSV, on the critical path of
//! every run (planning it took 22 ms before and 16 after, medians of 15 `rivulet validate`
//! runs). Here each value is classified by a few byte comparisons, by the rules of polars'
//! `infer_field_schema`; a value those cannot settle (not ASCII, or quoted) is handed to polars'
//! own function, and a sample that is not plain ([`quick_schema`]) to polars' reader.
use polars::io::csv::read::schema_inference::{finish_infer_field_schema, infer_field_schema};
use polars::prelude::*;
use polars::time::chunkedarray::string::infer::infer_pattern_single;
use polars::time::prelude::string::Pattern;

use super::csv::{field, records_reader};
use super::iso_dates::iso_days;
use super::trim_line_end;

/// The schema polars infers for `sample` (a header line, then records), or None
/// when the sample is not plain: invalid UTF-8, a record whose field count differs from the
/// header's, a field that is not its value written plainly or between two quotes (a doubled
/// quote, a quote inside, a line end, text after the closing quote: polars' inference keeps
/// such fields' quotes where the `csv` crate removes them), or a header name that is empty or
/// repeated (polars renames repeats). Those go through polars' reader, which also words the
/// errors.
pub(super) fn quick_schema(sample: &[u8], delimiter: u8) -> Option<Schema> {
    std::str::from_utf8(sample).ok()?;
    let mut records = SampleRecords::new(sample, delimiter);
    let (mut record, mut quoted) = (::csv::ByteRecord::new(), Vec::new());
    if !records.next(&mut record, &mut quoted)? {
        return None;
    }
    let mut names: PlIndexSet<PlSmallStr> = PlIndexSet::default();
    for i in 0..record.len() {
        let name = std::str::from_utf8(field(&record, i)).ok()?;
        if name.is_empty() || !names.insert(name.into()) {
            return None;
        }
    }
    let mut kinds = vec![ColumnKinds::default(); names.len()];
    while let Some(plain) = records.next(&mut record, &mut quoted) {
        if !plain || record.len() != names.len() {
            return None;
        }
        for (i, kinds) in kinds.iter_mut().enumerate() {
            kinds.add(&record, &quoted, i);
        }
    }
    Some(names.into_iter().zip(&kinds).map(|(name, kinds)| Field::new(name, kinds.dated())).collect())
}

/// `schema` (inferred without dates) with the text columns whose every value in `sample` is a
/// date, datetime or time of one kind typed so, as polars' own inference with dates does. A
/// column can only change when all its values were text: a number or boolean among dates makes
/// it text either way. Each column stops at its first value that is not a date, so a column of
/// names costs one try instead of one per row.
pub(super) fn with_dates(sample: &[u8], delimiter: u8, mut schema: Schema) -> Schema {
    let text: Vec<usize> = schema.iter_values().enumerate().filter(|(_, t)| **t == DataType::String).map(|(i, _)| i).collect();
    if text.is_empty() {
        return schema;
    }
    let mut records = Vec::new();
    let mut reader = SampleRecords::new(sample, delimiter);
    let (mut record, mut quoted) = (::csv::ByteRecord::new(), Vec::new());
    while let Some(plain) = reader.next(&mut record, &mut quoted) {
        // A record not written plainly is taken as the `csv` crate reads it.
        records.push((record.clone(), if plain { quoted.clone() } else { Vec::new() }));
    }
    for i in text {
        let mut kinds = ColumnKinds::default();
        // The first record is the header.
        for (record, quoted) in records.iter().skip(1) {
            kinds.add(record, quoted, i);
        }
        if let Some((_, t)) = schema.get_at_index_mut(i) {
            *t = kinds.dated();
        }
    }
    schema
}

/// What the sampled values of one column say of its type.
#[derive(Clone, Default)]
struct ColumnKinds {
    /// The kinds of its values, dates not looked for.
    plain: PlIndexSet<DataType>,
    /// The kinds of its values up to the first that is text, dates looked for.
    dated: PlIndexSet<DataType>,
    /// A value that is text, dates looked for, was seen.
    text: bool,
}

impl ColumnKinds {
    /// Adds field `i` of `record` (see [`field_kind`]).
    fn add(&mut self, record: &::csv::ByteRecord, quoted: &[bool], i: usize) {
        let Some(kind) = field_kind(record, quoted, i, false) else { return };
        if !self.text {
            // Only text can be a date: a number or a boolean is one either way.
            let dated = if kind == DataType::String { field_kind(record, quoted, i, true).unwrap_or(DataType::String) } else { kind.clone() };
            self.text = dated == DataType::String;
            self.dated.insert(dated);
        }
        self.plain.insert(kind);
    }

    /// The column's type as polars infers it, dates looked for where its values are all text.
    fn dated(&self) -> DataType {
        let plain = finish_infer_field_schema(&self.plain);
        if plain == DataType::String && !self.dated.is_empty() { finish_infer_field_schema(&self.dated) } else { plain }
    }
}

/// The type polars' inference gives field `i` of `record` (`quoted` tells which of its fields
/// were between quotes), or None for a missing value.
fn field_kind(record: &::csv::ByteRecord, quoted: &[bool], i: usize, dates: bool) -> Option<DataType> {
    let value = if i < record.len() { field(record, i) } else { b"" };
    match (value.is_empty(), quoted.get(i) == Some(&true)) {
        // polars' inference takes `""` for text, not for a missing value.
        (true, true) => Some(DataType::String),
        (true, false) => None,
        _ => Some(value_kind(value, dates)),
    }
}

/// The records of a sample, each with whether it is written plainly (see [`written_plainly`]).
struct SampleRecords<'a> {
    sample: &'a [u8],
    reader: ::csv::Reader<&'a [u8]>,
    delimiter: u8,
}

impl<'a> SampleRecords<'a> {
    fn new(sample: &'a [u8], delimiter: u8) -> Self {
        SampleRecords { sample, reader: records_reader(sample, delimiter), delimiter }
    }

    /// Reads the next record into `record`: None at the end, else whether it is written
    /// plainly, and then `quoted` tells which of its fields were between quotes.
    fn next(&mut self, record: &mut ::csv::ByteRecord, quoted: &mut Vec<bool>) -> Option<bool> {
        let start = self.reader.position().byte() as usize;
        if !matches!(self.reader.read_byte_record(record), Ok(true)) {
            return None;
        }
        let end = (self.reader.position().byte() as usize).min(self.sample.len());
        // The position before a record includes the blank lines the reader passed over.
        let line = &self.sample[start.min(end)..end];
        let line = &line[line.iter().take_while(|&&b| b == b'\n' || b == b'\r').count()..];
        Some(written_plainly(trim_line_end(line), record, self.delimiter, quoted))
    }
}

/// True when `line` is the fields of `record`, each written as it is or between two quotes,
/// joined by `delimiter`, and no field holds a quote or a line end. `quoted` tells which fields
/// were between quotes.
fn written_plainly(line: &[u8], record: &::csv::ByteRecord, delimiter: u8, quoted: &mut Vec<bool>) -> bool {
    let mut rest = line;
    quoted.clear();
    for i in 0..record.len() {
        let value = field(record, i);
        if value.iter().any(|&b| matches!(b, b'"' | b'\n' | b'\r')) {
            return false;
        }
        quoted.push(rest.first() == Some(&b'"'));
        rest = match rest.strip_prefix(b"\"") {
            Some(quoted) => match quoted.strip_prefix(value).and_then(|r| r.strip_prefix(b"\"")) {
                Some(r) => r,
                None => return false,
            },
            None => match rest.strip_prefix(value) {
                Some(r) => r,
                None => return false,
            },
        };
        if i + 1 < record.len() {
            rest = match rest.split_first() {
                Some((&b, r)) if b == delimiter => r,
                _ => return false,
            };
        }
    }
    rest.is_empty()
}

/// The type polars' `infer_field_schema` gives one CSV value (dates only when `dates`).
pub(super) fn value_kind(value: &[u8], dates: bool) -> DataType {
    let quoted = value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"';
    let text = match std::str::from_utf8(value) {
        Ok(text) if value.is_ascii() && !quoted => text,
        // Unicode digits and case folding, or quotes: polars' own rules.
        _ => return infer_field_schema(&String::from_utf8_lossy(value), dates, false),
    };
    if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false") {
        DataType::Boolean
    } else if is_float(value) {
        DataType::Float64
    } else if is_integer(value) {
        if text.parse::<i64>().is_ok() { DataType::Int64 } else { DataType::Int128 }
    } else if !dates {
        DataType::String
    } else if iso_days(value).is_some() {
        // `%Y-%m-%d` is among the date formats polars tries.
        DataType::Date
    } else {
        match infer_pattern_single(text) {
            Some(Pattern::DatetimeYMD | Pattern::DatetimeDMY) => DataType::Datetime(TimeUnit::Microseconds, None),
            Some(Pattern::DateYMD | Pattern::DateDMY) => DataType::Date,
            Some(Pattern::DatetimeYMDZ) => DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
            Some(Pattern::Time) => DataType::Time,
            None => DataType::String,
        }
    }
}

/// The number of ASCII digits `b` starts with.
fn digits(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// `[eE][-+]?\d+` and nothing after.
fn is_exponent(b: &[u8]) -> bool {
    let Some((b'e' | b'E', rest)) = b.split_first() else { return false };
    let rest = rest.strip_prefix(b"-").or_else(|| rest.strip_prefix(b"+")).unwrap_or(rest);
    !rest.is_empty() && digits(rest) == rest.len()
}

/// polars' float pattern on ASCII text:
/// `^[-+]?((\d*\.\d+)([eE][-+]?\d+)?|inf|NaN|(\d+)[eE][-+]?\d+|\d+\.)$`.
fn is_float(b: &[u8]) -> bool {
    let b = b.strip_prefix(b"-").or_else(|| b.strip_prefix(b"+")).unwrap_or(b);
    if b == b"inf" || b == b"NaN" {
        return true;
    }
    let whole = digits(b);
    match &b[whole..] {
        [b'.', fraction @ ..] => {
            let n = digits(fraction);
            let after = &fraction[n..];
            if n == 0 { whole > 0 && after.is_empty() } else { after.is_empty() || is_exponent(after) }
        }
        rest => whole > 0 && is_exponent(rest),
    }
}

/// polars' integer pattern on ASCII text: `^-?(\d+)$`.
fn is_integer(b: &[u8]) -> bool {
    let b = b.strip_prefix(b"-").unwrap_or(b);
    !b.is_empty() && digits(b) == b.len()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// Random text over characters that make numbers, booleans, dates and times.
    fn random_value(next: &mut impl FnMut(u64) -> u64) -> String {
        const WORDS: [&str; 12] =
            ["true", "FaLsE", "inf", "NaN", "1994-01-31", "2023-02-29", "31-01-2021", "10:00:00", "2021-01-31T10:00:00", "9223372036854775808", "é", "١٢"];
        const CHARS: &[u8] = b"0123456789.-+eEinfaNtrusl :/T";
        if next(4) == 0 {
            return WORDS[next(WORDS.len() as u64) as usize].to_string();
        }
        (0..next(8) + 1).map(|_| CHARS[next(CHARS.len() as u64) as usize] as char).collect()
    }

    #[test]
    fn values_are_classified_as_polars_classifies_them() {
        let mut next = crate::testing::below(0x9e37_79b9_7f4a_7c15u64);
        let fixed =
            ["5", "-5", "+5", "5.", ".5", "-.5e-3", "5e3", "5.e3", "e3", ".", "-", "", "inf", "-inf", "+NaN", "nan", "TRUE", "1e", "1e+", "00", "\"7\""];
        let mut values: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
        values.extend((0..20_000).map(|_| random_value(&mut next)));
        for value in &values {
            for dates in [false, true] {
                assert_eq!(value_kind(value.as_bytes(), dates), infer_field_schema(value, dates, false), "{value:?} dates={dates}");
            }
        }
    }

    #[test]
    fn plain_samples_get_the_schema_polars_reads_them_with() {
        let mut next = crate::testing::below(0x2545_f491_4f6c_dd1du64);
        let mut checked = 0;
        for _ in 0..400 {
            let width = next(4) as usize + 1;
            let mut sample: String = (0..width).map(|i| format!("c{i}")).collect::<Vec<_>>().join(",") + "\n";
            // Each column draws from a few kinds, so that many columns keep one type.
            let kinds: Vec<u64> = (0..width).map(|_| next(5)).collect();
            // Some samples have fields whose quotes polars' inference would keep.
            let odd = next(4) == 0;
            for _ in 0..next(30) {
                let row: Vec<String> = kinds
                    .iter()
                    .map(|&k| match (k, next(8)) {
                        (_, 0) => String::new(),
                        (0, _) => format!("{}", next(1000) as i64 - 500),
                        (1, n) => format!("{}.{}", next(100), n),
                        (2, _) => ["true", "false", "True"][next(3) as usize].to_string(),
                        (3, _) => format!("199{}-0{}-1{}", next(10), next(9) + 1, next(10)),
                        _ => random_value(&mut next),
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|v| match (next(8), odd) {
                        (0, _) => format!("\"{v}\""),
                        (1, _) => format!("\"{v},{v}\""),
                        (2, true) => format!("\"{v}\"\"\""),
                        (3, true) => format!("{v}\"{v}"),
                        _ => v,
                    })
                    .collect();
                sample += &row.join(",");
                sample += if next(5) == 0 { "\r\n" } else { "\n" };
            }
            let read = |dates: bool| {
                CsvReadOptions::default()
                    .map_parse_options(|o| o.with_try_parse_dates(dates))
                    .with_has_header(true)
                    .into_reader_with_file_handle(Cursor::new(sample.as_bytes()))
                    .finish()
            };
            // A sample polars cannot read takes polars' path, and the dates are then looked for
            // by `with_dates`; the schemas agree otherwise.
            let (Ok(plain), Ok(dated)) = (read(false), read(true)) else { continue };
            assert_eq!(&with_dates(sample.as_bytes(), b',', (**plain.schema()).clone()), &**dated.schema(), "with dates: {sample}");
            if let Some(ours) = quick_schema(sample.as_bytes(), b',') {
                assert_eq!(&ours, &**dated.schema(), "{sample}");
                checked += 1;
            }
        }
        assert!(checked > 200, "{checked} samples compared");
    }

    #[test]
    fn samples_that_are_not_plain_are_left_to_polars() {
        let samples: [&[u8]; 8] =
            [b"a,b\n\"1\"\"\",2\n", b"a,b\n\"1\"x,2\n", b"a,b\n1\"2,3\n", b"a,b\n\"x\ny\",2\n", b"a,a\n1,2\n", b"a,\n1,2\n", b"a,b\n1,2,3\n", b"a,b\n\xff,1\n"];
        for sample in samples {
            assert_eq!(quick_schema(sample, b','), None, "{:?}", String::from_utf8_lossy(sample));
        }
        let schema = quick_schema(b"a;\"b\"\r\n1;x\r\n\"2\";\"y;z\"\r\n", b';').unwrap();
        assert_eq!(schema.iter_names().map(|n| n.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(schema.iter_values().cloned().collect::<Vec<_>>(), [DataType::Int64, DataType::String]);
    }
}
