//! File sources: CSV, JSON lines and Parquet over a file, a directory or a glob.
//!
//! The subtasks of a source take its splits (whole files, byte ranges of big text files, or
//! Parquet row groups) one at a time from a shared list. Each emits batches of at most
//! `batch_rows` rows and holds at most one chunk in memory, so memory stays bounded whatever
//! the input size.
mod csv;
mod csv_fields;
mod csv_infer;
mod iso_dates;
pub mod discover;
pub mod follow;
mod ipc;
mod jsonl;
mod lines;
mod parquet;
mod records;
mod tail;
pub mod text;
mod values;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::exec::dead_letter::{self, ErrorKind, Rejection};
use crate::exec::join_filter::JoinFilterSlot;
use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::exec::operators::stateless::SEQ_COLUMN;
use crate::exec::source::{Poll, Source, SourceContext};
use crate::pipeline::{OnError, SourceFormat};
use discover::Split;
use records::LineCounter;

pub use parquet::disjoint_row_groups;
pub use tail::{FollowSource, StreamSource};
pub use values::truncate as truncate_text;

/// Bytes of text parsed at once: large enough that per-call overhead vanishes, small enough
/// that a subtask's in-flight memory stays a few megabytes.
const CHUNK_BYTES: usize = 2 << 20;

/// Everything a file source needs at run time, decided by the planner.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// The source's name in the pipeline file.
    pub name: String,
    /// File format.
    pub format: SourceFormat,
    /// The files, sorted.
    pub files: Vec<PathBuf>,
    /// Schema of the files (declared types applied).
    pub schema: SchemaRef,
    /// Schema as stored in or inferred from the files, before declared types.
    pub raw_schema: SchemaRef,
    /// Columns declared in the pipeline file (their types are enforced when reading).
    pub declared: Vec<String>,
    /// CSV: the first line of every file is a header.
    pub header: bool,
    /// CSV: field separator.
    pub delimiter: u8,
    /// Text files bigger than this are read as several byte ranges.
    pub split_bytes: u64,
    /// Only these columns are read (projection pushdown); None reads all.
    pub projection: Option<Vec<String>>,
    /// Add the hidden row-sequence column (for `first` / `last`).
    pub with_sequence: bool,
    /// Hive partition columns (from `key=value` directories), after the file columns.
    pub hive: Vec<(String, DataType)>,
    /// Partition values of each file (same order as `files`).
    pub hive_values: Vec<discover::PartitionValues>,
    /// What to do with a record that cannot be read.
    pub on_error: OnError,
    /// Text formats: longest line accepted.
    pub max_line_bytes: usize,
    /// Rows sampled to infer the types (for error messages).
    pub infer_rows: usize,
    /// `regex` format: the regex.
    pub regex: Option<String>,
    /// Tail mode or stdin: how the source follows its input (None: bounded files).
    pub follow: Option<FollowConfig>,
    /// Parquet: comparisons of a column with a constant, from a filter right after the source;
    /// a row group whose min/max statistics show that no row can pass one of them is not read.
    pub row_group_filter: Vec<Expr>,
    /// Parquet: a filter right after the source, evaluated while reading (see [`ReaderFilter`]).
    pub reader_filter: Option<ReaderFilter>,
    /// Parquet: the keys of the join the rows go to, once it has read its right side (see
    /// [`crate::exec::join_filter`]).
    pub join_filter: Option<JoinFilterSpec>,
    /// Parquet: string columns that only a hash aggregate's keys read, decoded as the row
    /// group's dictionary codes (an `Enum` column whose categories are the dictionary) where
    /// every page of the column chunk is dictionary-encoded; the aggregate maps the few
    /// dictionary values to its own codes instead of hashing each row's string.
    pub key_codes: Vec<String>,
}

/// Where a source's rows meet a join's keys at run time (see [`crate::exec::join_filter`]). The
/// source reads nothing before the keys are known.
#[derive(Clone, Debug)]
pub struct JoinFilterSpec {
    /// The source's column compared with the join's right keys.
    pub column: String,
    /// The join's node.
    pub join: usize,
    /// The nodes between the source and the join (filters): a row dropped for its key counts
    /// as having passed them, and as filtered by the join.
    pub between: Vec<usize>,
    /// The key column's Parquet statistics order values as i64 does, so a row group whose
    /// min..max holds no key is skipped.
    pub statistics: bool,
}

/// Rows a Parquet reader read but did not emit, and row groups it did not read.
#[derive(Clone, Copy, Debug, Default)]
struct ReaderDrops {
    /// Failed the [`ReaderFilter`] (counted for its filter).
    filtered: u64,
    /// Passed it, but have a key the join does not hold (counted for the join).
    unmatched: u64,
    /// Row groups skipped by the key column's statistics.
    row_groups: u64,
}

