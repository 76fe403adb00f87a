//! `explain`: the four graphs rendered as text (stable, snapshot-tested), Graphviz DOT,
//! Mermaid, or JSON.
mod diagram;
mod json;
mod text;

use super::execution::ExecutionGraph;
use super::logical::LogicalGraph;

/// Which graph to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphKind {
    /// One node per operator, edges with their partitioning.
    Logical,
    /// Chained tasks, with the reason for every chain break.
    Job,
    /// Subtasks and channels.
    Execution,
    /// Subtasks placed in task slots.
    Physical,
    /// All four.
    All,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainFormat {
    /// Plain text.
    Text,
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// JSON.
    Json,
}

/// Renders the requested graph(s).
pub fn render(logical: &LogicalGraph, exec: &ExecutionGraph, graph: GraphKind, format: ExplainFormat) -> String {
    let kinds: Vec<GraphKind> = match graph {
        GraphKind::All => vec![GraphKind::Logical, GraphKind::Job, GraphKind::Execution, GraphKind::Physical],
        one => vec![one],
    };
    match format {
        ExplainFormat::Json => json::render(logical, exec, &kinds),
        ExplainFormat::Text => kinds.iter().map(|k| text::render(logical, exec, *k)).collect::<Vec<_>>().join("\n"),
        ExplainFormat::Dot => kinds.iter().map(|k| diagram::build(logical, exec, *k).to_dot()).collect::<Vec<_>>().join("\n"),
        // One Mermaid document holds one diagram: several are printed as fenced Markdown blocks.
        ExplainFormat::Mermaid if kinds.len() > 1 => {
            kinds.iter().map(|k| format!("```mermaid\n{}```\n", diagram::build(logical, exec, *k).to_mermaid())).collect::<Vec<_>>().join("\n")
        }
        ExplainFormat::Mermaid => diagram::build(logical, exec, kinds[0]).to_mermaid(),
    }
}

/// Name of subtask `index` of task `task` (`by_path[1]`): the task's first operator's name.
pub fn subtask_name(exec: &ExecutionGraph, task: usize, index: usize) -> String {
    let first = exec.job.vertices[task].nodes[0];
    format!("{}[{index}]", exec.job.stream.nodes[first].name)
}
