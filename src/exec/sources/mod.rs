//! File sources: CSV, JSON lines and Parquet over a file, a directory or a glob.
//!
//! Every subtask reads its own splits (whole files, byte ranges of big text files, or Parquet
//! row groups), emits batches of at most `batch_rows` rows and holds at most one chunk in
//! memory, so memory stays bounded whatever the input size.
mod csv;
pub mod discover;
mod jsonl;
mod lines;
mod parquet;
mod values;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::exec::operators::stateless::SEQ_COLUMN;
use crate::exec::source::{Poll, Source, SourceContext};
use crate::pipeline::SourceFormat;
use discover::Split;

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

    /// Cuts the input into splits, in source order.
    pub fn splits(&self) -> Result<Vec<Split>> {
        match self.format {
            SourceFormat::Parquet => parquet::row_group_splits(self),
            _ => discover::byte_splits(&self.files, self.split_bytes).map_err(|e| Error::io(&self.files[0], e)),
        }
    }
}

/// Infers a source's schema from its first file with data: (as read, with declared types
/// applied to the columns that exist). An error is about the data.
pub fn infer_schema(
    format: SourceFormat,
    files: &[PathBuf],
    header: bool,
    delimiter: u8,
    infer_rows: usize,
    declared: &[(String, DataType)],
) -> std::result::Result<(Schema, Schema), String> {
    // A header-only or empty file says nothing about types: sample the first file with data.
    let first = match format {
        SourceFormat::Parquet => &files[0],
        _ => files.iter().find(|f| has_data_line(f, format == SourceFormat::Csv && header)).unwrap_or(&files[0]),
    };
    let raw = match format {
        SourceFormat::Csv => csv::infer(first, header, delimiter, infer_rows, declared)?,
        SourceFormat::Jsonl => jsonl::infer(first, infer_rows)?,
        SourceFormat::Parquet => parquet::file_schema(first)?,
    };
    let mut schema = raw.clone();
    for (name, dtype) in declared {
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

/// Where each text split really started and stopped reading. A split starts at the first
/// record boundary after its nominal start, which for CSV with quoted newlines is a guess; this
/// log checks after the run that the splits of every file met exactly and covered it all, so a
/// wrong guess fails the run instead of losing or repeating rows.
#[derive(Debug)]
pub struct SplitLog {
    covered: std::sync::Mutex<Vec<Option<(u64, u64)>>>,
}

impl SplitLog {
    /// A log for `n` splits.
    pub fn new(n: usize) -> Self {
        SplitLog { covered: std::sync::Mutex::new(vec![None; n]) }
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
        if let Some((line, column, message)) = csv::first_ragged_line(&gap, config.delimiter, Some(config.schema.len())) {
            return Error::Input { path: path.to_path_buf(), line: lines::line_of(path, from) + line - 1, column: column as u64, message };
        }
    }
    let at = from.min(to);
    Error::Input {
        path: path.to_path_buf(),
        line: lines::line_of(path, at),
        column: 1,
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

/// Parses one chunk of a split into a frame; errors name file, line and column.
trait ChunkParser: Send {
    fn parse(&mut self, split: &Split, offset: u64, chunk: Vec<u8>) -> Result<DataFrame>;
}

/// Reads splits one after another, chunk by chunk.
trait SplitReader: Send {
    /// The next frame of this split, None when the split is done.
    fn next(&mut self) -> Result<Option<DataFrame>>;
}

/// Reads the text splits of CSV and JSON-lines files.
struct TextSplit {
    split: Split,
    chunker: lines::LineChunker,
    parser: Box<dyn ChunkParser>,
    metrics: Arc<Metrics>,
    node: usize,
    log: Arc<SplitLog>,
}

impl SplitReader for TextSplit {
    fn next(&mut self) -> Result<Option<DataFrame>> {
        let path = &self.split.path;
        let Some((offset, chunk)) = self.chunker.next_chunk().map_err(|e| Error::io(path, e))? else {
            self.log.record(self.split.ordinal, self.chunker.covered());
            return Ok(None);
        };
        NodeMetrics::add(&self.metrics.nodes[self.node].bytes, chunk.len() as u64);
        self.parser.parse(&self.split, offset, chunk).map(Some)
    }
}

/// A file source subtask: its splits, read in order.
pub struct FileSource {
    config: Arc<SourceConfig>,
    all_splits: Arc<Vec<Split>>,
    log: Arc<SplitLog>,
    splits: VecDeque<Split>,
    current: Option<Box<dyn SplitReader>>,
    pending: VecDeque<DataFrame>,
    batch_rows: usize,
    node: usize,
    metrics: Arc<Metrics>,
    /// Rows emitted so far from the current split (for the sequence column).
    split_rows: u64,
    split_ordinal: usize,
    /// File of the split being read (for its partition values).
    current_file: usize,
}

impl FileSource {
    /// A source subtask over `config`, for node `node`; `splits` are the source's splits
    /// (computed once for all subtasks) and `log` records what each really covered.
    pub fn new(config: Arc<SourceConfig>, splits: Arc<Vec<Split>>, log: Arc<SplitLog>, node: usize, metrics: Arc<Metrics>) -> Self {
        FileSource { config, all_splits: splits, log, splits: VecDeque::new(), current: None, pending: VecDeque::new(), batch_rows: 65_536, node, metrics, split_rows: 0, split_ordinal: 0, current_file: 0 }
    }

    fn open_split(&mut self, split: Split) -> Result<Box<dyn SplitReader>> {
        self.split_rows = 0;
        self.split_ordinal = split.ordinal;
        self.current_file = split.file_index;
        let c = &self.config;
        let shape = lines::CsvShape { width: c.schema.len(), delimiter: c.delimiter, quote: b'"' };
        let (parser, shape): (Box<dyn ChunkParser>, Option<lines::CsvShape>) = match c.format {
            SourceFormat::Parquet => return Ok(Box::new(parquet::ParquetSplit::new(c.clone(), split))),
            SourceFormat::Csv => (Box::new(csv::CsvChunkParser::new(c.clone(), shape)), Some(shape)),
            SourceFormat::Jsonl => (Box::new(jsonl::JsonChunkParser::new(c.clone())), None),
        };
        let mut chunker = lines::LineChunker::open(&split.path, split.start, split.end, CHUNK_BYTES, shape).map_err(|e| Error::io(&split.path, e))?;
        if c.format == SourceFormat::Csv && c.header && split.start == 0 {
            let header = chunker.next_line().map_err(|e| Error::io(&split.path, e))?;
            csv::check_header(c, &split.path, header.as_deref())?;
        }
        Ok(Box::new(TextSplit { split, chunker, parser, metrics: self.metrics.clone(), node: self.node, log: self.log.clone() }))
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
        self.splits = discover::assign(&self.all_splits, ctx.subtask, ctx.parallelism).into();
        Ok(())
    }

    fn poll(&mut self) -> Result<Poll> {
        loop {
            if let Some(df) = self.pending.pop_front() {
                return Ok(Poll::Batch(df));
            }
            let reader = match &mut self.current {
                Some(r) => r,
                None => match self.splits.pop_front() {
                    None => return Ok(Poll::Finished),
                    Some(split) => {
                        let r = self.open_split(split)?;
                        self.current.insert(r)
                    }
                },
            };
            let start = Instant::now();
            let next = reader.next()?;
            let metrics = self.metrics.clone();
            let m = &metrics.nodes[self.node];
            m.add_time(start.elapsed());
            match next {
                None => {
                    self.current = None;
                    NodeMetrics::add(&m.splits, 1);
                }
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