/// Late materialization: the reader evaluates the conjuncts one after another, decoding the
/// columns of each as it comes to it, and the other columns only for the rows that pass (once
/// at most half the rows pass, columns are decoded at those rows only). The filter operator
/// (node `consumer`) still runs on what the reader emits; the rows dropped here are counted as
/// rows it received and filtered, so the summary reads as if it had seen them.
#[derive(Clone, Debug)]
pub struct ReaderFilter {
    /// The conjuncts of the filter that read stored columns only, in the filter's order: the
    /// reader evaluates them one after another.
    pub parts: Vec<Expr>,
    /// The filter operator's node.
    pub consumer: usize,
}

/// How a source follows unbounded input.
#[derive(Clone, Debug)]
pub struct FollowConfig {
    /// What it follows.
    pub input: FollowInput,
    /// Files that exist at the start: read from their beginning, or only what is appended.
    pub start_at: follow::StartAt,
    /// Most time a line waits for more before its batch is emitted.
    pub linger: std::time::Duration,
}

/// The unbounded input of a source.
#[derive(Clone, Debug)]
pub enum FollowInput {
    /// The files matching a path pattern, relative to a directory.
    Files {
        /// The pipeline file's directory.
        base_dir: PathBuf,
        /// The source's `path`.
        pattern: String,
    },
    /// Standard input (`path = "-"`), read by subtask 0.
    Stdin,
    /// Newline-delimited records from TCP clients (`path = "tcp://127.0.0.1:9000"`), taken by
    /// subtask 0, until the job stops.
    Tcp(String),
}

impl FollowInput {
    /// The address a `tcp://` path listens on: `tcp://HOST:PORT`, or `tcp://:PORT` and
    /// `tcp://PORT` for 127.0.0.1. None for any other path.
    pub fn tcp_address(path: &str) -> Option<String> {
        let rest = path.strip_prefix("tcp://")?;
        Some(match rest.rsplit_once(':') {
            Some(("", port)) => format!("127.0.0.1:{port}"),
            Some(_) => rest.to_string(),
            None => format!("127.0.0.1:{rest}"),
        })
    }
}

impl SourceConfig {
    /// Schema of the batches the source emits: file columns, then partition columns.
    pub fn output_schema(&self) -> Schema {
        let mut schema: Schema = match &self.projection {
            Some(cols) => cols.iter().filter_map(|c| self.schema.get_field(c)).collect(),
            None => (*self.schema).clone(),
        };
        for (name, dtype) in self.wanted_hive() {
            schema.with_column(name.as_str().into(), dtype.clone());
        }
        if self.with_sequence {
            schema.with_column(SEQ_COLUMN.into(), DataType::UInt64);
        }
        schema
    }

    /// Partition columns the source emits (all, or those in the projection).
    fn wanted_hive(&self) -> impl Iterator<Item = &(String, DataType)> {
        self.hive.iter().filter(|(n, _)| self.projection.as_ref().is_none_or(|p| p.contains(n)))
    }

    /// The projection handed to file readers: file columns only.
    pub fn file_projection(&self) -> Option<Vec<String>> {
        self.projection.as_ref().map(|p| p.iter().filter(|c| self.schema.contains(c)).cloned().collect())
    }

    /// Adds the partition columns of file `file_index` to a batch read from it.
    fn add_partition_columns(&self, file_index: usize, mut df: DataFrame) -> PolarsResult<DataFrame> {
        let height = df.height();
        for (i, (name, dtype)) in self.hive.iter().enumerate() {
            if !self.wanted_hive().any(|(n, _)| n == name) {
                continue;
            }
            let value = self.hive_values[file_index][i].as_deref();
            let column = Column::new(name.as_str().into(), vec![value; height]).strict_cast(dtype)?;
            df.with_column(column)?;
        }
        Ok(df)
    }

    /// A source named `src` over `files` with `schema` as read and as declared, comma-separated
    /// without a header, no projection, partitions or following (for tests and fuzzing).
    #[doc(hidden)]
    pub fn plain(format: SourceFormat, files: Vec<PathBuf>, schema: Schema, on_error: OnError) -> Self {
        let schema = Arc::new(schema);
        SourceConfig {
            name: "src".into(),
            format,
            files,
            raw_schema: schema.clone(),
            schema,
            declared: Vec::new(),
            header: false,
            delimiter: b',',
            split_bytes: 1 << 20,
            projection: None,
            with_sequence: false,
            hive: Vec::new(),
            hive_values: Vec::new(),
            on_error,
            max_line_bytes: 1024,
            infer_rows: 100,
            regex: None,
            follow: None,
            row_group_filter: Vec::new(),
            reader_filter: None,
            join_filter: None,
            key_codes: Vec::new(),
        }
    }

    /// The reader settings, for an error about the data: what the reader expected.
    pub fn settings(&self) -> String {
        let format = format!("{:?}", self.format).to_lowercase();
        let mut s = format!("source '{}' reads {format}", self.name);
        if self.format == SourceFormat::Csv {
            s += &format!(" with delimiter {:?}, quote '\"', header = {}", self.delimiter as char, self.header);
        }
        if !matches!(self.format, SourceFormat::Parquet | SourceFormat::Ipc) {
            s += &format!(", max_line_bytes = {}", self.max_line_bytes);
        }
        let inferred = self.schema.len() - self.declared.len().min(self.schema.len());
        if matches!(self.format, SourceFormat::Csv | SourceFormat::Jsonl) && inferred > 0 {
            s += &format!("; types inferred from the first {} rows", self.infer_rows);
        }
        if !self.declared.is_empty() {
            s += &format!("; declared in `schema`: {}", self.declared.join(", "));
        }
        s + "; on_error = \"fail\" (set \"skip\" or \"dead_letter\" to go on past bad rows)"
    }

