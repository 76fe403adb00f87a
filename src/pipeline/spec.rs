//! The pipeline file's components as plain Rust types, read from a [`Node`] tree.
//!
//! Reading never stops at the first problem: every unknown key, wrong type and missing value is
//! collected, and the components that could be read are kept so later checks can run on them.
use std::path::PathBuf;

use polars::prelude::{DataType, TimeUnit};

use super::diagnostics::Diagnostics;
use super::document::{Node, Origin, Value};
use super::table::TableReader;

/// A value and where it was written.
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub origin: Origin,
}

impl<T> Located<T> {
    /// Pairs a value with its origin.
    pub fn new(value: T, origin: Origin) -> Self {
        Located { value, origin }
    }
}

/// Flink's chaining controls for one component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Chain {
    /// Chain with the upstream operator when possible (the default).
    #[default]
    Allowed,
    /// Start a new chain at this operator (Flink `startNewChain`).
    New,
    /// Never chain this operator, in or out (Flink `disableChaining`).
    Never,
}

/// Keys every source, operator and sink has.
#[derive(Clone, Debug)]
pub struct Common {
    /// Unique name.
    pub name: Located<String>,
    /// Parallelism override.
    pub parallelism: Option<Located<usize>>,
    /// Chaining control.
    pub chain: Chain,
    /// Slot sharing group (default "default").
    pub slot_sharing_group: String,
    /// Where the component's table starts.
    pub origin: Origin,
}

/// File formats sources read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    /// Comma (or other) separated values.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// One JSON object per line.
    Jsonl,
    /// Text lines, as one string column `line`.
    Lines,
    /// Text lines matched by a regex; its named groups are the columns.
    Regex,
    /// Arrow IPC files (Feather v2).
    Ipc,
}

/// What a source or operator does with a row it cannot read or compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop the run with an error naming the file, line and column (the default).
    #[default]
    Fail,
    /// Drop the row and count it as rejected.
    Skip,
    /// Send the row to the side output `<name>.dead_letter`, and count it as rejected.
    DeadLetter,
}

/// The side output that carries a component's rejected rows (`<name>.dead_letter`).
pub const DEAD_LETTER: &str = "dead_letter";

/// A `[[source]]`.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// Name, parallelism, chaining.
    pub common: Common,
    /// File format.
    pub format: SourceFormat,
    /// File, directory or glob, relative to the pipeline file's directory.
    pub path: Located<String>,
    /// Declared schema (column, type); inferred from the files when absent.
    pub schema: Option<Vec<(Located<String>, Located<DataType>)>>,
    /// CSV: the first line is a header.
    pub header: bool,
    /// CSV: field separator.
    pub delimiter: u8,
    /// Rows sampled to infer the schema.
    pub infer_rows: usize,
    /// Files larger than this are read as several byte ranges in parallel (CSV, JSON lines).
    pub split_bytes: u64,
    /// What to do with a row that cannot be read.
    pub on_error: OnError,
    /// Text formats: a longer line is rejected as `line_too_long`.
    pub max_line_bytes: usize,
    /// `regex` format: the regex whose named groups are the columns.
    pub regex: Option<Located<String>>,
    /// Tail mode: read files that exist at the start from their beginning (false: only what is
    /// appended).
    pub from_beginning: bool,
    /// Tail mode: follow the files (false: read them once, as a bounded run does, so that a
    /// join's right side, a lookup table, ends and is built).
    pub follow: bool,
    /// Tail mode: most milliseconds a line waits for more lines before its batch is emitted.
    pub linger_ms: u64,
}

/// How an operator's input is partitioned, when the user asks for a specific exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitioningHint {
    /// Keep records on the same subtask index.
    Forward,
    /// Round-robin batches over all downstream subtasks.
    Rebalance,
    /// Every downstream subtask receives every batch.
    Broadcast,
}

