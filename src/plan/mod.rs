//! From the spec to something that runs: the logical graph, the job graph (chains), the
//! execution graph (subtasks and channels), the physical placement (slots), and `explain`.
pub mod decimal;
pub mod execution;
pub mod explain;
pub mod expr;
pub mod job_graph;
pub mod logical;
mod operators;
pub mod optimize;

use std::path::Path;

use crate::error::{Error, Result};
use crate::pipeline::{Override, load_text};

/// A pipeline file turned into its graphs, ready to explain or run.
pub struct Compiled {
    /// One node per source, operator and sink of the file.
    pub logical: logical::LogicalGraph,
    /// Optimised, chained and expanded into subtasks.
    pub execution: execution::ExecutionGraph,
}

/// Reads, checks and plans a pipeline file. Every problem in the file (structure, expressions,
/// columns, types) is reported together as [`Error::Spec`]. `parallelism` is the command
/// line's `-p`, which overrides the file's default; without either, the number of cores.
/// `follow` plans tail mode: file sources follow their files until stopped.
pub fn compile(path: &Path, overrides: &[Override], parallelism: Option<usize>, follow: bool) -> Result<Compiled> {
    let _inline = InlinePolars::new();
    // A pipeline file that cannot be read is a wrong command line (exit 2), not a data error.
    let text = std::fs::read_to_string(path).map_err(|e| Error::Usage(format!("cannot read pipeline file {}: {e}", path.display())))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    let (mut spec, mut diags) = load_text(&text, yaml, base_dir, overrides)?;
    spec.follow = follow;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default = parallelism.or(spec.parallelism).unwrap_or(cores);
    let graph = logical::build(&spec, default, &mut diags);
    let fail = |mut diags: crate::pipeline::Diagnostics| {
        diags.sort();
        diags.path = path.to_path_buf();
        diags.text = text.clone();
        Error::Spec(diags)
    };
    let logical = match graph {
        Some(g) if diags.is_empty() => g,
        _ => return Err(fail(diags)),
    };
    let stream = optimize::optimize(&logical).map_err(|e| Error::execution("pipeline", &logical.name, optimize::describe(&e)))?;
    let job = job_graph::build(stream);
    Ok(Compiled { logical, execution: execution::ExecutionGraph::build(job) })
}

/// Runs, on empty frames, the kinds of work planning asks of polars (a filter, arithmetic, a
/// join, a group-by), so that polars' code is loaded before planning needs it.
pub fn warm_up() -> polars::prelude::PolarsResult<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let _inline = InlinePolars::new();
    let left = DataFrame::empty_with_schema(&Schema::from_iter([Field::new("k".into(), DataType::Int64), Field::new("d".into(), DataType::Date)]));
    let right = DataFrame::empty_with_schema(&Schema::from_iter([Field::new("k".into(), DataType::Int64), Field::new("v".into(), DataType::Float64)]));
    left.lazy()
        .filter(col("d").lt(lit(10_957).cast(DataType::Date)))
        .join(right.lazy(), [col("k")], [col("k")], JoinArgs::new(JoinType::Inner))
        .with_column((col("v") * (lit(1.0) - col("v"))).alias("x"))
        .group_by([col("k")])
        .agg([col("x").sum()])
        .with_optimizations(expr::TYPE_CHECKS_ONLY)
        .collect()
}

/// While alive, polars runs what the current thread asks of it on this thread instead of its
/// pool. Planning runs each operator on empty frames; handing those tiny jobs to the pool's
/// threads and waiting for them cost more than the jobs.
struct InlinePolars(bool);

impl InlinePolars {
    fn new() -> Self {
        InlinePolars(polars_async::executor::ALLOW_RAYON_THREADS.replace(false))
    }
}

impl Drop for InlinePolars {
    fn drop(&mut self) {
        polars_async::executor::ALLOW_RAYON_THREADS.set(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warm_up_query_runs() {
        // A query polars refused would load little of what planning needs.
        let out = warm_up().unwrap();
        assert_eq!(out.get_column_names(), ["k", "x"]);
        assert_eq!(out.height(), 0);
    }

    #[test]
    fn polars_runs_inline_only_while_planning() {
        use polars_async::executor::ALLOW_RAYON_THREADS;
        assert!(ALLOW_RAYON_THREADS.get());
        {
            let _inline = InlinePolars::new();
            assert!(!ALLOW_RAYON_THREADS.get());
            // Work polars does meanwhile still gets done, on this thread.
            let df = polars::df!("k" => [1, 2, 1]).unwrap();
            assert_eq!(polars::prelude::IntoLazy::lazy(df).group_by([polars::prelude::col("k")]).agg([]).collect().unwrap().height(), 2);
        }
        assert!(ALLOW_RAYON_THREADS.get());
    }
}
