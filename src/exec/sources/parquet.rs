//! Parquet: one split per row group, read with polars' Parquet reader. A file that cannot be
//! decoded is a `corrupt_parquet` rejection; polars panics on some corruptions, and those are
//! caught and reported the same way.
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;

use super::discover::Split;
use super::{Parsed, SourceConfig, SplitReader};
use crate::error::{Error, Result};
use crate::exec::dead_letter::{ErrorKind, Rejection};
use crate::exec::guard::catch_panic;
use crate::pipeline::OnError;
use crate::plan::expr::clean;

fn open(path: &Path) -> std::result::Result<ParquetReader<File>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open the file: {e}"))?;
    Ok(ParquetReader::new(file))
}

/// The schema stored in a Parquet file's footer, or why it cannot be read.
fn footer_schema(path: &Path) -> std::result::Result<Schema, (ErrorKind, String)> {
    let mut reader = open(path).map_err(|m| (ErrorKind::Unreadable, m))?;
    let arrow = catch_panic(|| reader.schema())
        .map_err(|p| (ErrorKind::CorruptParquet, format!("not a readable Parquet file: {p}")))?
        .map_err(|e| (ErrorKind::CorruptParquet, format!("not a readable Parquet file: {}", clean(&e))))?;
    Ok(Schema::from_arrow_schema(&arrow))
}

/// The schema stored in a Parquet file's footer.
pub fn file_schema(path: &Path) -> std::result::Result<Schema, String> {
    footer_schema(path).map_err(|(_, m)| format!("{}: {m}", path.display()))
}

/// One split per row group of every file. A file that cannot be read, or whose schema differs
/// from the source's, is an error, or (when the source skips bad input) one split that carries
/// the rejection.
pub fn row_group_splits(config: &SourceConfig) -> Result<Vec<Split>> {
    let mut splits = Vec::new();
    for (file_index, path) in config.files.iter().enumerate() {
        let reject = |splits: &mut Vec<Split>, kind: ErrorKind, message: String| -> Result<()> {
            let problem = Rejection { file: Some(path.display().to_string()), line: None, offset: None, column: None, kind, message, raw: String::new() };
            if config.on_error == OnError::Fail {
                return Err(problem.into_error(("source", &config.name)));
            }
            splits.push(Split { file_index, path: path.clone(), start: 0, end: 0, ordinal: splits.len(), problem: Some(Box::new(problem)) });
            Ok(())
        };
        let schema = match footer_schema(path) {
            Ok(s) => s,
            Err((kind, message)) => {
                reject(&mut splits, kind, message)?;
                continue;
            }
        };
        if schema != *config.raw_schema {
            let names = |s: &Schema| s.iter().map(|(n, t)| format!("{n}: {t}")).collect::<Vec<_>>().join(", ");
            let message = format!("schema [{}] differs from [{}] of source '{}'", names(&schema), names(&config.raw_schema), config.name);
            reject(&mut splits, ErrorKind::SchemaMismatch, message)?;
            continue;
        }
        let meta = open(path)
            .and_then(|mut r| catch_panic(move || r.get_metadata().cloned()).map_err(|p| format!("not a readable Parquet file: {p}"))?.map_err(|e| clean(&e)));
        let meta = match meta {
            Ok(m) => m,
            Err(message) => {
                reject(&mut splits, ErrorKind::CorruptParquet, message)?;
                continue;
            }
        };
        let mut start = 0u64;
        for rg in &meta.row_groups {
            let rows = rg.num_rows() as u64;
            if rows > 0 {
                splits.push(Split { file_index, path: path.clone(), start, end: start + rows, ordinal: splits.len(), problem: None });
            }
            start += rows;
        }
    }
    Ok(splits)
}

/// Reads one row group.
pub struct ParquetSplit {
    config: Arc<SourceConfig>,
    split: Option<Split>,
}

impl ParquetSplit {
    /// A reader of `split`.
    pub fn new(config: Arc<SourceConfig>, split: Split) -> Self {
        ParquetSplit { config, split: Some(split) }
    }
}

impl SplitReader for ParquetSplit {
    fn next(&mut self) -> Result<Option<Parsed>> {
        let Some(split) = self.split.take() else {
            return Ok(None);
        };
        let rows = format!("rows {}..{}", split.start, split.end);
        let reject = |kind: ErrorKind, message: String| {
            let r = Rejection { file: Some(split.path.display().to_string()), line: None, offset: None, column: None, kind, message, raw: String::new() };
            Ok(Some(Parsed { df: None, rejected: vec![r] }))
        };
        let reader = match open(&split.path) {
            Ok(r) => r,
            Err(m) => return reject(ErrorKind::Unreadable, m),
        };
        let columns = self.config.file_projection();
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
            Ok(df) => Ok(Some(Parsed { df: Some(df), rejected: Vec::new() })),
            Err(e) => Err(Error::execution(
                "source",
                &self.config.name,
                format!("{}: cannot convert {rows} to the declared types: {}", split.path.display(), clean(&e)),
            )),
        }
    }
}
