//! Parquet: one split per row group, read with polars' Parquet reader. A file that cannot be
//! decoded is a `corrupt_parquet` rejection; polars panics on some corruptions, and those are
//! caught and reported the same way.
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use polars::io::parquet::read::FileMetadata;
use polars::prelude::*;
use polars_arrow::datatypes::ArrowSchema;

use super::discover::Split;
use super::{Parsed, ReaderDrops, ReaderFilter, SourceConfig, SplitReader};
use crate::error::{Error, Result};
use crate::exec::dead_letter::{ErrorKind, Rejection};
use crate::exec::guard::catch_panic;
use crate::exec::join_filter::{JoinFilterSlot, KeyFilter};
use crate::exec::operators::row_eval;
use crate::pipeline::OnError;
use crate::plan::expr::{clean, columns_of};

fn open(path: &Path) -> std::result::Result<ParquetReader<File>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open the file: {e}"))?;
    Ok(ParquetReader::new(file))
}

/// A file's footer: its metadata, and the Arrow schema polars derives from it.
struct Footer {
    meta: Arc<FileMetadata>,
    fields: Arc<ArrowSchema>,
    /// The file's bytes, mapped by the first reader of one of its row groups and shared by the
    /// others (see [`mapped`]).
    bytes: std::sync::OnceLock<polars_buffer::Buffer<u8>>,
}

/// The length and modification time of a file, and the footer read from it.
type CachedFooter = ((u64, Option<std::time::SystemTime>), Arc<Footer>);

/// Footers this process has read. Planning reads a file's footer for its schema, its row
/// groups and their statistics, and the reader of each row group needs it again: TPC-H's
/// lineitem footer was parsed 68 times a run. A file whose length or modification time
/// changed is read again.
static FOOTERS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, CachedFooter>>> = std::sync::LazyLock::new(Default::default);

/// Most footers kept (a long tail-mode run over many files must not grow without bound).
const MOST_FOOTERS: usize = 4096;

/// The footer of a Parquet file, or why it cannot be read.
fn footer(path: &Path) -> std::result::Result<Arc<Footer>, (ErrorKind, String)> {
    let stamp = std::fs::metadata(path).map(|m| (m.len(), m.modified().ok())).map_err(|e| (ErrorKind::Unreadable, format!("cannot open the file: {e}")))?;
    let cache = || FOOTERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((at, footer)) = cache().get(path)
        && *at == stamp
    {
        return Ok(footer.clone());
    }
    let mut reader = open(path).map_err(|m| (ErrorKind::Unreadable, m))?;
    let corrupt = |m: String| (ErrorKind::CorruptParquet, format!("not a readable Parquet file: {m}"));
    let meta = catch_panic(|| reader.get_metadata().cloned()).map_err(corrupt)?.map_err(|e| corrupt(clean(&e)))?;
    let fields = catch_panic(|| reader.schema()).map_err(corrupt)?.map_err(|e| corrupt(clean(&e)))?;
    let footer = Arc::new(Footer { meta, fields, bytes: std::sync::OnceLock::new() });
    let mut cache = cache();
    if cache.len() >= MOST_FOOTERS {
        cache.clear();
    }
    cache.insert(path.to_path_buf(), (stamp, footer.clone()));
    Ok(footer)
}

/// The bytes of a file, mapped.
fn map(path: &Path) -> std::io::Result<polars_buffer::Buffer<u8>> {
    use polars::io::mmap::ReaderBytes;
    let mut file = File::open(path)?;
    Ok(match ReaderBytes::from(&mut file) {
        ReaderBytes::Owned(mapped) => mapped,
        ReaderBytes::Borrowed(b) => polars_buffer::Buffer::from_vec(b.to_vec()),
    })
}

/// The bytes of the file `footer` was read from, mapped once while the footer is cached (the
/// file unchanged). Mapping the file again for each row group cost an `mmap` and a `munmap`
/// per row group: each takes the process's memory map lock for writing, stalling the page
/// faults of every other subtask, and the `munmap` interrupts the other cores to flush their
/// TLBs. A mapping lives as long as its footer in the cache, or an array that points into it
/// (the disk space of a file deleted meanwhile is freed when the mapping goes).
fn mapped(footer: &Footer, path: &Path) -> std::io::Result<polars_buffer::Buffer<u8>> {
    if let Some(bytes) = footer.bytes.get() {
        return Ok(bytes.clone());
    }
    // Two readers may map the file at once: one mapping is kept, the other dropped.
    let bytes = map(path)?;
    Ok(footer.bytes.get_or_init(|| bytes).clone())
}

/// The schema stored in a Parquet file's footer, or why it cannot be read.
fn footer_schema(path: &Path) -> std::result::Result<Schema, (ErrorKind, String)> {
    footer(path).map(|f| Schema::from_arrow_schema(&f.fields))
}

/// The schema stored in a Parquet file's footer.
pub fn file_schema(path: &Path) -> std::result::Result<Schema, String> {
    footer_schema(path).map_err(|(_, m)| format!("{}: {m}", path.display()))
}

