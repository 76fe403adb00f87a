//! The command line: clap types stop here; each subcommand lives in its own file.
mod explain;
mod progress;
mod run;
mod status;
mod summary;
mod validate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::Error;
use crate::pipeline::Override;
use crate::plan::explain::{ExplainFormat, GraphKind};

/// Flink-style dataflow pipelines from the terminal.
#[derive(Parser, Debug)]
#[command(name = "rivulet", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check pipeline files; report every problem with file:line:column.
    Validate {
        /// Pipeline files (.toml, .yaml).
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Show the logical, job, execution and physical graphs of a pipeline.
    Explain {
        /// Pipeline file.
        pipeline: PathBuf,
        /// Which graph.
        #[arg(long, value_enum, default_value = "all")]
        graph: GraphKind,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: ExplainFormat,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Run a pipeline until every source is finished.
    Run {
        /// Pipeline file.
        pipeline: PathBuf,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run a pipeline in tail mode (`run --follow`): file sources follow their files until
    /// Ctrl-C, which stops the sources and lets every batch in flight reach the sinks.
    Tail {
        /// Pipeline file.
        pipeline: PathBuf,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        run: RunArgs,
    },
}

/// Options of a run.
#[derive(Args, Debug, Clone, Copy)]
struct RunArgs {
    /// No progress bars and no summary on stderr.
    #[arg(short, long)]
    quiet: bool,
    /// Print the run summary as JSON on stdout instead of a table on stderr.
    #[arg(long)]
    json: bool,
    /// Threads of polars' own pool (default: number of cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Tail mode: at Ctrl-C, fire every open window before stopping (without it, open windows
    /// are discarded and counted in the summary).
    #[arg(long)]
    drain: bool,
}

/// Options that change the plan.
#[derive(Args, Debug, Clone)]
struct PlanArgs {
    /// Default parallelism (overrides the file's `parallelism`; operators' own settings win).
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    parallelism: Option<u32>,
    /// Override a key of the pipeline file: KEY=VALUE, source.NAME.KEY=VALUE, op.NAME.KEY=VALUE, sink.NAME.KEY=VALUE.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<Override>,
    /// Tail mode: file sources follow their files (new lines, new files, rotation) until Ctrl-C.
    #[arg(long)]
    follow: bool,
}

impl PlanArgs {
    fn parallelism(&self) -> Option<usize> {
        self.parallelism.map(|p| p as usize)
    }
}

/// Runs the command line and returns the process exit code: 0 success, 1 the run failed on
/// data or I/O, 2 the pipeline file or the command line is wrong.
pub fn main() -> i32 {
    polars::error::set_warning_function(polars_warning);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let result = match cli.command {
        Command::Validate { pipelines, plan } => validate::run(&pipelines, &plan),
        Command::Explain { pipeline, graph, format, plan } => explain::run(&pipeline, graph, format, &plan),
        Command::Run { pipeline, plan, run } => run::run(&pipeline, &plan, &run),
        Command::Tail { pipeline, mut plan, run } => {
            plan.follow = true;
            run::run(&pipeline, &plan, &run)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            e.exit_code()
        }
    }
}

/// polars' warnings, minus deprecations: SQL's `DATE '...'` and `CAST(x AS DATE)` compile to
/// string-to-date casts that polars marks deprecated, but they mean what the user wrote, and
/// the warning would repeat for every batch.
fn polars_warning(message: &str, kind: polars::error::PolarsWarning) {
    if !matches!(kind, polars::error::PolarsWarning::Deprecation) {
        eprintln!("warning (polars): {message}");
    }
}

fn report(e: &Error) {
    match e {
        Error::Spec(_) => eprintln!("{e}"),
        Error::Input { kind: Some(kind), .. } => eprintln!("error[{kind}]: {e}"),
        _ => eprintln!("error: {e}"),
    }
}