/// What an operator does.
#[derive(Clone, Debug)]
pub enum OpKind {
    /// Keep rows where the SQL condition is true.
    Filter(Located<String>),
    /// Output exactly these SQL expressions (with optional `AS alias`).
    Select(Vec<Located<String>>),
    /// Add or replace columns: name = SQL expression.
    With(Vec<(Located<String>, Located<String>)>),
    /// Rename columns: old = new.
    Rename(Vec<(Located<String>, Located<String>)>),
    /// Remove columns.
    Drop(Vec<Located<String>>),
    /// Change column types: column = type.
    Cast(Vec<(Located<String>, Located<DataType>)>),
    /// One row per element of these list columns.
    Explode(Vec<Located<String>>),
    /// Replace these struct columns by their fields.
    Unnest(Vec<Located<String>>),
    /// Regex named groups of a string column into columns.
    Parse {
        /// The string column.
        column: Located<String>,
        /// The regex with named groups.
        regex: Located<String>,
        /// Types of group columns.
        types: Vec<(Located<String>, Located<DataType>)>,
    },
    /// Group by `key_by` (none: one global group) and compute named aggregates, over the
    /// whole input or per event-time window.
    Aggregate {
        /// Grouping columns.
        key_by: Vec<Located<String>>,
        /// Output name = aggregate call, e.g. `hits = "count(*)"`.
        aggregates: Vec<(Located<String>, Located<String>)>,
        /// Per window of event time, instead of over the whole input.
        window: Option<WindowSpec>,
        /// `emit = "changes"`: a changelog after every batch, not one result at the end; with
        /// the state TTL in ms, when given.
        changes: Option<Option<i64>>,
    },
    /// Watermarks from an event-time column, `max_delay` behind the latest time seen.
    Watermark {
        /// The event-time column.
        time: Located<String>,
        /// Bounded out-of-orderness, in ms.
        max_delay: i64,
        /// Declared idle after this many ms without rows.
        idle_timeout: Option<i64>,
    },
    /// All inputs' rows, matched by column name.
    Union,
    /// `sort` (SQL ORDER BY items) and / or `limit`, globally or per `key_by`.
    Sort {
        /// ORDER BY items: `expr [ASC|DESC] [NULLS FIRST|LAST]`; empty for a plain limit.
        by: Vec<Located<String>>,
        /// Keep at most this many rows (per key with `key_by`).
        limit: Option<Located<usize>>,
        /// Per-key top-n.
        key_by: Vec<Located<String>>,
    },
    /// Equi-join of two inputs (left, right).
    Join {
        /// inner, left, right, full, semi, anti.
        how: Located<String>,
        /// Key columns of the left input.
        left_on: Vec<Located<String>>,
        /// Key columns of the right input.
        right_on: Vec<Located<String>>,
        /// Suffix for clashing right column names.
        suffix: String,
        /// "broadcast" or "hash" (None: chosen by size).
        strategy: Option<Located<String>>,
    },
    /// One row per distinct value of `columns` (all columns when None).
    Distinct {
        /// Columns defining duplicates.
        columns: Option<Vec<Located<String>>>,
        /// `first`, `last` or `any`.
        keep: Located<String>,
    },
}

impl OpKind {
    /// Short name of the operation, as shown by `explain`.
    pub fn label(&self) -> &'static str {
        match self {
            OpKind::Filter(_) => "filter",
            OpKind::Select(_) => "select",
            OpKind::With(_) => "with",
            OpKind::Rename(_) => "rename",
            OpKind::Drop(_) => "drop",
            OpKind::Cast(_) => "cast",
            OpKind::Explode(_) => "explode",
            OpKind::Unnest(_) => "unnest",
            OpKind::Parse { .. } => "parse",
            OpKind::Aggregate { window: Some(_), .. } => "window",
            OpKind::Aggregate { .. } => "aggregate",
            OpKind::Watermark { .. } => "watermark",
            OpKind::Union => "union",
            OpKind::Sort { by, .. } if by.is_empty() => "limit",
            OpKind::Sort { limit: Some(_), .. } => "top_n",
            OpKind::Sort { .. } => "sort",
            OpKind::Distinct { .. } => "distinct",
            OpKind::Join { .. } => "join",
        }
    }
}

/// `window = { size = "1m", slide = "10s", time = "ts", allowed_lateness = "30s" }`.
#[derive(Clone, Debug)]
pub struct WindowSpec {
    /// Window length, ms.
    pub size: i64,
    /// Step between window starts, ms (None: tumbling).
    pub slide: Option<i64>,
    /// Session windows: the inactivity that ends a session, ms (then `size` is 0).
    pub gap: Option<i64>,
    /// The event-time column.
    pub time: Located<String>,
    /// How long after its end a window takes late rows, ms.
    pub lateness: i64,
    /// Where the window table is.
    pub origin: Origin,
}

/// Parses a size of the pipeline file: `4096`, `512KB`, `64MB`, `1GB` (powers of 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "KIB" => 1 << 10,
        "MB" | "MIB" => 1 << 20,
        "GB" | "GIB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v > 0)
}

/// Parses a duration of the pipeline file: `250ms`, `5s`, `1m`, `2h`, `1d`, in milliseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = t.split_at(split);
    let n: i64 = n.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).filter(|&v| v >= 0)
}

