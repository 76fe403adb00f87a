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
}

impl SourceConfig {
    /// Schema of the batches the source emits.
    pub fn output_schema(&self) -> Schema {
        let mut schema: Schema = match &self.projection {
            Some(cols) => cols.iter().filter_map(|c| self.schema.get_field(c)).collect(),
            None => (*self.schema).clone(),
        };
        if self.with_sequence {
            schema.with_column(SEQ_COLUMN.into(), DataType::UInt64);
        }
        schema
    }

    /// Cuts the input into splits, in source order.
    pub fn splits(&self) -> Result<Vec<Split>> {
        match self.format {
            SourceFormat::Parquet => parquet::row_group_splits(self),
            _ => discover::byte_splits(&self.files, self.split_bytes).map_err(|e| Error::io(&self.files[0], e)),
        }
    }
}

/// Infers a source's schema from its first file: (as read, with declared types applied).
pub fn infer_schema(
    format: SourceFormat,
    files: &[PathBuf],
    header: bool,
    delimiter: u8,
    infer_rows: usize,
    declared: &[(String, DataType)],
) -> std::result::Result<(Schema, Schema), String> {
    let first = &files[0];
    let raw = match format {
        SourceFormat::Csv => csv::infer(first, header, delimiter, infer_rows, declared)?,
        SourceFormat::Jsonl => jsonl::infer(first, infer_rows)?,
        SourceFormat::Parquet => parquet::file_schema(first)?,
    };
    let mut schema = raw.clone();
    for (name, dtype) in declared {
        match schema.get_mut(name.as_str()) {
            Some(t) => *t = dtype.clone(),
            None if format == SourceFormat::Csv && !header => {}
            None => {
                let names: Vec<_> = schema.iter_names().map(|n| n.to_string()).collect();
                return Err(format!("declared column '{name}' is not in {} (columns: {})", first.display(), names.join(", ")));
            }
        }
    }
    Ok((raw, schema))
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
}

impl SplitReader for TextSplit {
    fn next(&mut self) -> Result<Option<DataFrame>> {
        let path = &self.split.path;
        let Some((offset, chunk)) = self.chunker.next_chunk().map_err(|e| Error::io(path, e))? else { return Ok(None) };
        NodeMetrics::add(&self.metrics.nodes[self.node].bytes, chunk.len() as u64);
        self.parser.parse(&self.split, offset, chunk).map(Some)
    }
}

/// A file source subtask: its splits, read in order.
pub struct FileSource {
    config: Arc<SourceConfig>,
    all_splits: Arc<Vec<Split>>,
    splits: VecDeque<Split>,
    current: Option<Box<dyn SplitReader>>,
    pending: VecDeque<DataFrame>,
    batch_rows: usize,
    node: usize,
    metrics: Arc<Metrics>,
    /// Rows emitted so far from the current split (for the sequence column).
    split_rows: u64,
    split_ordinal: usize,
}

impl FileSource {
    /// A source subtask over `config`, for node `node`; `splits` are the source's splits
    /// (computed once for all subtasks).
    pub fn new(config: Arc<SourceConfig>, splits: Arc<Vec<Split>>, node: usize, metrics: Arc<Metrics>) -> Self {
        FileSource { config, all_splits: splits, splits: VecDeque::new(), current: None, pending: VecDeque::new(), batch_rows: 65_536, node, metrics, split_rows: 0, split_ordinal: 0 }
    }

    fn open_split(&mut self, split: Split) -> Result<Box<dyn SplitReader>> {
        self.split_rows = 0;
        self.split_ordinal = split.ordinal;
        let c = &self.config;
        let (parser, quote): (Box<dyn ChunkParser>, Option<u8>) = match c.format {
            SourceFormat::Parquet => return Ok(Box::new(parquet::ParquetSplit::new(c.clone(), split))),
            SourceFormat::Csv => (Box::new(csv::CsvChunkParser::new(c.clone())), Some(b'"')),
            SourceFormat::Jsonl => (Box::new(jsonl::JsonChunkParser::new(c.clone())), None),
        };
        let mut chunker = lines::LineChunker::open(&split.path, split.start, split.end, 4 << 20, quote).map_err(|e| Error::io(&split.path, e))?;
        if c.format == SourceFormat::Csv && c.header && split.start == 0 {
            let header = chunker.next_line().map_err(|e| Error::io(&split.path, e))?;
            csv::check_header(c, &split.path, header.as_deref())?;
        }
        Ok(Box::new(TextSplit { split, chunker, parser, metrics: self.metrics.clone(), node: self.node }))
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