    /// Cuts the input into splits, in source order (none for followed input).
    pub fn splits(&self) -> Result<Vec<Split>> {
        self.splits_and_pruned().map(|(splits, _)| splits)
    }

    /// The splits, and the number of Parquet row groups left out by their statistics.
    pub fn splits_and_pruned(&self) -> Result<(Vec<Split>, u64)> {
        if self.follow.is_some() {
            return Ok((Vec::new(), 0));
        }
        let splits = match self.format {
            SourceFormat::Parquet => return parquet::row_group_splits(self),
            SourceFormat::Ipc => ipc::file_splits(self),
            _ => discover::byte_splits(&self.files, self.split_bytes, |path, e| {
                let problem = Rejection::of_file(path, ErrorKind::Unreadable, format!("cannot read the file: {e}"));
                match self.on_error {
                    OnError::Fail => Err(problem.into_error(("source", &self.name))),
                    _ => Ok(problem),
                }
            }),
        }?;
        Ok((splits, 0))
    }
}

/// Why a source's schema cannot be inferred from its files.
#[derive(Debug)]
pub struct DataProblem {
    /// The kind, when the sample has a bad record or the file is bad.
    pub kind: Option<ErrorKind>,
    /// What is wrong, naming the file (and line and column).
    pub message: String,
}

impl From<String> for DataProblem {
    fn from(message: String) -> Self {
        DataProblem { kind: None, message }
    }
}

/// How to infer a source's schema.
pub struct Inference<'a> {
    /// File format.
    pub format: SourceFormat,
    /// CSV: files have a header line.
    pub header: bool,
    /// CSV: field separator.
    pub delimiter: u8,
    /// Rows sampled.
    pub infer_rows: usize,
    /// Declared column types.
    pub declared: &'a [(String, DataType)],
    /// The source skips bad input: infer from the records and files that can be read.
    pub tolerant: bool,
}

/// Infers a source's schema from its first file with data: (as read, with declared types
/// applied to the columns that exist). An error is about the data.
pub fn infer_schema(files: &[PathBuf], how: &Inference<'_>) -> std::result::Result<(Schema, Schema), DataProblem> {
    let format = how.format;
    // A header-only or empty file says nothing about types: sample the first file with data.
    let with_data = |f: &&PathBuf| matches!(format, SourceFormat::Parquet | SourceFormat::Ipc) || has_data_line(f, format == SourceFormat::Csv && how.header);
    // Lazily: each look at a file for data reads its head.
    let mut candidates = files.iter().filter(with_data).chain(files.iter());
    let infer = |first: &Path| match format {
        SourceFormat::Csv => csv::infer(first, how.header, how.delimiter, how.infer_rows, how.declared, how.tolerant),
        SourceFormat::Jsonl => jsonl::infer(first, how.infer_rows, how.tolerant),
        SourceFormat::Parquet => parquet::file_schema(first).map_err(|m| DataProblem { kind: Some(ErrorKind::CorruptParquet), message: m }),
        SourceFormat::Ipc => ipc::file_schema(first).map_err(|m| DataProblem { kind: Some(ErrorKind::CorruptIpc), message: m }),
        SourceFormat::Lines | SourceFormat::Regex => unreachable!("text sources have a fixed schema"),
    };
    let mut raw = infer(candidates.next().expect("a source has a file"));
    if how.tolerant {
        // A file that cannot be read will be rejected when it is read: take the next one.
        for f in candidates {
            if raw.is_ok() {
                break;
            }
            raw = infer(f);
        }
    }
    let raw = raw?;
    let mut schema = raw.clone();
    for (name, dtype) in how.declared {
        if let Some(t) = schema.get_mut(name.as_str()) {
            *t = dtype.clone();
        }
    }
    Ok((raw, schema))
}

/// True when the file has a non-blank line (after the header, when there is one).
fn has_data_line(path: &std::path::Path, header: bool) -> bool {
    let skip = usize::from(header);
    lines::head_lines(path, skip + 1, Some(b'"'))
        .map(|head| head.split(|&b| b == b'\n').skip(skip).any(|l| !l.iter().all(u8::is_ascii_whitespace)))
        .unwrap_or(false)
}