fn duration(r: &mut TableReader<'_>, key: &str, diags: &mut Diagnostics) -> Option<Located<i64>> {
    let v = r.string(key, diags)?;
    match parse_duration(&v.value) {
        Some(ms) => Some(Located::new(ms, v.origin)),
        None => {
            r.err(diags, &v.origin, format!("`{key}` must be a duration like \"250ms\", \"5s\", \"1m\", \"2h\" or \"1d\", found {:?}", v.value));
            None
        }
    }
}

/// An `[[op]]`.
#[derive(Clone, Debug)]
pub struct OpSpec {
    /// Name, parallelism, chaining.
    pub common: Common,
    /// Names of the upstream sources or operators.
    pub inputs: Vec<Located<String>>,
    /// Exchange requested for the input edge(s).
    pub partitioning: Option<Located<PartitioningHint>>,
    /// The operation.
    pub kind: OpKind,
    /// What to do with a row whose expressions fail (a strict cast, a regex that does not match).
    pub on_error: OnError,
}

/// Where a sink writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkFormat {
    /// The terminal.
    Stdout,
    /// CSV files.
    Csv,
    /// Parquet files.
    Parquet,
    /// JSON-lines files.
    Jsonl,
    /// Arrow IPC files (Feather v2).
    Ipc,
}

/// How the stdout sink prints rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdoutStyle {
    /// A pretty table (all rows, printed at the end).
    Table,
    /// CSV with a header, streamed.
    Csv,
    /// JSON lines, streamed.
    Jsonl,
}

/// A `[[sink]]`.
#[derive(Clone, Debug)]
pub struct SinkSpec {
    /// Name, parallelism, chaining.
    pub common: Common,
    /// The upstream source or operator.
    pub input: Located<String>,
    /// Output format.
    pub format: SinkFormat,
    /// Output file (single_file) or directory of part files.
    pub path: Option<Located<String>>,
    /// Stdout only: how rows are printed.
    pub style: StdoutStyle,
    /// Write one file (sink parallelism 1) instead of a directory of part files.
    pub single_file: bool,
    /// CSV only: write a header line.
    pub header: bool,
    /// Columns whose values name `key=value` directories.
    pub partition_by: Vec<Located<String>>,
    /// File sinks: start a new part file once the current one has this many bytes.
    pub roll_bytes: Option<u64>,
    /// File sinks: start a new part file once the current one is this old (ms), at its next write.
    pub roll_interval: Option<i64>,
}

/// A whole pipeline file.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    /// Pipeline name.
    pub name: String,
    /// Default parallelism (None: the command line's `-p`, or the number of cores).
    pub parallelism: Option<usize>,
    /// Rows per batch a source emits at most.
    pub batch_rows: usize,
    /// Capacity of every channel between subtasks, in batches.
    pub channel_capacity: usize,
    /// A join broadcasts its right input when its files total at most this many bytes.
    pub broadcast_threshold: u64,
    /// Sources in file order.
    pub sources: Vec<SourceSpec>,
    /// Operators in file order.
    pub ops: Vec<OpSpec>,
    /// Sinks in file order.
    pub sinks: Vec<SinkSpec>,
    /// Directory relative paths are resolved against (the pipeline file's directory).
    pub base_dir: PathBuf,
    /// Tail mode (`rivulet tail`, `run --follow`): file sources follow their files until stopped.
    pub follow: bool,
}

const COMMON_KEYS: [&str; 4] = ["name", "parallelism", "chain", "slot_sharing_group"];
const TOP_KEYS: [&str; 9] = ["name", "description", "parallelism", "batch_rows", "channel_capacity", "broadcast_threshold", "source", "op", "sink"];
const SOURCE_KEYS: [&str; 13] =
    ["format", "path", "schema", "header", "delimiter", "infer_rows", "split_bytes", "on_error", "max_line_bytes", "regex", "start_at", "linger_ms", "follow"];
const OP_KEYS: [&str; 29] = [
    "input",
    "filter",
    "select",
    "with",
    "rename",
    "drop",
    "cast",
    "explode",
    "unnest",
    "parse",
    "key_by",
    "aggregate",
    "union",
    "sort",
    "limit",
    "distinct",
    "keep",
    "join",
    "on",
    "left_on",
    "right_on",
    "suffix",
    "strategy",
    "partitioning",
    "on_error",
    "window",
    "watermark",
    "emit",
    "state_ttl",
];
const SINK_KEYS: [&str; 9] = ["input", "format", "path", "style", "single_file", "header", "partition_by", "roll_bytes", "roll_interval"];

