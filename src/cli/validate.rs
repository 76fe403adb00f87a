//! `rivulet validate`: check one or more pipeline files, reporting every problem.
use std::path::PathBuf;

use super::{PlanArgs, report};
use crate::error::Result;
use crate::plan::compile;

pub fn run(pipelines: &[PathBuf], plan: &PlanArgs) -> Result<i32> {
    // Planning waits for polars as `run`'s does.
    super::run::warm_up_polars();
    let mut code = 0;
    for path in pipelines {
        match compile(path, &plan.overrides, plan.parallelism(), plan.follow) {
            Ok(c) => {
                let g = &c.logical;
                let count = |f: fn(&crate::plan::logical::NodeKind) -> bool| g.nodes.iter().filter(|n| f(&n.kind)).count();
                let sources = count(|k| matches!(k, crate::plan::logical::NodeKind::Source(_)));
                let sinks = count(|k| matches!(k, crate::plan::logical::NodeKind::FileSink(_) | crate::plan::logical::NodeKind::StdoutSink(_)));
                println!("ok: {} ('{}': {sources} sources, {} operators, {sinks} sinks)", path.display(), g.name, g.nodes.len() - sources - sinks);
            }
            Err(e) => {
                report(&e);
                code = code.max(e.exit_code());
            }
        }
    }
    Ok(code)
}