/// A line without its `\n` or `\r\n`.
pub(crate) fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Applies a source's `on_error` to rejected records: the first one fails the run (with the
/// reader settings in force), or they are counted, and with `dead_letter` queued as a dead-letter
/// frame.
fn apply_on_error(c: &SourceConfig, m: &NodeMetrics, rejected: Vec<Rejection>, dead: &mut VecDeque<DataFrame>) -> Result<()> {
    let Some(first) = rejected.first() else {
        return Ok(());
    };
    match c.on_error {
        OnError::Fail => {
            return Err(match first.clone().into_error(("source", &c.name)) {
                Error::Input { path, line, column, kind, message } => {
                    Error::Input { path, line, column, kind, message: format!("{message}\n  note: {}", c.settings()) }
                }
                other => other,
            });
        }
        OnError::Skip => {}
        OnError::DeadLetter => dead.push_back(dead_letter::frame(&c.name, &rejected).map_err(|e| Error::execution("source", &c.name, e))?),
    }
    NodeMetrics::add(&m.rows_in, rejected.len() as u64);
    NodeMetrics::add(&m.rejected, rejected.len() as u64);
    Ok(())
}

/// Casts the declared columns present in `df` to their declared types, strictly: a value that
/// does not convert is an error, never a silent null.
fn cast_declared(config: &SourceConfig, df: DataFrame) -> PolarsResult<DataFrame> {
    let casts: Vec<Expr> = config
        .declared
        .iter()
        .filter(|c| df.schema().contains(c.as_str()))
        .filter_map(|c| config.schema.get(c.as_str()).map(|t| col(c.as_str()).strict_cast(t.clone())))
        .collect();
    if casts.is_empty() {
        return Ok(df);
    }
    df.lazy().with_columns(casts).collect()
}

/// A source's splits, listed by the first of its subtasks to ask, while the others wait: for
/// Parquet, listing reads every file's footer, which done before the job started delayed every
/// source (TPC-H Q3: 2 ms of footers of lineitem, whose reader waits for its join's keys
/// anyway).
pub struct SourceSplits {
    config: Arc<SourceConfig>,
    listed: std::sync::OnceLock<Option<Listed>>,
    /// Why listing failed, for the subtask that listed (the others stop as cancelled).
    error: std::sync::Mutex<Option<Error>>,
}

/// The splits of a source, and the log of what each covered.
#[derive(Clone)]
pub struct Listed {
    /// In source order.
    pub splits: Arc<Vec<Split>>,
    /// Which split is next, and what each one read.
    pub log: Arc<SplitLog>,
}

impl SourceSplits {
    /// The splits of `config`, not listed yet.
    pub fn new(config: Arc<SourceConfig>) -> Self {
        SourceSplits { config, listed: Default::default(), error: Default::default() }
    }

    /// The source's config.
    pub fn config(&self) -> &Arc<SourceConfig> {
        &self.config
    }

    /// The splits, listing them on the first call (counting the row groups that statistics
    /// leave out as `pruned` of `metrics`).
    pub fn get(&self, metrics: &NodeMetrics) -> Result<Listed> {
        let listed = self.listed.get_or_init(|| match self.config.splits_and_pruned() {
            Ok((splits, pruned)) => {
                NodeMetrics::add(&metrics.pruned, pruned);
                Some(Listed { log: Arc::new(SplitLog::new(splits.len())), splits: Arc::new(splits) })
            }
            Err(e) => {
                *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                None
            }
        });
        listed.clone().ok_or_else(|| self.error.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or(Error::Cancelled))
    }

    /// The splits, if they were listed.
    pub fn listed(&self) -> Option<&Listed> {
        self.listed.get().and_then(Option::as_ref)
    }
}

/// Where each text split really started and stopped reading. A split starts at the first
/// record boundary after its nominal start, which for CSV with quoted newlines is a guess; this
/// log checks after the run that the splits of every file met exactly and covered it all, so a
/// wrong guess fails the run instead of losing or repeating rows.
#[derive(Debug)]
pub struct SplitLog {
    /// The next split to hand out: a subtask takes one when it has read the last, so a subtask
    /// slowed by its consumers (or by another task on its core) reads fewer, and none waits
    /// idle for the others at the end while splits are left (as Flink's split enumerator
    /// assigns splits to readers on request). A fixed share each left one core idle for up to
    /// a split's time at the end of every source.
    next: std::sync::atomic::AtomicUsize,
    covered: std::sync::Mutex<Vec<Option<(u64, u64)>>>,
    /// Line numbers the splits found (for messages), shared so none counts from the start.
    lines: Arc<records::LineIndex>,
}

impl SplitLog {
    /// A log for `n` splits.
    pub fn new(n: usize) -> Self {
        SplitLog { next: Default::default(), covered: std::sync::Mutex::new(vec![None; n]), lines: Arc::default() }
    }

