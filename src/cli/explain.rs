//! `rivulet explain`: print the four graphs.
use std::path::Path;

use super::PlanArgs;
use crate::error::Result;
use crate::plan::compile;
use crate::plan::explain::{ExplainFormat, GraphKind, render};

pub fn run(pipeline: &Path, graph: GraphKind, format: ExplainFormat, plan: &PlanArgs) -> Result<i32> {
    // Planning waits for polars as `run`'s does (a third of a Parquet pipeline's explain).
    super::run::warm_up_polars();
    let c = compile(pipeline, &plan.overrides, plan.parallelism(), plan.follow)?;
    let out = render(&c.logical, &c.execution, graph, format);
    println!("{}", out.trim_end());
    Ok(0)
}