fn allowed(extra: &[&'static str]) -> Vec<&'static str> {
    COMMON_KEYS.iter().chain(extra).copied().collect()
}

/// Parses a type name of the pipeline file into a polars type.
pub fn parse_type(name: &str) -> Option<DataType> {
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "int" | "integer" | "bigint" | "int64" | "long" => DataType::Int64,
        "int32" => DataType::Int32,
        "float" | "double" | "float64" | "real" => DataType::Float64,
        "float32" => DataType::Float32,
        "string" | "str" | "text" | "varchar" | "utf8" => DataType::String,
        "bool" | "boolean" => DataType::Boolean,
        "date" => DataType::Date,
        "datetime" | "timestamp" => DataType::Datetime(TimeUnit::Microseconds, None),
        "time" => DataType::Time,
        _ => return None,
    })
}

/// The type names [`parse_type`] accepts, for error messages.
pub const TYPE_NAMES: &str = "int, int32, float, float32, string, bool, date, datetime, time";

fn type_map(reader: &mut TableReader<'_>, key: &str, diags: &mut Diagnostics) -> Option<Vec<(Located<String>, Located<DataType>)>> {
    let pairs = reader.string_map(key, diags)?;
    Some(
        pairs
            .into_iter()
            .filter_map(|(col, ty)| match parse_type(&ty.value) {
                Some(t) => Some((col, Located::new(t, ty.origin))),
                None => {
                    reader.err(diags, &ty.origin, format!("unknown type {:?} for column '{}'; expected one of: {TYPE_NAMES}", ty.value, col.value));
                    None
                }
            })
            .collect(),
    )
}

fn component_name(reader: &mut TableReader<'_>, kind: &str, index: usize, required: bool, diags: &mut Diagnostics) -> Located<String> {
    let fallback = Located::new(format!("{kind}-{}", index + 1), reader.origin.clone());
    let name = if required { reader.required_string("name", diags) } else { reader.string("name", diags) };
    match name {
        Some(n) if n.value.trim().is_empty() || n.value.contains(['.', '/']) => {
            reader.err(diags, &n.origin, format!("name {:?} must be non-empty and contain no '.' or '/'", n.value));
            fallback
        }
        Some(n) => n,
        None => fallback,
    }
}

/// Longest line a text source accepts by default (Vector's default too).
pub const DEFAULT_MAX_LINE_BYTES: usize = 100 << 10;

fn on_error(r: &mut TableReader<'_>, diags: &mut Diagnostics) -> OnError {
    match r.string("on_error", diags) {
        None => OnError::Fail,
        Some(v) => match v.value.as_str() {
            "fail" => OnError::Fail,
            "skip" => OnError::Skip,
            "dead_letter" => OnError::DeadLetter,
            other => {
                r.err(diags, &v.origin, format!("`on_error` must be \"fail\", \"skip\" or \"dead_letter\", found {other:?}"));
                OnError::Fail
            }
        },
    }
}

fn read_source(node: &Node, index: usize, diags: &mut Diagnostics) -> Option<SourceSpec> {
    let mut r = TableReader::new(node, Some(format!("source #{}", index + 1)), diags)?;
    let name = component_name(&mut r, "source", index, true, diags);
    r.component = Some(format!("source '{}'", name.value));
    let common = r.common(name, diags);
    let format = r.required_string("format", diags).and_then(|f| match f.value.as_str() {
        "csv" => Some(SourceFormat::Csv),
        "parquet" => Some(SourceFormat::Parquet),
        "jsonl" | "ndjson" | "json" => Some(SourceFormat::Jsonl),
        "lines" => Some(SourceFormat::Lines),
        "ipc" | "arrow" | "feather" => Some(SourceFormat::Ipc),
        "regex" => Some(SourceFormat::Regex),
        other => {
            r.err(diags, &f.origin, format!("unknown source format {other:?}; expected csv, parquet, jsonl, ipc, lines or regex"));
            None
        }
    });
    let path = r.required_string("path", diags);
    let schema = type_map(&mut r, "schema", diags);
    let header = r.bool("header", true, diags);
    let delimiter = r.string("delimiter", diags).and_then(|d| match d.value.as_bytes() {
        [b] if d.value.is_ascii() => Some(*b),
        _ if d.value == "\\t" => Some(b'\t'),
        _ => {
            r.err(diags, &d.origin, format!("`delimiter` must be one ASCII character, found {:?}", d.value));
            None
        }
    });
    let infer_rows = r.positive("infer_rows", diags).map_or(1000, |v| v.value);
    let split_bytes = r.positive("split_bytes", diags).map_or(32 << 20, |v| v.value as u64);
    let on_error = on_error(&mut r, diags);
    let max_line_bytes = r.positive("max_line_bytes", diags).map_or(DEFAULT_MAX_LINE_BYTES, |v| v.value);
    let regex = r.string("regex", diags);
    let from_beginning = match r.string("start_at", diags) {
        None => true,
        Some(v) if v.value == "beginning" => true,
        Some(v) if v.value == "end" => false,
        Some(v) => {
            r.err(diags, &v.origin, format!("`start_at` must be \"beginning\" or \"end\", found {:?}", v.value));
            true
        }
    };
    let linger_ms = r.positive("linger_ms", diags).map_or(20, |v| v.value as u64);
    let follow = r.bool("follow", true, diags);
    match (format, &regex) {
        (Some(SourceFormat::Regex), None) => r.err(diags, &r.origin.clone(), "format = \"regex\" needs `regex`, with a named group per column"),
        (Some(f), Some(re)) if f != SourceFormat::Regex => r.err(diags, &re.origin, "`regex` goes with format = \"regex\""),
        _ => {}
    }
    r.finish(&allowed(&SOURCE_KEYS), diags);
    let delimiter = delimiter.unwrap_or(b',');
    Some(SourceSpec {
        common,
        format: format?,
        path: path?,
        schema,
        header,
        delimiter,
        infer_rows,
        split_bytes,
        on_error,
        max_line_bytes,
        regex,
        from_beginning,
        follow,
        linger_ms,
    })
}