    /// The ordinal of the next split nobody has taken (past the last when all are).
    fn take(&self) -> usize {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn record(&self, ordinal: usize, range: (u64, u64)) {
        if let Ok(mut c) = self.covered.lock() {
            c[ordinal] = Some(range);
        }
    }

    /// Checks that every file was read exactly once from its first byte to its last.
    pub fn verify(&self, splits: &[Split], config: &SourceConfig) -> Result<()> {
        let covered = self.covered.lock().map_err(|_| Error::execution("source", &config.name, "split log poisoned"))?;
        let mut i = 0;
        while i < splits.len() {
            let file = splits[i].file_index;
            let path = &splits[i].path;
            let mut pos = 0;
            let mut len = 0;
            while i < splits.len() && splits[i].file_index == file {
                len = splits[i].end;
                if let Some((start, end)) = covered[splits[i].ordinal]
                    && end > start
                {
                    if start != pos {
                        return Err(split_mismatch(config, path, pos, start));
                    }
                    pos = end;
                }
                i += 1;
            }
            if pos != len {
                return Err(split_mismatch(config, path, pos, len));
            }
        }
        Ok(())
    }
}

/// The error for bytes `[from, to)` of a file read twice or not at all. A CSV record with the
/// wrong number of fields is not taken for a record start, so a gap is most often one of those:
/// report it as such when it is.
fn split_mismatch(config: &SourceConfig, path: &std::path::Path, from: u64, to: u64) -> Error {
    if config.format == SourceFormat::Csv && to > from {
        let gap = read_range(path, from, to).unwrap_or_default();
        if let Some((line, column, kind, message)) = csv::first_bad_record(&gap, config.delimiter, Some(config.schema.len())) {
            return Error::Input { path: path.to_path_buf(), line: lines::line_of(path, from) + line - 1, column: column as u64, kind: Some(kind), message };
        }
    }
    let at = from.min(to);
    Error::Input {
        path: path.to_path_buf(),
        line: lines::line_of(path, at),
        column: 1,
        kind: None,
        message: "records near here were read by two parallel byte ranges or by none (a quoted field with a newline crosses a range boundary); \
                  set the source's `split_bytes` above this file's size to read it as one range"
            .into(),
    }
}

fn read_range(path: &std::path::Path, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(to - from).read_to_end(&mut buf)?;
    Ok(buf)
}

/// What a chunk of input gave: rows (None when none), and the records that were rejected, in
/// file order.
pub struct Parsed {
    df: Option<DataFrame>,
    rejected: Vec<Rejection>,
    /// What the Parquet reader left out.
    dropped: ReaderDrops,
}

/// Parses one chunk of a split into a frame and rejections that name file, line and column.
/// `lines` finds the file line of a byte offset (asked only when there are rejections).
trait ChunkParser: Send {
    fn parse(&mut self, split: &Split, offset: u64, chunk: &[u8], lines: &mut LineCounter) -> Result<Parsed>;
}

/// Reads splits one after another, chunk by chunk.
trait SplitReader: Send {
    /// The next part of this split, None when the split is done.
    fn next(&mut self) -> Result<Option<Parsed>>;

    /// The buffers it read into, for the next split's reader (see [`lines::LineChunker::open`]).
    fn into_buffers(self: Box<Self>) -> Option<[Vec<u8>; 2]> {
        None
    }
}

/// Reads the text splits of CSV and JSON-lines files.
struct TextSplit {
    split: Split,
    chunker: lines::LineChunker,
    parser: Box<dyn ChunkParser>,
    metrics: Arc<Metrics>,
    node: usize,
    log: Arc<SplitLog>,
    lines: LineCounter,
}

impl SplitReader for TextSplit {
    fn next(&mut self) -> Result<Option<Parsed>> {
        let path = &self.split.path;
        let Some((offset, chunk)) = self.chunker.next_chunk().map_err(|e| Error::io(path, e))? else {
            self.log.record(self.split.ordinal, self.chunker.covered());
            return Ok(None);
        };
        NodeMetrics::add(&self.metrics.nodes[self.node].bytes, chunk.len() as u64);
        let parsed = self.parser.parse(&self.split, offset, &chunk, &mut self.lines);
        self.chunker.recycle(chunk);
        parsed.map(Some)
    }

    fn into_buffers(self: Box<Self>) -> Option<[Vec<u8>; 2]> {
        Some(self.chunker.into_buffers())
    }
}

/// A split that yields nothing: its file was rejected as a whole.
struct NoRows;

impl SplitReader for NoRows {
    fn next(&mut self) -> Result<Option<Parsed>> {
        Ok(None)
    }
}

/// A file source subtask: reads the splits it takes, one after another.
pub struct FileSource {
    config: Arc<SourceConfig>,
    source_splits: Arc<SourceSplits>,
    current: Option<Box<dyn SplitReader>>,
    pending: VecDeque<DataFrame>,
    /// Dead-letter frames not yet handed out.
    rejected: VecDeque<DataFrame>,
    batch_rows: usize,
    node: usize,
    metrics: Arc<Metrics>,
    /// Rows emitted so far from the current split (for the sequence column).
    split_rows: u64,
    split_ordinal: usize,
    /// File of the split being read (for its partition values).
    current_file: usize,
    /// The keys of the join its rows go to (see [`JoinFilterSpec`]).
    join_keys: Option<Arc<JoinFilterSlot>>,
    /// The job's cancel flag (a reader waiting for join keys looks at it).
    cancel: Arc<std::sync::atomic::AtomicBool>,
    /// The read buffers of the last text split read, for the next one.
    buffers: [Vec<u8>; 2],
}

impl FileSource {
    /// A source subtask for node `node`, reading `splits` (shared by all its subtasks).
    pub fn new(splits: Arc<SourceSplits>, node: usize, metrics: Arc<Metrics>) -> Self {
        FileSource {
            config: splits.config().clone(),
            source_splits: splits,
            current: None,
            pending: VecDeque::new(),
            rejected: VecDeque::new(),
            batch_rows: 65_536,
            node,
            metrics,
            split_rows: 0,
            split_ordinal: 0,
            current_file: 0,
            join_keys: None,
            cancel: Arc::default(),
            buffers: Default::default(),
        }
    }