/// One split per row group of every file. A file that cannot be read, or whose schema differs
/// from the source's, is an error, or (when the source skips bad input) one split that carries
/// the rejection.
pub fn row_group_splits(config: &SourceConfig) -> Result<(Vec<Split>, u64)> {
    // Each file's footer, or why it is rejected.
    let mut footers = Vec::with_capacity(config.files.len());
    for path in &config.files {
        footers.push(footer(path).and_then(|footer| {
            let schema = Schema::from_arrow_schema(&footer.fields);
            if schema == *config.raw_schema {
                return Ok(footer);
            }
            let names = |s: &Schema| s.iter().map(|(n, t)| format!("{n}: {t}")).collect::<Vec<_>>().join(", ");
            Err((ErrorKind::SchemaMismatch, format!("schema [{}] differs from [{}] of source '{}'", names(&schema), names(&config.raw_schema), config.name)))
        }));
    }
    let readable: Vec<&Footer> = footers.iter().filter_map(|f| f.as_deref().ok()).collect();
    let mut refuted = match (config.row_group_filter.is_empty(), readable.first()) {
        (false, Some(first)) => {
            // Statistics polars cannot decode (it may panic on some) refute nothing.
            let metas: Vec<&FileMetadata> = readable.iter().map(|f| &*f.meta).collect();
            catch_panic(|| refuted_row_groups(config, &first.fields, &metas)).unwrap_or_default()
        }
        _ => Vec::new(),
    }
    .into_iter();
    let mut splits = Vec::new();
    let mut pruned = 0;
    for (file_index, (path, footer)) in config.files.iter().zip(&footers).enumerate() {
        let footer = match footer {
            Ok(f) => f,
            Err((kind, message)) => {
                let problem = Rejection::of_file(path, *kind, message.clone());
                if config.on_error == OnError::Fail {
                    return Err(problem.into_error(("source", &config.name)));
                }
                splits.push(Split { file_index, path: path.clone(), start: 0, end: 0, ordinal: splits.len(), problem: Some(Box::new(problem)) });
                continue;
            }
        };
        let mut start = 0u64;
        for rg in &footer.meta.row_groups {
            let rows = rg.num_rows() as u64;
            if refuted.next() == Some(true) {
                pruned += 1;
            } else if rows > 0 {
                splits.push(Split { file_index, path: path.clone(), start, end: start + rows, ordinal: splits.len(), problem: None });
            }
            start += rows;
        }
    }
    Ok((splits, pruned))
}

/// How many row groups `files` hold, when the statistics of their integer (or date) `column`
/// show that no two row groups share a value, nor hold a null: every value of the column then
/// lives in one row group (files written sorted by it, with row groups cut between values, as
/// TPC-H's lineitem by order). None when a file cannot be read, a row group has no such
/// statistics, or two ranges meet.
pub fn disjoint_row_groups(files: &[std::path::PathBuf], column: &str) -> Option<usize> {
    let mut ranges = Vec::new();
    for path in files {
        let footer = footer(path).ok()?;
        let meta = &footer.meta;
        for (rg, group) in meta.row_groups.iter().enumerate() {
            if group.num_rows() == 0 {
                continue;
            }
            // Statistics polars cannot decode (it may panic on some) show nothing.
            let (min, max, nulls) = catch_panic(|| integer_statistics(meta, rg, column)).ok().flatten()?;
            // A writer that ordered the values as unsigned gives a negative max above a
            // non-negative min: such a range says nothing of the values between.
            if nulls != Some(0) || min > max {
                return None;
            }
            ranges.push((min, max));
        }
    }
    ranges.sort_unstable();
    ranges.windows(2).all(|w| w[0].1 < w[1].0).then_some(ranges.len())
}

/// The min, max and null count that row group `rg`'s statistics give for its integer (or
/// date) `column`, as i64s; None without a column chunk or min/max statistics of that kind.
fn integer_statistics(meta: &FileMetadata, rg: usize, column: &str) -> Option<(i64, i64, Option<i64>)> {
    use polars_parquet::parquet::statistics::Statistics;
    let chunk = meta.row_groups[rg].columns_under_root_iter(column).and_then(|mut c| c.next())?;
    match chunk.statistics(&meta.footer_buf) {
        Some(Ok(Statistics::Int32(s))) => Some((i64::from(s.min_value?), i64::from(s.max_value?), s.null_count)),
        Some(Ok(Statistics::Int64(s))) => Some((s.min_value?, s.max_value?, s.null_count)),
        _ => None,
    }
}