fn read_op(node: &Node, index: usize, diags: &mut Diagnostics) -> Option<OpSpec> {
    let mut r = TableReader::new(node, Some(format!("operator #{}", index + 1)), diags)?;
    let name = component_name(&mut r, "op", index, true, diags);
    r.component = Some(format!("operator '{}'", name.value));
    let common = r.common(name, diags);
    let inputs = match r.string_list("input", diags) {
        Some(i) if !i.is_empty() => i,
        Some(_) => {
            r.err(diags, &r.origin.clone(), "`input` must name at least one source or operator");
            Vec::new()
        }
        None => {
            r.err(diags, &r.origin.clone(), "missing required key `input`");
            Vec::new()
        }
    };
    let partitioning = r.string("partitioning", diags).and_then(|p| {
        let hint = match p.value.as_str() {
            "forward" => PartitioningHint::Forward,
            "rebalance" => PartitioningHint::Rebalance,
            "broadcast" => PartitioningHint::Broadcast,
            other => {
                r.err(diags, &p.origin, format!("`partitioning` must be \"forward\", \"rebalance\" or \"broadcast\", found {other:?}"));
                return None;
            }
        };
        Some(Located::new(hint, p.origin))
    });
    let mut kinds: Vec<(&str, OpKind)> = Vec::new();
    if let Some(f) = r.string("filter", diags) {
        kinds.push(("filter", OpKind::Filter(f)));
    }
    if let Some(s) = r.string_list("select", diags) {
        kinds.push(("select", OpKind::Select(s)));
    }
    if let Some(w) = r.string_map("with", diags) {
        kinds.push(("with", OpKind::With(w)));
    }
    if let Some(m) = r.string_map("rename", diags) {
        kinds.push(("rename", OpKind::Rename(m)));
    }
    if let Some(d) = r.string_list("drop", diags) {
        kinds.push(("drop", OpKind::Drop(d)));
    }
    if let Some(c) = type_map(&mut r, "cast", diags) {
        kinds.push(("cast", OpKind::Cast(c)));
    }
    if let Some(c) = r.string_list("explode", diags) {
        kinds.push(("explode", OpKind::Explode(c)));
    }
    if let Some(c) = r.string_list("unnest", diags) {
        kinds.push(("unnest", OpKind::Unnest(c)));
    }
    if let Some(node) = r.take("parse") {
        let mut p = TableReader::new(node, r.component.clone(), diags);
        if let Some(p) = p.as_mut() {
            let column = p.required_string("column", diags);
            let regex = p.required_string("regex", diags);
            let types = type_map(p, "types", diags).unwrap_or_default();
            p.finish(&["column", "regex", "types"], diags);
            if let (Some(column), Some(regex)) = (column, regex) {
                kinds.push(("parse", OpKind::Parse { column, regex, types }));
            }
        }
    }
    let key_by = r.string_list("key_by", diags);
    let mut keyed = false;
    if let Some(aggregates) = r.string_map("aggregate", diags) {
        if aggregates.is_empty() {
            r.err(diags, &r.origin.clone(), "`aggregate` must name at least one output, e.g. hits = \"count(*)\"");
        }
        let window = r.take("window").and_then(|node| {
            let mut w = TableReader::new(node, r.component.clone(), diags)?;
            let size = duration(&mut w, "size", diags);
            let slide = duration(&mut w, "slide", diags);
            let gap = duration(&mut w, "gap", diags);
            let time = w.required_string("time", diags);
            let lateness = duration(&mut w, "allowed_lateness", diags).map_or(0, |l| l.value);
            w.finish(&["size", "slide", "gap", "time", "allowed_lateness"], diags);
            let size = match (size, gap) {
                (None, Some(g)) if g.value > 0 => {
                    return Some(WindowSpec { size: 0, slide: None, gap: Some(g.value), time: time?, lateness, origin: node.origin.clone() });
                }
                (None, Some(g)) => {
                    w.err(diags, &g.origin, "`gap` must be more than 0");
                    return None;
                }
                (Some(s), Some(g)) => {
                    w.err(diags, &g.origin, "a window has `size` (tumbling or sliding, with `slide`) or `gap` (sessions), not both");
                    let _ = s;
                    return None;
                }
                (Some(s), None) => s,
                (None, None) => {
                    w.err(diags, &node.origin, "a window needs `size` (e.g. \"1m\", tumbling; add `slide` for sliding windows) or `gap` (sessions)");
                    return None;
                }
            };
            if size.value == 0 {
                w.err(diags, &size.origin, "`size` must be more than 0");
                return None;
            }
            if let Some(s) = &slide
                && (s.value == 0 || size.value % s.value != 0)
            {
                w.err(diags, &s.origin, "`slide` must divide `size` (e.g. size = \"1m\", slide = \"10s\")");
                return None;
            }
            Some(WindowSpec { size: size.value, slide: slide.map(|s| s.value), gap: None, time: time?, lateness, origin: node.origin.clone() })
        });
        let emit = r.string("emit", diags);
        let ttl = duration(&mut r, "state_ttl", diags);
        let changes = match emit.as_ref().map(|e| e.value.as_str()) {
            Some("changes") if window.is_some() => {
                r.err(diags, &emit.as_ref().expect("matched").origin, "a window emits when it fires; `emit = \"changes\"` is for aggregates without a window");
                None
            }
            Some("changes") => Some(ttl.as_ref().map(|t| t.value)),
            Some("final") | None => {
                if let Some(t) = &ttl {
                    r.err(diags, &t.origin, "`state_ttl` goes with `emit = \"changes\"`");
                }
                None
            }
            Some(other) => {
                r.err(diags, &emit.as_ref().expect("matched").origin, format!("`emit` must be \"final\" or \"changes\", found {other:?}"));
                None
            }
        };
        kinds.push(("aggregate", OpKind::Aggregate { key_by: key_by.clone().unwrap_or_default(), aggregates, window, changes }));
        keyed = true;
    } else if let Some(n) = r.take("window") {
        r.err(diags, &n.origin, "`window` goes with `aggregate` (what to compute per window)");
    }
    if let Some(node) = r.take("watermark")
        && let Some(mut w) = TableReader::new(node, r.component.clone(), diags)
    {
        let time = w.required_string("time", diags);
        let max_delay = duration(&mut w, "max_delay", diags).map_or(0, |d| d.value);
        let idle_timeout = duration(&mut w, "idle_timeout", diags).map(|d| d.value);
        w.finish(&["time", "max_delay", "idle_timeout"], diags);
        if let Some(time) = time {
            kinds.push(("watermark", OpKind::Watermark { time, max_delay, idle_timeout }));
        }
    }
    match r.take("union") {
        Some(Node { value: Value::Bool(true), .. }) => kinds.push(("union", OpKind::Union)),
        Some(n) => r.err(diags, &n.origin, "`union` must be true (the inputs are listed in `input`)"),
        None => {}
    }
    let sort = r.string_list("sort", diags);
    let limit = r.positive("limit", diags);
    if sort.is_some() || limit.is_some() {
        kinds.push(("sort", OpKind::Sort { by: sort.unwrap_or_default(), limit, key_by: key_by.clone().unwrap_or_default() }));
        keyed = true;
    }
    let keep = r.string("keep", diags);
    let distinct = match r.take("distinct") {
        Some(Node { value: Value::Bool(true), .. }) => Some(None),
        Some(n @ Node { value: Value::Array(_), .. }) => Some(Some(r.strings_of("distinct", n, diags))),
        Some(n) => {
            r.err(diags, &n.origin, "`distinct` must be true (all columns) or a list of columns");
            None
        }
        None => None,
    };
    match (distinct, keep) {
        (Some(columns), keep) => {
            let keep = keep.unwrap_or_else(|| Located::new("first".into(), r.origin.clone()));
            if !matches!(keep.value.as_str(), "first" | "last" | "any") {
                r.err(diags, &keep.origin, format!("`keep` must be \"first\", \"last\" or \"any\", found {:?}", keep.value));
            }
            kinds.push(("distinct", OpKind::Distinct { columns, keep }));
        }
        (None, Some(k)) => r.err(diags, &k.origin, "`keep` goes with `distinct`"),
        (None, None) => {}
    }
    let (on, left_on, right_on) = (r.string_list("on", diags), r.string_list("left_on", diags), r.string_list("right_on", diags));
    let suffix = r.string("suffix", diags).map_or_else(|| "_right".to_string(), |s| s.value);
    let strategy = r.string("strategy", diags);
    if let Some(how) = r.string("join", diags) {
        let (left_on, right_on) = match (on, left_on, right_on) {
            (Some(on), None, None) => (on.clone(), on),
            (None, Some(l), Some(rr)) if l.len() == rr.len() => (l, rr),
            (None, Some(l), Some(_)) => {
                r.err(diags, &l[0].origin, "`left_on` and `right_on` must name the same number of columns");
                (Vec::new(), Vec::new())
            }
            _ => {
                r.err(diags, &how.origin, "a join needs `on` (same names on both sides), or `left_on` and `right_on`");
                (Vec::new(), Vec::new())
            }
        };
        if let Some(st) = &strategy
            && !matches!(st.value.as_str(), "broadcast" | "hash")
        {
            r.err(diags, &st.origin, format!("`strategy` must be \"broadcast\" or \"hash\", found {:?}", st.value));
        }
        kinds.push(("join", OpKind::Join { how, left_on, right_on, suffix, strategy }));
    } else if let Some(k) = on.as_ref().or(left_on.as_ref()).or(right_on.as_ref()).and_then(|v| v.first()) {
        r.err(diags, &k.origin, "`on`, `left_on` and `right_on` go with `join`");
    }
    if key_by.is_some() && !keyed {
        r.err(diags, &r.origin.clone(), "`key_by` needs `aggregate`, `sort` or `limit` (what to do per key)");
    }
    let on_error = on_error(&mut r, diags);
    r.finish(&allowed(&OP_KEYS), diags);
    match kinds.len() {
        1 => Some(OpSpec { common, inputs, partitioning, kind: kinds.pop().expect("one kind").1, on_error }),
        0 => {
            r.err(
                diags,
                &r.origin.clone(),
                "an operator needs one of: filter, select, with, rename, drop, cast, explode, unnest, parse, aggregate (with or without window), watermark, union, sort, limit, distinct, join",
            );
            None
        }
        _ => {
            let names: Vec<_> = kinds.iter().map(|(k, _)| *k).collect();
            r.err(diags, &r.origin.clone(), format!("an operator does one thing, found {}: split it into one operator each", names.join(" and ")));
            None
        }
    }
}