    /// The source reads only rows whose key the join of its `join_filter` may hold, once
    /// `slot` has the join's keys.
    pub fn with_join_keys(mut self, slot: Arc<JoinFilterSlot>) -> Self {
        self.join_keys = Some(slot);
        self
    }

    fn open_split(&mut self, split: Split, log: &Arc<SplitLog>) -> Result<Box<dyn SplitReader>> {
        self.split_rows = 0;
        self.split_ordinal = split.ordinal;
        self.current_file = split.file_index;
        if let Some(problem) = &split.problem {
            self.reject(vec![(**problem).clone()])?;
            return Ok(Box::new(NoRows));
        }
        let c = &self.config;
        let shape = lines::CsvShape { width: c.schema.len(), delimiter: c.delimiter, quote: b'"' };
        let (parser, shape): (Box<dyn ChunkParser>, Option<lines::CsvShape>) = match c.format {
            SourceFormat::Parquet => {
                return Ok(Box::new(parquet::ParquetSplit::new(c.clone(), split, self.join_keys.clone())));
            }
            SourceFormat::Ipc => return Ok(Box::new(ipc::IpcSplit::new(c.clone(), split))),
            SourceFormat::Csv => (Box::new(csv::CsvChunkParser::new(c.clone(), shape)), Some(shape)),
            SourceFormat::Jsonl => (Box::new(jsonl::JsonChunkParser::new(c.clone())), None),
            SourceFormat::Lines | SourceFormat::Regex => (Box::new(text::TextChunkParser::new(c.clone())?), None),
        };
        let unreadable = |e: std::io::Error| Rejection::of_file(&split.path, ErrorKind::Unreadable, format!("cannot read the file: {e}"));
        let buffers = std::mem::take(&mut self.buffers);
        let mut chunker = match lines::LineChunker::open(&split.path, split.start, split.end, CHUNK_BYTES, shape, buffers) {
            Ok(c) => c,
            Err(e) => {
                // Every split reports what it could not read (a file can vanish between them).
                self.reject(vec![unreadable(e)])?;
                log.record(split.ordinal, (split.start, split.end));
                return Ok(Box::new(NoRows));
            }
        };
        if c.format == SourceFormat::Csv && c.header {
            // Every split of a file checks its header; the first one reports a bad one.
            let header = if split.start == 0 {
                chunker.next_line()
            } else {
                lines::head_lines(&split.path, 1, Some(b'"')).map(|h| (!h.is_empty()).then(|| trim_line_end(&h).to_vec()))
            };
            let checked = match header {
                Ok(h) => csv::check_header(c, &split.path, h.as_deref()),
                Err(e) => Err(Box::new(unreadable(e))),
            };
            if let Err(problem) = checked {
                // A bad header is reported once, by the first split; a later split that cannot
                // read the header reports that itself.
                let own = split.start == 0 || problem.kind == ErrorKind::Unreadable;
                self.reject(if own { vec![*problem] } else { Vec::new() })?;
                // The whole file is rejected: its splits count as read.
                log.record(split.ordinal, (split.start, split.end));
                return Ok(Box::new(NoRows));
            }
        }
        let lines = LineCounter::shared(&split.path, log.lines.clone());
        Ok(Box::new(TextSplit { split, chunker, parser, metrics: self.metrics.clone(), node: self.node, log: log.clone(), lines }))
    }

    /// Applies the source's `on_error` to rejected records: the first one fails the run, or
    /// they are counted (and sent to the dead-letter output).
    fn reject(&mut self, rejected: Vec<Rejection>) -> Result<()> {
        apply_on_error(&self.config, &self.metrics.nodes[self.node], rejected, &mut self.rejected)
    }

    /// Counts rows the reader read but dropped as the operators that would have seen them:
    /// read by the source, then filtered by the filter after it, or passed through the nodes
    /// before the join and filtered by the join.
    fn count_drops(&self, metrics: &Metrics, d: ReaderDrops) {
        let m = &metrics.nodes[self.node];
        NodeMetrics::add(&m.pruned, d.row_groups);
        NodeMetrics::add(&m.rows_in, d.filtered + d.unmatched);
        NodeMetrics::add(&m.rows_out, d.filtered + d.unmatched);
        if d.filtered > 0 {
            let consumer = self.config.reader_filter.as_ref().map(|f| &metrics.nodes[f.consumer]).expect("only a reader filter filters rows");
            NodeMetrics::add(&consumer.rows_in, d.filtered);
            NodeMetrics::add(&consumer.filtered, d.filtered);
        }
        if d.unmatched > 0 {
            let spec = self.config.join_filter.as_ref().expect("only a join filter drops unmatched rows");
            for &n in &spec.between {
                NodeMetrics::add(&metrics.nodes[n].rows_in, d.unmatched);
                NodeMetrics::add(&metrics.nodes[n].rows_out, d.unmatched);
            }
            NodeMetrics::add(&metrics.nodes[spec.join].rows_in, d.unmatched);
            NodeMetrics::add(&metrics.nodes[spec.join].filtered, d.unmatched);
        }
    }