/// Which row groups of the files (`metas`, in order, their row groups in order) the min/max
/// statistics show to hold no row that passes one of the source's `row_group_filter` bounds.
/// Missing or unreadable statistics refute nothing. The bounds are evaluated once for all the
/// row groups, on a frame of their minimums followed by their maximums: one polars query per
/// row group and bound (280 for TPC-H Q6's 56 row groups and 5 bounds) cost Q6 about 5 ms of
/// its 62, and one query per file still took each source 2-4 ms at start-up (four files each
/// in TPC-H), on the critical path of the source a join waits for.
fn refuted_row_groups(config: &SourceConfig, fields: &ArrowSchema, metas: &[&FileMetadata]) -> Vec<bool> {
    use polars::io::parquet::metadata::{ParquetStatistics, deserialize};
    let groups: usize = metas.iter().map(|m| m.row_groups.len()).sum();
    let mut refuted = vec![false; groups];
    if groups == 0 {
        return refuted;
    }
    let wanted: std::collections::BTreeSet<String> = config.row_group_filter.iter().flat_map(columns_of).collect();
    let mut columns = Vec::new();
    'column: for name in &wanted {
        let (Some(field), Some(dtype)) = (fields.get(name.as_str()), config.schema.get(name.as_str())) else { continue };
        // One value of `dtype`: a statistic it cannot hold becomes null, and refutes nothing.
        let value = |v: Option<Box<dyn polars_arrow::array::Array>>| {
            v.and_then(|v| Series::from_arrow(field.name.clone(), v).and_then(|s| s.cast(dtype)).ok())
                .filter(|s| s.len() == 1)
                .unwrap_or_else(|| Series::full_null(field.name.clone(), 1, dtype))
        };
        let (mut mins, mut maxs) = (Vec::with_capacity(groups), Vec::with_capacity(groups));
        for meta in metas {
            let Some(first) = meta.row_groups.first() else { continue };
            // Only a top-level column stored as one leaf.
            let leaf = first.parquet_columns().iter().position(|c| c.descriptor().path_in_schema.as_slice() == [name.as_str()]);
            let Some(leaf) = leaf else { continue 'column };
            for rg in &meta.row_groups {
                let mut chunk = rg.parquet_columns().get(leaf..leaf + 1).unwrap_or_default().iter();
                let stats = match deserialize(field, &mut chunk, &meta.footer_buf) {
                    Ok(Some(ParquetStatistics::Column(stats))) => stats.into_arrow().ok(),
                    _ => None,
                };
                let (min, max) = stats.map_or((None, None), |s| (s.min_value, s.max_value));
                mins.push(value(min));
                maxs.push(value(max));
            }
        }
        let mut bounds = Series::new_empty(field.name.clone(), dtype);
        if mins.iter().chain(&maxs).try_for_each(|s| bounds.append(s).map(|_| ())).is_ok() {
            columns.push(bounds.into_column());
        }
    }
    let Ok(frame) = DataFrame::new(2 * groups, columns) else { return refuted };
    // Only bounds whose column has statistics can refute.
    let bounds: Vec<&Expr> = config.row_group_filter.iter().filter(|b| columns_of(b).iter().all(|c| frame.schema().contains(c))).collect();
    let evaluate = |bounds: &[&Expr]| {
        let select = bounds.iter().enumerate().map(|(i, b)| (*b).clone().alias(format!("pass{i}"))).collect::<Vec<_>>();
        frame.clone().lazy().select(select).with_optimizations(crate::plan::expr::TYPE_CHECKS_ONLY).collect()
    };
    // A bound that fails to evaluate refutes nothing, and must not stop the others.
    let passes: Vec<Column> = match evaluate(&bounds) {
        Ok(df) => df.into_columns(),
        Err(_) => bounds.iter().filter_map(|b| evaluate(&[b]).ok().and_then(|df| df.into_columns().pop())).collect(),
    };
    for pass in &passes {
        let Ok(pass) = pass.bool() else { continue };
        for (rg, refuted) in refuted.iter_mut().enumerate() {
            // Neither the min nor the max passes (a monotone comparison): no value between does.
            *refuted |= pass.get(rg) == Some(false) && pass.get(groups + rg) == Some(false);
        }
    }
    refuted
}

/// Checks the page headers of one column chunk (bytes `range` of the file): every size and value
/// count is non-negative, the pages lie inside the chunk, and they hold at most `total` values
/// (itself at most `most`). Returns the size of the chunk's dictionary when every data page
/// is dictionary-encoded (its rows can be read as dictionary codes).
fn check_column_chunk(file: &[u8], range: std::ops::Range<u64>, total: i64, most: i64) -> std::result::Result<Option<usize>, String> {
    use polars_parquet_format::Encoding;
    use polars_parquet_format::thrift::protocol::TCompactInputProtocol;
    let file_len = file.len() as u64;
    if range.start > range.end || range.end > file_len {
        return Err(format!("its bytes {}..{} lie outside the file ({file_len} bytes)", range.start, range.end));
    }
    if !(0..=most).contains(&total) {
        return Err(format!("it claims {total} values (at most {most} fit)"));
    }
    let (mut pos, mut seen) = (range.start, 0i64);
    let (mut dictionary, mut dictionaries, mut coded) = (0, 0, true);
    while seen < total && pos < range.end {
        let mut slice = &file[pos as usize..range.end as usize];
        let left = slice.len();
        let mut protocol = TCompactInputProtocol::new(&mut slice, left);
        let header = polars_parquet_format::PageHeader::read_from_in_protocol(&mut protocol).map_err(|e| format!("page header at byte {pos}: {e}"))?;
        let used = left - slice.len();
        let values = [header.data_page_header.as_ref().map(|h| h.num_values), header.data_page_header_v2.as_ref().map(|h| h.num_values)];
        let data_values: i64 = values.iter().flatten().map(|&n| i64::from(n)).sum();
        let dict_values = header.dictionary_page_header.as_ref().map_or(0, |h| i64::from(h.num_values));
        let bad = header.compressed_page_size < 0
            || header.uncompressed_page_size < 0
            || data_values < 0
            || dict_values < 0
            || dict_values > i64::from(header.uncompressed_page_size).max(1) * 8
            || seen + data_values > total
            || pos + used as u64 + header.compressed_page_size as u64 > range.end;
        if bad {
            return Err(format!(
                "page at byte {pos} is inconsistent: {} values ({seen} before it, {total} in the chunk), {} dictionary values, {} bytes compressed, {} uncompressed",
                data_values, dict_values, header.compressed_page_size, header.uncompressed_page_size
            ));
        }
        seen += data_values;
        pos += used as u64 + header.compressed_page_size as u64;
        let encodings = [header.data_page_header.as_ref().map(|h| h.encoding), header.data_page_header_v2.as_ref().map(|h| h.encoding)];
        coded &= encodings.into_iter().flatten().all(|e| e == Encoding::RLE_DICTIONARY || e == Encoding::PLAIN_DICTIONARY);
        if header.dictionary_page_header.is_some() {
            dictionary = dict_values as usize;
            dictionaries += 1;
        }
    }
    Ok((coded && dictionaries == 1).then_some(dictionary))
}