fn read_sink(node: &Node, index: usize, diags: &mut Diagnostics) -> Option<SinkSpec> {
    let mut r = TableReader::new(node, Some(format!("sink #{}", index + 1)), diags)?;
    let name = component_name(&mut r, "sink", index, false, diags);
    r.component = Some(format!("sink '{}'", name.value));
    let common = r.common(name, diags);
    let input = r.required_string("input", diags);
    let format = r.required_string("format", diags).and_then(|f| match f.value.as_str() {
        "stdout" => Some(SinkFormat::Stdout),
        "csv" => Some(SinkFormat::Csv),
        "parquet" => Some(SinkFormat::Parquet),
        "jsonl" | "ndjson" => Some(SinkFormat::Jsonl),
        "ipc" | "arrow" | "feather" => Some(SinkFormat::Ipc),
        other => {
            r.err(diags, &f.origin, format!("unknown sink format {other:?}; expected stdout, csv, parquet, jsonl or ipc"));
            None
        }
    });
    let path = r.string("path", diags);
    let style = r.string("style", diags).map_or(StdoutStyle::Table, |s| match s.value.as_str() {
        "table" => StdoutStyle::Table,
        "csv" => StdoutStyle::Csv,
        "jsonl" => StdoutStyle::Jsonl,
        other => {
            r.err(diags, &s.origin, format!("`style` must be \"table\", \"csv\" or \"jsonl\", found {other:?}"));
            StdoutStyle::Table
        }
    });
    let single_file = r.bool("single_file", false, diags);
    let header = r.bool("header", true, diags);
    let partition_by = r.string_list("partition_by", diags).unwrap_or_default();
    let roll_bytes = r.take("roll_bytes").and_then(|n| {
        let parsed = match &n.value {
            Value::Int(i) if *i > 0 => Some(*i as u64),
            Value::Str(s) => parse_size(s),
            _ => None,
        };
        if parsed.is_none() {
            r.err(diags, &n.origin, "`roll_bytes` must be a size: a number of bytes, or like \"64MB\", \"512KB\", \"1GB\"");
        }
        parsed
    });
    let roll_interval = duration(&mut r, "roll_interval", diags);
    if let Some(o) = roll_interval.as_ref().map(|d| d.origin.clone()).or_else(|| roll_bytes.map(|_| r.origin.clone()))
        && (single_file || format == Some(SinkFormat::Stdout))
    {
        r.err(diags, &o, "rolling (`roll_bytes`, `roll_interval`) is for file sinks that write a directory of part files");
    }
    let roll_interval = roll_interval.map(|d| d.value);
    if let Some(first) = partition_by.first() {
        if format == Some(SinkFormat::Stdout) {
            r.err(diags, &first.origin, "a stdout sink cannot be partitioned; `partition_by` is for file sinks");
        } else if single_file {
            r.err(diags, &first.origin, "`partition_by` writes a directory tree; remove `single_file`");
        }
    }
    match (format, &path) {
        (Some(SinkFormat::Stdout), Some(p)) => r.err(diags, &p.origin, "a stdout sink takes no `path`"),
        (Some(f), None) if f != SinkFormat::Stdout => r.err(diags, &r.origin.clone(), "a file sink needs `path`"),
        _ => {}
    }
    r.finish(&allowed(&SINK_KEYS), diags);
    Some(SinkSpec { common, input: input?, format: format?, path, style, single_file, header, partition_by, roll_bytes, roll_interval })
}