    /// The reader of the split being read, or of the next one, opened; None when every split
    /// was taken.
    fn reader(&mut self) -> Result<Option<&mut Box<dyn SplitReader>>> {
        if self.current.is_none() {
            let listed = self.source_splits.get(&self.metrics.nodes[self.node])?;
            let Some(split) = listed.splits.get(listed.log.take()).cloned() else { return Ok(None) };
            self.current = Some(self.open_split(split, &listed.log)?);
        }
        Ok(self.current.as_mut())
    }

    fn with_sequence(&mut self, mut df: DataFrame) -> Result<DataFrame> {
        if self.config.with_sequence {
            let base = ((self.split_ordinal as u64) << 40) + self.split_rows;
            let seq: Vec<u64> = (base..base + df.height() as u64).collect();
            df.with_column(Column::new(SEQ_COLUMN.into(), seq)).map_err(|e| Error::execution("source", &self.config.name, e))?;
        }
        self.split_rows += df.height() as u64;
        Ok(df)
    }
}

impl Source for FileSource {
    fn open(&mut self, ctx: &SourceContext) -> Result<()> {
        self.batch_rows = ctx.batch_rows;
        self.cancel = ctx.cancel.clone();
        Ok(())
    }

    /// Lists the splits (a Parquet source reads the footers and prunes row groups) and opens
    /// the first one (a text split asks the kernel to read ahead), while the task reads the
    /// right sides of its joins.
    fn prepare(&mut self) -> Result<()> {
        self.reader().map(drop)
    }

    fn poll(&mut self) -> Result<Poll> {
        loop {
            if let Some(df) = self.rejected.pop_front() {
                return Ok(Poll::Rejected(df));
            }
            if let Some(df) = self.pending.pop_front() {
                return Ok(Poll::Batch(df));
            }
            if self.reader()?.is_none() {
                return Ok(Poll::Finished);
            }
            if let Some(slot) = &self.join_keys {
                // The join reads its right side first, so the rows would wait anyway: read
                // nothing before its keys are known. Not counted as the source's time: it is idle.
                slot.wait(&self.cancel);
            }
            let start = Instant::now();
            let next = self.current.as_mut().expect("a split is open").next()?;
            let metrics = self.metrics.clone();
            let m = &metrics.nodes[self.node];
            m.add_time(start.elapsed());
            let df = match next {
                None => {
                    if let Some(buffers) = self.current.take().and_then(|r| r.into_buffers()) {
                        self.buffers = buffers;
                    }
                    NodeMetrics::add(&m.splits, 1);
                    // Nothing of the split is pending: every batch of it went out before.
                    return Ok(Poll::SplitEnd);
                }
                Some(parsed) => {
                    self.reject(parsed.rejected)?;
                    self.count_drops(&metrics, parsed.dropped);
                    parsed.df
                }
            };
            match df {
                None => {}
                Some(df) if df.height() == 0 => {}
                Some(df) => {
                    let file_index = self.current_file;
                    let df = self.config.add_partition_columns(file_index, df).map_err(|e| Error::execution("source", &self.config.name, e))?;
                    let df = self.with_sequence(df)?;
                    NodeMetrics::add(&m.rows_in, df.height() as u64);
                    NodeMetrics::add(&m.rows_out, df.height() as u64);
                    let mut offset = 0;
                    while offset < df.height() {
                        self.pending.push_back(df.slice(offset as i64, self.batch_rows));
                        offset += self.batch_rows;
                    }
                }
            }
        }
    }
}

/// Parses `bytes` as one chunk of a source of `format`, as the readers do, with `on_error =
/// "skip"`, and returns (rows, rejected records). The columns: CSV `a: int, b: string, c: float`;
/// JSON lines `a: int, b: string`; regex `^(?P<a>\d+)-(?P<b>[^,]*)` with `a` an int; lines
/// `line`. For the fuzz targets and property tests: any input must give a result or an error,
/// never a panic.
#[doc(hidden)]
pub fn parse_chunk_for_fuzzing(format: SourceFormat, bytes: &[u8]) -> Result<(usize, usize)> {
    let schema = |cols: &[(&str, DataType)]| -> Schema { cols.iter().map(|(n, t)| Field::new((*n).into(), t.clone())).collect() };
    let (cols, declared, regex) = match format {
        SourceFormat::Csv => (schema(&[("a", DataType::Int64), ("b", DataType::String), ("c", DataType::Float64)]), vec![], None),
        SourceFormat::Jsonl => (schema(&[("a", DataType::Int64), ("b", DataType::String)]), vec![], None),
        SourceFormat::Regex => (schema(&[("a", DataType::Int64), ("b", DataType::String)]), vec!["a".to_string()], Some(r"^(?P<a>\d+)-(?P<b>[^,]*)")),
        SourceFormat::Lines => (schema(&[("line", DataType::String)]), vec![], None),
        SourceFormat::Parquet | SourceFormat::Ipc => return Err(Error::Usage("Parquet and IPC are read from files, not chunks".into())),
    };
    let raw = match format {
        SourceFormat::Regex => text::text_schema(format, regex).map_err(Error::Usage)?,
        _ => cols.clone(),
    };
    let path = PathBuf::from("/nonexistent/input");
    let mut config = SourceConfig::plain(format, vec![path.clone()], cols, OnError::Skip);
    config.raw_schema = Arc::new(raw);
    config.declared = declared;
    config.max_line_bytes = 64;
    config.regex = regex.map(str::to_string);
    let config = Arc::new(config);
    let mut parser: Box<dyn ChunkParser> = match format {
        SourceFormat::Csv => {
            let shape = lines::CsvShape { width: 3, delimiter: b',', quote: b'"' };
            let _ = (shape.all_records_complete(bytes), shape.plausible_start(bytes, true), csv::first_bad_record(bytes, b',', None));
            Box::new(csv::CsvChunkParser::new(config, shape))
        }
        SourceFormat::Jsonl => Box::new(jsonl::JsonChunkParser::new(config)),
        _ => Box::new(text::TextChunkParser::new(config)?),
    };
    let split = Split { file_index: 0, path: path.clone(), start: 0, end: 1 << 20, ordinal: 0, problem: None };
    let parsed = parser.parse(&split, 0, bytes, &mut LineCounter::new(&path))?;
    Ok((parsed.df.map_or(0, |d| d.height()), parsed.rejected.len()))
}

#[cfg(test)]
mod proptests {
    //! Random bytes into every line reader: never a panic, and never more rows and rejections
    //! than lines.
    use proptest::prelude::*;

