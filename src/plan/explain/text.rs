//! Text rendering of the four graphs: stable line-oriented output for terminals and snapshots.
use std::fmt::Write;

use super::{GraphKind, subtask_name};
use crate::plan::execution::ExecutionGraph;
use crate::plan::logical::LogicalGraph;

fn schema_line(schema: &polars::prelude::Schema) -> String {
    schema.iter().map(|(n, t)| format!("{n}: {t}")).collect::<Vec<_>>().join(", ")
}

fn width(names: impl Iterator<Item = usize>) -> usize {
    names.max().unwrap_or(0)
}

pub fn render(logical: &LogicalGraph, exec: &ExecutionGraph, kind: GraphKind) -> String {
    let mut s = String::new();
    match kind {
        GraphKind::Logical => logical_text(&mut s, logical),
        GraphKind::Job => job_text(&mut s, exec),
        GraphKind::Execution => execution_text(&mut s, exec),
        GraphKind::Physical | GraphKind::All => physical_text(&mut s, exec),
    }
    s
}

fn logical_text(s: &mut String, g: &LogicalGraph) {
    let _ = writeln!(s, "== logical graph '{}': {} operators, {} edges ==", g.name, g.nodes.len(), g.edges.len());
    let w = width(g.nodes.iter().map(|n| n.name.len()));
    let lw = width(g.nodes.iter().map(|n| n.label.len()));
    for (i, n) in g.nodes.iter().enumerate() {
        let _ = writeln!(s, "[{i}] {:w$}  {:lw$}  p={}  {}", n.name, n.label, n.parallelism, n.detail);
        let _ = writeln!(s, "      schema: {}", schema_line(&n.schema));
    }
    let _ = writeln!(s, "edges:");
    for e in &g.edges {
        let _ = writeln!(s, "  {} -> {}  {}", g.nodes[e.from].name, g.nodes[e.to].name, e.partitioning);
    }
}

fn job_text(s: &mut String, exec: &ExecutionGraph) {
    let job = &exec.job;
    let g = &job.stream;
    let _ = writeln!(s, "== job graph: {} tasks, {} exchanges ==", job.vertices.len(), job.edges.len());
    for (t, v) in job.vertices.iter().enumerate() {
        let _ = writeln!(s, "task {t}  p={}  slot group '{}'  {}", v.parallelism, v.slot_sharing_group, v.name);
        for group in job.fused_groups(t) {
            if group.len() > 1 {
                let names: Vec<_> = group.iter().map(|&n| g.nodes[n].name.as_str()).collect();
                let _ = writeln!(s, "    fused into one polars pass: {}", names.join(" + "));
            }
        }
        for (filter, aggregate) in job.prefilters(t) {
            let (f, a) = (&g.nodes[filter].name, &g.nodes[aggregate].name);
            let _ = writeln!(s, "    filter '{f}' evaluated by '{a}' as it folds the rows (the rows are not copied into a filtered batch first)");
        }
        for &n in &v.nodes {
            let node = &g.nodes[n];
            let _ = writeln!(s, "    {}  {}  {}", node.name, node.label, node.detail);
            for note in &node.notes {
                let _ = writeln!(s, "      optimizer: {note}");
            }
            for e in job.edges.iter().filter(|e| e.to == t && e.to_node == n && job.feeds_mid_chain(e)) {
                let _ = writeln!(s, "      chained with its left input: its right input (task {}) is read to the end before the task reads its own", e.from);
            }
            for e in job.edges.iter().filter(|e| e.from == t && e.from_node == n && job.leaves_mid_chain(e)) {
                let _ = writeln!(s, "      its rows also go to task {} ({}) by exchange, from the middle of the chain", e.to, g.nodes[e.to_node].name);
            }
        }
    }
    let _ = writeln!(s, "exchanges:");
    for e in &job.edges {
        let _ = writeln!(
            s,
            "  task {} ({}{}) -> task {} ({}{})  {}  chain break: {}",
            e.from,
            g.nodes[e.from_node].name,
            if job.leaves_mid_chain(e) { ", mid-chain" } else { "" },
            e.to,
            g.nodes[e.to_node].name,
            if job.feeds_mid_chain(e) { ", in the chain" } else { "" },
            e.partitioning,
            e.reason
        );
    }
}

fn execution_text(s: &mut String, exec: &ExecutionGraph) {
    let job = &exec.job;
    let _ = writeln!(s, "== execution graph: {} subtasks, {} channels ==", exec.subtask_count(), exec.channels.len());
    for (t, v) in job.vertices.iter().enumerate() {
        let subs: Vec<String> = (0..v.parallelism).map(|i| subtask_name(exec, t, i)).collect();
        let _ = writeln!(s, "task {t} ({}): {}", v.name, subs.join(", "));
    }
    for (i, e) in job.edges.iter().enumerate() {
        let channels: Vec<_> = exec.edge_channels(i).collect();
        let pattern = if matches!(e.partitioning, crate::plan::logical::Partitioning::Forward) { "pointwise" } else { "all-to-all" };
        let _ = writeln!(s, "edge task {} -> task {}  {}  {pattern}, {} channels", e.from, e.to, e.partitioning, channels.len());
        let up = job.vertices[e.from].parallelism;
        for from in 0..up {
            let targets: Vec<String> = channels.iter().filter(|c| c.from == from).map(|c| subtask_name(exec, e.to, c.to)).collect();
            let _ = writeln!(s, "  {} -> {}", subtask_name(exec, e.from, from), targets.join(", "));
        }
    }
}

fn physical_text(s: &mut String, exec: &ExecutionGraph) {
    let slots = exec.placement();
    let _ = writeln!(s, "== physical placement: {} subtasks in {} task slots ==", exec.subtask_count(), slots.len());
    for slot in &slots {
        let subs: Vec<String> = slot.subtasks.iter().map(|&(t, i)| subtask_name(exec, t, i)).collect();
        let _ = writeln!(s, "slot {} (group '{}'): {}", slot.index, slot.group, subs.join(", "));
    }
    let _ = writeln!(s, "slots needed: {}", slots.len());
}