fn components<'a>(r: &mut TableReader<'a>, key: &str, diags: &mut Diagnostics) -> Vec<&'a Node> {
    match r.take(key) {
        None => Vec::new(),
        Some(Node { value: Value::Array(items), .. }) => items.iter().collect(),
        Some(n @ Node { value: Value::Table(_), .. }) => vec![n],
        Some(n) => {
            r.err(diags, &n.origin, format!("`{key}` must be an array of tables ([[{key}]]), found {}", n.value.kind()));
            Vec::new()
        }
    }
}

/// Reads the spec out of a document tree; problems go to `diags`, the readable parts are kept.
pub fn read_spec(root: &Node, base_dir: PathBuf, diags: &mut Diagnostics) -> PipelineSpec {
    let mut spec = PipelineSpec {
        name: "pipeline".into(),
        parallelism: None,
        batch_rows: 65_536,
        channel_capacity: 4,
        broadcast_threshold: 8 << 20,
        sources: Vec::new(),
        ops: Vec::new(),
        sinks: Vec::new(),
        base_dir,
        follow: false,
    };
    let Some(mut r) = TableReader::new(root, None, diags) else {
        return spec;
    };
    if let Some(n) = r.required_string("name", diags) {
        spec.name = n.value;
    }
    r.string("description", diags);
    spec.parallelism = r.positive("parallelism", diags).map(|p| p.value);
    spec.batch_rows = r.positive("batch_rows", diags).map_or(spec.batch_rows, |v| v.value);
    spec.channel_capacity = r.positive("channel_capacity", diags).map_or(spec.channel_capacity, |v| v.value);
    spec.broadcast_threshold = r.positive("broadcast_threshold", diags).map_or(spec.broadcast_threshold, |v| v.value as u64);
    for (i, n) in components(&mut r, "source", diags).into_iter().enumerate() {
        spec.sources.extend(read_source(n, i, diags));
    }
    for (i, n) in components(&mut r, "op", diags).into_iter().enumerate() {
        spec.ops.extend(read_op(n, i, diags));
    }
    for (i, n) in components(&mut r, "sink", diags).into_iter().enumerate() {
        spec.sinks.extend(read_sink(n, i, diags));
    }
    r.finish(&TOP_KEYS, diags);
    if spec.sources.is_empty() {
        diags.push(root.origin.clone(), None, "the pipeline has no [[source]]");
    }
    if spec.sinks.is_empty() {
        diags.push(root.origin.clone(), None, "the pipeline has no [[sink]]: nothing would be written");
    }
    spec
}
