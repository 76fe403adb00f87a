//! Parquet: one split per row group, read with polars' Parquet reader.
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;

use super::discover::Split;
use super::{SourceConfig, SplitReader};
use crate::error::{Error, Result};
use crate::plan::expr::clean;

fn open(path: &Path) -> std::result::Result<ParquetReader<File>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(ParquetReader::new(file))
}

/// The schema stored in a Parquet file's footer.
pub fn file_schema(path: &Path) -> std::result::Result<Schema, String> {
    let mut reader = open(path)?;
    let arrow = reader.schema().map_err(|e| format!("{}: not a readable Parquet file: {}", path.display(), clean(&e)))?;
    Ok(Schema::from_arrow_schema(&arrow))
}

/// One split per row group of every file; a file whose schema differs from the first is an error.
pub fn row_group_splits(config: &SourceConfig) -> Result<Vec<Split>> {
    let mut splits = Vec::new();
    let first = file_schema(&config.files[0]).map_err(|m| Error::execution("source", &config.name, m))?;
    for (file_index, path) in config.files.iter().enumerate() {
        let bad = |m: String| Error::Input { path: path.clone(), line: 0, column: 0, message: m };
        let mut reader = open(path).map_err(bad)?;
        let schema = file_schema(path).map_err(bad)?;
        if schema != first {
            let names = |s: &Schema| s.iter().map(|(n, t)| format!("{n}: {t}")).collect::<Vec<_>>().join(", ");
            return Err(bad(format!(
                "schema [{}] differs from [{}] of {} (source '{}')",
                names(&schema),
                names(&first),
                config.files[0].display(),
                config.name
            )));
        }
        let meta = reader.get_metadata().map_err(|e| bad(clean(&e)))?;
        let mut start = 0u64;
        for rg in &meta.row_groups {
            let rows = rg.num_rows() as u64;
            if rows > 0 {
                splits.push(Split { file_index, path: path.clone(), start, end: start + rows, ordinal: splits.len() });
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
    fn next(&mut self) -> Result<Option<DataFrame>> {
        let Some(split) = self.split.take() else { return Ok(None) };
        let bad = |m: String| Error::Input { path: split.path.clone(), line: 0, column: 0, message: m };
        let reader = open(&split.path).map_err(bad)?;
        let columns = self.config.file_projection();
        let df = reader
            .with_slice(Some((split.start as usize, (split.end - split.start) as usize)))
            .with_columns(columns)
            .finish()
            .map_err(|e| bad(format!("cannot read rows {}..{}: {}", split.start, split.end, clean(&e))))?;
        super::cast_declared(&self.config, df).map(Some).map_err(|e| bad(format!("cannot convert to the declared types: {}", clean(&e))))
    }
}