/// Reads one row group.
pub struct ParquetSplit {
    config: Arc<SourceConfig>,
    split: Option<Split>,
    /// Where the keys of the source's `join_filter` arrive.
    join_keys: Option<Arc<JoinFilterSlot>>,
}

impl ParquetSplit {
    /// A reader of `split`.
    pub fn new(config: Arc<SourceConfig>, split: Split, join_keys: Option<Arc<JoinFilterSlot>>) -> Self {
        ParquetSplit { config, split: Some(split), join_keys }
    }

    /// The join's keys, if they are known, with the column they apply to.
    fn keys(&self) -> Option<(&str, Arc<KeyFilter>)> {
        let spec = self.config.join_filter.as_ref()?;
        Some((spec.column.as_str(), self.join_keys.as_ref()?.get()?))
    }
}

/// Asks the kernel to read bytes `range` of a mapped file into the page cache now: the column
/// chunks of a row group are then read from the disk together, while the first is decoded,
/// instead of one page fault at a time as the decoder reaches them. Pages not read for a while
/// leave the page cache (here, a proactive reclaim drops file pages idle for a few seconds):
/// with its files out of the cache, TPC-H Q3 on Parquet took 0.24 s before and 0.15 s with this
/// (0.09 s from the cache). Pages in the cache cost nothing here.
fn will_need(bytes: &[u8], range: std::ops::Range<u64>) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let end = (range.end as usize).min(bytes.len());
        let start = (range.start as usize).min(end);
        if start == end {
            return;
        }
        let first = bytes[start..].as_ptr() as usize;
        let aligned = first & !(PAGE - 1);
        // SAFETY: only advice: the kernel reads nothing from and writes nothing to these
        // addresses on our behalf (a mapped file's page starts inside its mapping; for a copy,
        // the page holding its first byte is mapped, and the advice changes no contents). A
        // page size other than 4 KiB makes the address unaligned, and the call fails harmlessly.
        unsafe { libc::madvise(aligned as *mut libc::c_void, end - start + (first - aligned), libc::MADV_WILLNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (bytes, range);
}

/// True when the statistics of row group `rg`'s `column` show that none of its values is a
/// key. Missing or unreadable statistics show nothing.
fn no_key_in_row_group(meta: &FileMetadata, rg: usize, column: &str, keys: &KeyFilter) -> bool {
    integer_statistics(meta, rg, column).is_some_and(|(min, max, _)| !keys.any_in(min, max))
}

impl SplitReader for ParquetSplit {
    fn next(&mut self) -> Result<Option<Parsed>> {
        let Some(split) = self.split.take() else {
            return Ok(None);
        };
        let keys = self.keys();
        let rows = format!("rows {}..{}", split.start, split.end);
        let reject = |kind: ErrorKind, message: String| {
            let r = Rejection::of_file(&split.path, kind, message);
            Ok(Some(Parsed { df: None, rejected: vec![r], dropped: ReaderDrops::default() }))
        };
        let footer = match footer(&split.path) {
            Ok(f) => f,
            Err((ErrorKind::Unreadable, m)) => return reject(ErrorKind::Unreadable, m),
            Err((kind, m)) => return reject(kind, format!("cannot read {rows}: {m}")),
        };
        let meta = &footer.meta;
        let columns = self.config.file_projection();
        // polars trusts page headers (a negative value count made it abort on a huge
        // allocation): check those of the columns read, first.
        // The file is mapped, as polars' reader does: the column chunks are the page cache's
        // pages, not copies in freshly allocated memory.
        let bytes = match mapped(&footer, &split.path) {
            Ok(b) => b,
            Err(e) => return reject(ErrorKind::Unreadable, format!("cannot open the file: {e}")),
        };
        let mut first_row = 0u64;
        let mut row_group = None;
        // The key columns whose chunk can be read as dictionary codes, with the dictionary's size.
        let mut codes = Vec::new();
        for (i, rg) in meta.row_groups.iter().enumerate() {
            let n = rg.num_rows() as u64;
            if first_row == split.start {
                row_group = (first_row + n == split.end).then_some(i);
                // The column chunks read: the projected columns'.
                let read: Vec<_> = rg
                    .parquet_columns()
                    .iter()
                    .filter(|c| {
                        let root = c.descriptor().path_in_schema.first().map(|s| s.as_str()).unwrap_or("");
                        columns.as_ref().is_none_or(|p| p.iter().any(|name| name == root))
                    })
                    .collect();
                for c in &read {
                    will_need(&bytes, c.byte_range());
                }
                let checked = read.iter().try_for_each(|c| {
                    let path = &c.descriptor().path_in_schema;
                    let root = path.first().map(|s| s.as_str()).unwrap_or("");
                    let flat = c.descriptor().descriptor.max_rep_level == 0;
                    let most = if flat { n as i64 } else { 1 << 40 };
                    let dictionary = check_column_chunk(&bytes, c.byte_range(), c.num_values(), most)
                        .map_err(|m| format!("row group {i} ({rows}), column '{}': {m}", path.join(".")))?;
                    if let Some(size) = dictionary.filter(|_| flat && path.len() == 1 && self.config.key_codes.iter().any(|k| k == root)) {
                        codes.push((root.to_string(), size));
                    }
                    Ok(())
                });
                if let Err(message) = checked {
                    return reject(ErrorKind::CorruptParquet, message);
                }
                break;
            }
            first_row += n;
        }
        if let Some(rg) = row_group {
            let spec = self.config.join_filter.as_ref();
            if let Some((column, keys)) = &keys
                && spec.is_some_and(|s| s.statistics)
                && catch_panic(|| no_key_in_row_group(meta, rg, column, keys)).unwrap_or(false)
            {
                return Ok(Some(Parsed { df: None, rejected: Vec::new(), dropped: ReaderDrops { row_groups: 1, ..Default::default() } }));
            }
            let fields = &footer.fields;
            let projection: Vec<String> = columns.unwrap_or_else(|| fields.iter_names().map(|n| n.to_string()).collect());
            let filter = self.config.reader_filter.as_ref();
            let join = keys.as_ref().map(|(c, k)| (*c, &**k));
            let read = catch_panic(|| read_row_group(&bytes, meta, rg, fields, &projection, filter, join, &codes));
            let (df, dropped) = match read {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return reject(ErrorKind::CorruptParquet, format!("cannot read {rows}: {}", clean(&e))),
                Err(p) => return reject(ErrorKind::CorruptParquet, format!("cannot read {rows}: {p}")),
            };
            return match super::cast_declared(&self.config, df) {
                Ok(df) => Ok(Some(Parsed { df: Some(df), rejected: Vec::new(), dropped })),
                Err(e) => Err(Error::execution(
                    "source",
                    &self.config.name,
                    format!("{}: cannot convert {rows} to the declared types: {}", split.path.display(), clean(&e)),
                )),
            };
        }
        // A split that is not one row group of the file as it is now (the file changed since
        // it was listed): polars' reader takes the rows.
        let reader = match open(&split.path) {
            Ok(r) => r,
            Err(m) => return reject(ErrorKind::Unreadable, m),
        };
        let (start, len) = (split.start as usize, (split.end - split.start) as usize);
        let df = match catch_panic(move || reader.with_slice(Some((start, len))).with_columns(columns).finish()) {
            Ok(Ok(df)) => df,
            Ok(Err(e)) => {
                return reject(ErrorKind::CorruptParquet, format!("cannot read {rows}: {}", clean(&e)));
            }
            Err(p) => {
                return reject(ErrorKind::CorruptParquet, format!("cannot read {rows}: {p}"));
            }
        };
        match super::cast_declared(&self.config, df) {
            Ok(df) => Ok(Some(Parsed { df: Some(df), rejected: Vec::new(), dropped: ReaderDrops::default() })),
            Err(e) => Err(Error::execution(
                "source",
                &self.config.name,
                format!("{}: cannot convert {rows} to the declared types: {}", split.path.display(), clean(&e)),
            )),
        }
    }
}

/// Reads row group `rg` of a file (mapped as `bytes`; its `projection` columns) on the calling
/// thread: polars' reader would decode the columns on its own thread pool, whose threads
/// compete with the subtasks for the cores and allocate memory that the subtasks then free
/// (measured: TPC-H Q3 on Parquet spent a third of its time clearing fresh pages, half of them
/// the pool's).
///
/// With a `filter`, or the keys of a `join` on a column, the predicate's columns and the key
/// column are decoded first, and the others only at the rows that pass and may have a match,
/// unless most rows do (then everything is decoded, and the filter operator and the join do
/// the work). The `codes` columns (with their dictionary's size) are read as dictionary codes
/// where they can be (see [`decode_codes`]). Returns the rows and what was dropped.
#[allow(clippy::too_many_arguments)]
fn read_row_group(
    bytes: &polars_buffer::Buffer<u8>,
    meta: &FileMetadata,
    rg: usize,
    fields: &ArrowSchema,
    projection: &[String],
    filter: Option<&ReaderFilter>,
    join: Option<(&str, &KeyFilter)>,
    codes: &[(String, usize)],
) -> PolarsResult<(DataFrame, ReaderDrops)> {
    use polars_parquet::read::Filter;
    let md = &meta.row_groups[rg];
    let rows = md.num_rows();
    let decode = |name: &str, filter: Option<Filter>| -> PolarsResult<Column> {
        let field = fields.get(name).ok_or_else(|| polars_err!(ColumnNotFound: "{name}"))?;
        let chunks = || -> PolarsResult<Vec<_>> {
            let chunks = md.columns_under_root_iter(name).ok_or_else(|| polars_err!(ColumnNotFound: "{name}"))?;
            Ok(chunks
                .map(|c| {
                    let range = c.byte_range();
                    (c, bytes.clone().sliced(range.start as usize..range.end as usize))
                })
                .collect())
        };
        if let Some((_, size)) = codes.iter().find(|(c, _)| c == name)
            && let Some(column) = decode_codes(chunks()?, field, *size, filter.clone())
        {
            return Ok(column);
        }
        let (arrays, _) = polars::io::parquet::read::_internal::to_deserializer(chunks()?, field.clone(), filter)?;
        Ok(Series::try_from((field, arrays))?.into_column())
    };
    let everything = || -> PolarsResult<(DataFrame, ReaderDrops)> {
        let columns = projection.iter().map(|c| decode(c, None)).collect::<PolarsResult<Vec<_>>>()?;
        Ok((DataFrame::new(rows, columns)?, ReaderDrops::default()))
    };
    if filter.is_none() && join.is_none() {
        return everything();
    }
    // The rows that passed so far, and the columns decoded for them.
    let mut sel = Selection { live: DataFrame::empty_with_height(rows), pass: None, mask: None, kept: rows };
    let conditions = filter.map_or(&[][..], |f| f.parts.as_slice());
    for part in conditions {
        for c in columns_of(part) {
            sel.decode(&c, fields, &decode)?;
        }
        // A condition that fails here (a decimal overflow) is left to the filter operator,
        // which reports it under its own name and `on_error`: every row goes on unfiltered
        // (dropping some for their join key could hide the failing row).
        let Ok(pass) = row_eval::eval_condition(part, &sel.live) else {
            return everything();
        };
        sel.narrow(pass, rows)?;
    }
    let passed = sel.kept;
    if let Some((key, keys)) = join {
        sel.decode(key, fields, &decode)?;
        let matched = keys.mask(&crate::exec::operators::hash_index::as_i64(&sel.live, key)?);
        sel.narrow(matched, rows)?;
    }
    let mut out = Vec::with_capacity(projection.len());
    for name in projection {
        sel.decode(name, fields, &decode)?;
        out.push(sel.live.column(name)?.clone());
    }
    if sel.mask.is_none() {
        // Most rows passed: all go on, and the filter operator and the join do the work.
        return Ok((DataFrame::new(rows, out)?, ReaderDrops::default()));
    }
    let drops = ReaderDrops { filtered: (rows - passed) as u64, unmatched: (passed - sel.kept) as u64, row_groups: 0 };
    Ok((DataFrame::new(sel.kept, out)?, drops))
}

/// A string column chunk whose data pages are all dictionary-encoded (with `size` values in its
/// dictionary), as the dictionary's codes: an `Enum` column whose categories are the
/// dictionary, one byte a row for up to 255 values. None when it cannot be read so (a
/// dictionary with repeated values, or too many), and it is then read as strings: the values
/// are the same either way.
fn decode_codes(
    chunks: Vec<(&polars_parquet::parquet::metadata::ColumnChunkMetadata, polars_buffer::Buffer<u8>)>,
    field: &polars_arrow::datatypes::Field,
    size: usize,
    filter: Option<polars_parquet::read::Filter>,
) -> Option<Column> {
    use polars_arrow::array::{Array, DictionaryArray, DictionaryKey, PrimitiveArray, Utf8ViewArray};
    use polars_arrow::datatypes::{ArrowDataType, DTYPE_CATEGORICAL_NEW, IntegerType};
    use polars_arrow::types::NativeType;
    /// The Enum column of one decoded chunk, keys of type `K` (`C` its polars type).
    fn column<K, C>(name: &PlSmallStr, array: &dyn Array) -> Option<Column>
    where
        K: DictionaryKey + NativeType + Into<usize>,
        C: PolarsCategoricalType,
        C::PolarsPhysical: PolarsDataType<Array = PrimitiveArray<K>>,
    {
        let array = array.as_any().downcast_ref::<DictionaryArray<K>>()?;
        let values = array.values().as_any().downcast_ref::<Utf8ViewArray>()?;
        if values.null_count() > 0 {
            return None;
        }
        // The decoder checks the codes against the dictionary; checked again here, as a code
        // out of range would read past the categories.
        if array.keys().values().iter().any(|&k| k.into() >= values.len()) {
            return None;
        }
        let categories = FrozenCategories::new(values.values_iter()).ok()?;
        if categories.physical() != C::physical() {
            return None;
        }
        let keys = ChunkedArray::<C::PolarsPhysical>::with_chunk(name.clone(), array.keys().clone());
        // SAFETY: every code is below the number of categories, of the categories' physical type.
        let codes = unsafe { CategoricalChunked::<C>::from_cats_and_dtype_unchecked(keys, DataType::from_frozen_categories(categories)) };
        Some(codes.into_series().into_column())
    }
    if field.dtype() != &ArrowDataType::Utf8View || chunks.len() != 1 {
        return None;
    }
    let key = match size {
        0..=255 => IntegerType::UInt8,
        256..=65535 => IntegerType::UInt16,
        _ => return None,
    };
    let metadata = [(PlSmallStr::from_static(DTYPE_CATEGORICAL_NEW), PlSmallStr::EMPTY)].into_iter().collect();
    let as_codes = polars_arrow::datatypes::Field::new(field.name.clone(), ArrowDataType::Dictionary(key, Box::new(ArrowDataType::Utf8View), false), true)
        .with_metadata(metadata);
    let (arrays, _) = polars::io::parquet::read::_internal::to_deserializer(chunks, as_codes, filter).ok()?;
    let [array] = arrays.as_slice() else { return None };
    match key {
        IntegerType::UInt8 => column::<u8, Categorical8Type>(&field.name, array.as_ref()),
        _ => column::<u16, Categorical16Type>(&field.name, array.as_ref()),
    }
}

/// The rows of a row group that passed the conditions evaluated so far. While most rows pass,
/// columns are decoded at every row; once at most half do, only at those rows (decoding at a
/// mask pays when it skips most rows), so a selective first condition spares the columns of
/// the next ones most of their decoding.
struct Selection {
    /// The decoded columns: at every row while `mask` is None, else at the rows of `mask`.
    live: DataFrame,
    /// While every row is decoded: the rows that passed (None: all).
    pass: Option<BooleanChunked>,
    /// Once at most half the rows passed: those rows.
    mask: Option<polars_arrow::bitmap::Bitmap>,
    /// How many rows passed.
    kept: usize,
}

impl Selection {
    /// Decodes column `name` (unless it is decoded already) at the rows `live` holds.
    fn decode(
        &mut self,
        name: &str,
        fields: &ArrowSchema,
        decode: &dyn Fn(&str, Option<polars_parquet::read::Filter>) -> PolarsResult<Column>,
    ) -> PolarsResult<()> {
        if self.live.column(name).is_ok() {
            return Ok(());
        }
        let field = fields.get(name).ok_or_else(|| polars_err!(ColumnNotFound: "{name}"))?;
        let column = match &self.mask {
            None => decode(name, None)?,
            Some(_) if self.kept == 0 => Column::new_empty(name.into(), &DataType::from_arrow_field(field)),
            // Nested columns are not decoded at a mask.
            Some(mask) if field.dtype().is_nested() => decode(name, None)?.filter(&bool_column(mask))?,
            Some(mask) => decode(name, Some(polars_parquet::read::Filter::Mask(mask.clone())))?,
        };
        self.live.with_column(column)?;
        Ok(())
    }

    /// Keeps the rows where `pass` (one value per row `live` holds) is true. On this thread:
    /// polars' `filter` hands each column to its own thread pool, whose threads then compete
    /// with the subtasks for the cores (and cost a switch each way).
    fn narrow(&mut self, pass: BooleanChunked, rows: usize) -> PolarsResult<()> {
        match &self.mask {
            None => {
                let pass = match self.pass.take() {
                    Some(before) => &before & &pass,
                    None => pass,
                };
                let bits = row_eval::true_rows(&pass);
                self.kept = bits.set_bits();
                if self.kept * 2 > rows {
                    self.pass = Some(pass);
                } else {
                    self.live = self.live.filter_seq(&pass)?;
                    self.mask = Some(bits);
                }
            }
            Some(mask) => {
                let bits = row_eval::true_rows(&pass);
                self.live = self.live.filter_seq(&pass)?;
                self.kept = bits.set_bits();
                self.mask = Some(deposit(mask, &bits));
            }
        }
        Ok(())
    }
}

/// The bitmap as long as `mask` that has `bits` (one for each set bit of `mask`, in order) at
/// the positions of `mask`'s set bits: which rows of the row group are left once the rows of
/// `mask` are narrowed by `bits`. A word of the mask at a time (a bit at a time was a tenth of
/// TPC-H Q6).
fn deposit(mask: &polars_arrow::bitmap::Bitmap, bits: &polars_arrow::bitmap::Bitmap) -> polars_arrow::bitmap::Bitmap {
    let low = |k: u32| if k == 64 { u64::MAX } else { (1u64 << k) - 1 };
    let shifted = |x: u64, k: u32| if k == 64 { 0 } else { x >> k };
    let source = bits.chunks::<u64>();
    let last = source.remainder();
    let mut source = source.chain(std::iter::once(last));
    // The next bits of `bits` not yet placed: `available` of them, lowest first.
    let (mut current, mut available) = (0u64, 0u32);
    let mut take = |k: u32| -> u64 {
        if k <= available {
            let v = current & low(k);
            current = shifted(current, k);
            available -= k;
            return v;
        }
        let next = source.next().unwrap_or(0);
        let need = k - available;
        let v = current | ((next & low(need)) << available);
        current = shifted(next, need);
        available = 64 - need;
        v
    };
    let words = mask.chunks::<u64>();
    let last = words.remainder();
    let mut out: Vec<u8> = Vec::with_capacity(mask.len().div_ceil(64) * 8);
    for w in words.chain(std::iter::once(last)) {
        out.extend_from_slice(&scatter(take(w.count_ones()), w).to_le_bytes());
    }
    out.truncate(mask.len().div_ceil(8));
    polars_arrow::bitmap::Bitmap::from_u8_vec(out, mask.len())
}

/// The low bits of `v` placed at the set bits of `m`, in order (x86's `pdep`).
#[inline]
fn scatter(v: u64, m: u64) -> u64 {
    #[cfg(all(target_arch = "x86_64", target_feature = "bmi2"))]
    {
        // SAFETY: the instruction is available (compiled for it).
        unsafe { std::arch::x86_64::_pdep_u64(v, m) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "bmi2")))]
    {
        let (mut v, mut m, mut r) = (v, m, 0u64);
        while m != 0 {
            let lowest = m & m.wrapping_neg();
            if v & 1 != 0 {
                r |= lowest;
            }
            v >>= 1;
            m ^= lowest;
        }
        r
    }
}