    use super::*;

    /// Bytes that matter to the readers, mixed with anything.
    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        let special = prop::sample::select(b"a1-,\"\n\r\0\xff{}[]:. \t\\x9".to_vec());
        prop::collection::vec(prop_oneof![3 => special, 1 => any::<u8>()], 0..600)
    }

    fn check(format: SourceFormat, chunk: &[u8]) {
        let lines = chunk.split(|&b| b == b'\n').count();
        if let Ok((rows, rejected)) = parse_chunk_for_fuzzing(format, chunk) {
            assert!(rows + rejected <= lines, "{rows} rows + {rejected} rejected from {lines} lines");
        }
    }

    proptest! {
        #[test]
        fn csv_reader_never_panics(chunk in bytes()) {
            check(SourceFormat::Csv, &chunk);
        }

        #[test]
        fn jsonl_reader_never_panics(chunk in bytes()) {
            check(SourceFormat::Jsonl, &chunk);
        }

        #[test]
        fn regex_and_lines_readers_never_panic(chunk in bytes()) {
            check(SourceFormat::Regex, &chunk);
            check(SourceFormat::Lines, &chunk);
        }
    }
}

#[cfg(test)]
mod vanished {
    //! A file that disappears between planning and reading is an `unreadable` rejection.
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::exec::source::Source;

    fn run(on_error: OnError) -> (Result<Vec<Poll>>, Arc<Metrics>) {
        let gone = PathBuf::from("/nonexistent/rivulet/gone.csv");
        let schema: Schema = [Field::new("a".into(), DataType::Int64)].into_iter().collect();
        let mut config = SourceConfig::plain(SourceFormat::Csv, vec![gone], schema, on_error);
        config.header = true;
        let metrics = Arc::new(Metrics::new(1));
        let mut source = FileSource::new(Arc::new(SourceSplits::new(Arc::new(config))), 0, metrics.clone());
        let ctx =
            SourceContext { subtask: 0, parallelism: 1, batch_rows: 100, cancel: Arc::new(AtomicBool::new(false)), stop: Arc::new(AtomicBool::new(false)) };
        let polls = source.open(&ctx).and_then(|()| {
            let mut polls = Vec::new();
            loop {
                match source.poll()? {
                    Poll::Finished => return Ok(polls),
                    Poll::SplitEnd => {}
                    p => polls.push(p),
                }
            }
        });
        (polls, metrics)
    }

    #[test]
    fn a_vanished_file_fails_or_is_rejected() {
        let (result, _) = run(OnError::Fail);
        let e = result.unwrap_err();
        assert!(matches!(e, Error::Input { kind: Some(ErrorKind::Unreadable), .. }), "{e}");
        assert!(e.to_string().starts_with("/nonexistent/rivulet/gone.csv: cannot read the file"), "{e}");
        let (result, metrics) = run(OnError::DeadLetter);
        let polls = result.unwrap();
        assert!(matches!(polls.as_slice(), [Poll::Rejected(df)] if df.height() == 1), "{polls:?}");
        assert_eq!(NodeMetrics::get(&metrics.nodes[0].rejected), 1);
    }
}