fn bool_column(mask: &polars_arrow::bitmap::Bitmap) -> BooleanChunked {
    BooleanChunked::from_chunk_iter("mask".into(), [polars_arrow::array::BooleanArray::from_data_default(mask.clone(), None)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, mut df: DataFrame) {
        ParquetWriter::new(File::create(path).unwrap()).finish(&mut df).unwrap();
    }

    #[test]
    fn a_footer_is_read_once_and_again_when_the_file_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.parquet");
        write(&path, df!("a" => [1i64, 2, 3]).unwrap());
        let first = footer(&path).unwrap();
        assert!(Arc::ptr_eq(&first, &footer(&path).unwrap()), "read twice");
        write(&path, df!("a" => [1i64, 2, 3], "b" => ["x", "y", "z"]).unwrap());
        let second = footer(&path).unwrap();
        assert_eq!(second.fields.len(), 2);
        // The file is mapped once per footer: the new footer maps the file as it is now.
        let bytes = mapped(&second, &path).unwrap();
        assert_eq!(bytes.as_ptr(), mapped(&second, &path).unwrap().as_ptr(), "mapped twice");
        assert_eq!(&bytes[..], &std::fs::read(&path).unwrap()[..]);
        assert_ne!(mapped(&first, &path).unwrap().as_ptr(), bytes.as_ptr());
        assert_eq!(footer_schema(&path).unwrap().len(), 2);
        std::fs::write(&path, b"not parquet").unwrap();
        assert_eq!(footer(&path).err().map(|e| e.0), Some(ErrorKind::CorruptParquet));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(footer(&path).err().map(|e| e.0), Some(ErrorKind::Unreadable));
    }

    #[test]
    fn read_ahead_advice_takes_any_range_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.parquet");
        write(&path, df!("a" => (0..5000i64).collect::<Vec<_>>()).unwrap());
        let on_disk = std::fs::read(&path).unwrap();
        let len = on_disk.len() as u64;
        let copy = on_disk.clone();
        for bytes in [&map(&path).unwrap()[..], &copy[..]] {
            // Empty, unaligned, past the end, reversed.
            for range in [0..0, 1..2, 3..len - 1, 0..len, len - 5..len + 9000, len + 1..len + 2, std::ops::Range { start: 9, end: 3 }] {
                will_need(bytes, range);
            }
            assert_eq!(bytes, &on_disk[..]);
        }
    }

    #[test]
    fn narrowing_a_mask_places_each_bit_at_its_row() {
        use polars_arrow::bitmap::Bitmap;
        let mut seed = 7u64;
        let mut random = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        for len in [0, 1, 63, 64, 65, 200, 1000, 4099] {
            for density in [0, 1, 3, 8] {
                let mask = Bitmap::from_iter((0..len).map(|_| random() % 8 < density));
                let bits = Bitmap::from_iter((0..mask.set_bits()).map(|_| random() % 2 == 0));
                let mut expected = vec![false; len];
                for (i, row) in mask.true_idx_iter().enumerate() {
                    expected[row] = bits.get_bit(i);
                }
                let got = deposit(&mask, &bits);
                assert_eq!(got.len(), len);
                assert_eq!(got.iter().collect::<Vec<_>>(), expected, "len {len}, density {density}");
                // A mask that starts inside a byte.
                let sliced = mask.clone().sliced(len.min(3), len - len.min(3));
                let bits = Bitmap::from_iter((0..sliced.set_bits()).map(|_| true));
                assert_eq!(deposit(&sliced, &bits).iter().collect::<Vec<_>>(), sliced.iter().collect::<Vec<_>>());
            }
        }
        assert_eq!(scatter(0b101, 0b1011_0100), 0b0010_0100);
    }

    #[test]
    fn dictionary_encoded_string_columns_are_read_as_codes_with_the_same_values() {
        // part-1's string columns are dictionary-encoded in each of its three row groups;
        // part-2's pages are plain (see the golden case's pipeline.toml).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/agg_string_keys_parquet_codes/input");
        for (file, coded) in [("part-1.parquet", true), ("part-2.parquet", false)] {
            let path = dir.join(file);
            let footer = footer(&path).unwrap();
            let bytes = map(&path).unwrap();
            let projection: Vec<String> = ["status", "kind", "amount"].map(String::from).to_vec();
            for rg in 0..footer.meta.row_groups.len() {
                let md = &footer.meta.row_groups[rg];
                let codes: Vec<(String, usize)> = ["status", "kind"]
                    .iter()
                    .filter_map(|name| {
                        let c = md.columns_under_root_iter(name).unwrap().next().unwrap();
                        let size = check_column_chunk(&bytes, c.byte_range(), c.num_values(), md.num_rows() as i64).unwrap();
                        size.map(|n| (name.to_string(), n))
                    })
                    .collect();
                assert_eq!(codes.len(), if coded { 2 } else { 0 }, "{file} row group {rg}");
                // Every row, and the rows of a filter that keeps a quarter (decoded at a mask).
                for filter in [None, Some(ReaderFilter { parts: vec![col("amount").gt(lit(60))], consumer: 0 })] {
                    let read = |codes| read_row_group(&bytes, &footer.meta, rg, &footer.fields, &projection, filter.as_ref(), None, codes).unwrap().0;
                    let (strings, read) = (read(&[]), read(&codes));
                    assert!(read.height() > 0 && read.height() == strings.height());
                    for name in ["status", "kind"] {
                        let column = read.column(name).unwrap();
                        assert_eq!(matches!(column.dtype(), DataType::Enum(..)), coded, "{file} {rg} {name}");
                        assert!(column.cast(&DataType::String).unwrap().equals_missing(strings.column(name).unwrap()), "{file} {rg} {name}");
                    }
                }
            }
        }
    }
}
