//! Rewrites of the logical graph before chaining, each leaving a note that `explain` shows:
//! two-phase aggregation (a partial aggregate before the hash exchange) and projection
//! pushdown (sources read only the columns something downstream uses).
use std::collections::BTreeSet;
use std::sync::Arc;

use polars::prelude::*;

use super::expr::{clean, columns_of};
use super::logical::{Edge, LogicalGraph, Node, NodeKind, Partitioning};
use crate::exec::operators::stateless::{Step, SEQ_COLUMN};
use crate::pipeline::Chain;

/// Applies every optimisation; the result is the graph that is chained and run.
pub fn optimize(graph: &LogicalGraph) -> PolarsResult<LogicalGraph> {
    let mut g = two_phase_aggregation(graph)?;
    push_projection(&mut g)?;
    Ok(g)
}

/// Splits every aggregate into a partial aggregate (same parallelism as its input, chained to
/// it, forward edge) and a final aggregate after the hash exchange.
fn two_phase_aggregation(graph: &LogicalGraph) -> PolarsResult<LogicalGraph> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut edges: Vec<Edge> = Vec::new();
    let mut new_id = vec![0; graph.nodes.len()];
    for (id, node) in graph.nodes.iter().enumerate() {
        let inputs: Vec<&Edge> = graph.inputs(id).collect();
        if let NodeKind::Aggregate(plan) = &node.kind {
            let input = inputs[0];
            let upstream = &nodes[new_id[input.from]];
            let empty = DataFrame::empty_with_schema(&upstream.schema).lazy();
            let partial_schema = plan.partial(empty).collect()?.schema().clone();
            let partial = Node {
                name: format!("{}/partial", node.name),
                label: "aggregate (partial)".into(),
                detail: node.detail.clone(),
                kind: NodeKind::PartialAggregate(plan.clone()),
                parallelism: upstream.parallelism,
                chain: Chain::Allowed,
                slot_sharing_group: upstream.slot_sharing_group.clone(),
                schema: partial_schema,
                notes: vec!["partial aggregation before the exchange".into()],
            };
            nodes.push(partial);
            let partial_id = nodes.len() - 1;
            edges.push(Edge { from: new_id[input.from], to: partial_id, partitioning: Partitioning::Forward });
            let mut fin = node.clone();
            fin.label = "aggregate (final)".into();
            fin.kind = NodeKind::FinalAggregate(plan.clone());
            nodes.push(fin);
            new_id[id] = nodes.len() - 1;
            edges.push(Edge { from: partial_id, to: new_id[id], partitioning: input.partitioning.clone() });
        } else {
            nodes.push(node.clone());
            new_id[id] = nodes.len() - 1;
            edges.extend(inputs.iter().map(|e| Edge { from: new_id[e.from], to: new_id[id], partitioning: e.partitioning.clone() }));
        }
    }
    Ok(LogicalGraph { nodes, edges, ..graph.clone() })
}

/// Columns a node needs from its input to produce `wanted` of its output.
fn needed_from_input(node: &Node, input_schema: &Schema, wanted: &BTreeSet<String>) -> BTreeSet<String> {
    let all = || input_schema.iter_names().map(|n| n.to_string()).collect();
    let mut need: BTreeSet<String> = match &node.kind {
        NodeKind::Stateless(Step::Filter(e)) => wanted.iter().cloned().chain(columns_of(e)).collect(),
        NodeKind::Stateless(Step::Select(es)) => es.iter().flat_map(columns_of).collect(),
        NodeKind::Stateless(Step::With(es)) => {
            let made: BTreeSet<String> = es.iter().filter_map(|e| e.clone().meta().output_name().ok().map(|n| n.to_string())).collect();
            wanted.iter().filter(|w| !made.contains(*w)).cloned().chain(es.iter().flat_map(columns_of)).collect()
        }
        // Rename, drop and cast name their columns strictly: those must be read even when
        // nothing downstream uses them.
        NodeKind::Stateless(Step::Rename(pairs)) => wanted
            .iter()
            .map(|w| pairs.iter().find(|(_, new)| new == w).map_or_else(|| w.clone(), |(old, _)| old.clone()))
            .chain(pairs.iter().map(|(old, _)| old.clone()))
            .collect(),
        NodeKind::Stateless(Step::Drop(cols)) => wanted.iter().chain(cols).cloned().collect(),
        NodeKind::Stateless(Step::Cast(pairs)) => wanted.iter().cloned().chain(pairs.iter().map(|(c, _)| c.clone())).collect(),
        NodeKind::PartialAggregate(plan) | NodeKind::Aggregate(plan) => {
            plan.keys.iter().cloned().chain(plan.aggs.iter().filter_map(|a| a.arg.as_ref()).flat_map(columns_of)).collect()
        }
        _ => all(),
    };
    if input_schema.contains(SEQ_COLUMN) {
        need.insert(SEQ_COLUMN.to_string());
    }
    need.retain(|c| input_schema.contains(c));
    need
}

/// Sets each source's projection to the columns used downstream, then recomputes schemas.
fn push_projection(g: &mut LogicalGraph) -> PolarsResult<()> {
    let mut wanted: Vec<BTreeSet<String>> = vec![BTreeSet::new(); g.nodes.len()];
    for id in (0..g.nodes.len()).rev() {
        let node = &g.nodes[id];
        if g.outputs(id).next().is_none() {
            wanted[id] = node.schema.iter_names().map(|n| n.to_string()).collect();
        }
        let inputs: Vec<usize> = g.inputs(id).map(|e| e.from).collect();
        for input in inputs {
            let need = needed_from_input(node, &g.nodes[input].schema, &wanted[id]);
            wanted[input].extend(need);
        }
    }
    for (id, node) in g.nodes.iter_mut().enumerate() {
        if let NodeKind::Source(config) = &mut node.kind {
            let total = config.schema.len();
            let mut cols: Vec<String> = config.schema.iter_names().map(|n| n.to_string()).filter(|c| wanted[id].contains(c)).collect();
            if cols.is_empty() {
                // Only rows are counted: read the first column to know how many there are.
                cols.extend(config.schema.iter_names().next().map(|n| n.to_string()));
            }
            if cols.len() < total {
                node.notes.push(format!("projected: {}/{total} columns ({})", cols.len(), cols.join(", ")));
                config.projection = Some(cols);
            }
        }
    }
    recompute_schemas(g)
}

/// Recomputes every node's output schema from its input (after the sources' projections).
fn recompute_schemas(g: &mut LogicalGraph) -> PolarsResult<()> {
    for id in 0..g.nodes.len() {
        let input = g.inputs(id).next().map(|e| g.nodes[e.from].schema.clone());
        let node = &g.nodes[id];
        let empty = || DataFrame::empty_with_schema(input.as_deref().expect("operators have an input")).lazy();
        let schema: Schema = match &node.kind {
            NodeKind::Source(config) => config.output_schema(),
            NodeKind::Stateless(step) => (**step.apply(empty()).collect()?.schema()).clone(),
            NodeKind::PartialAggregate(plan) => (**plan.partial(empty()).collect()?.schema()).clone(),
            NodeKind::FinalAggregate(plan) => (**plan.finalize(plan.merge(empty())).collect()?.schema()).clone(),
            NodeKind::Aggregate(plan) => (**plan.single_phase(empty()).collect()?.schema()).clone(),
            NodeKind::FileSink(_) | NodeKind::StdoutSink(_) => {
                let mut s = (*input.expect("sinks have an input")).clone();
                s.shift_remove(SEQ_COLUMN);
                s
            }
        };
        g.nodes[id].schema = Arc::new(schema);
    }
    Ok(())
}

/// A polars error during optimisation as a message naming the pipeline.
pub fn describe(e: &PolarsError) -> String {
    format!("planning failed: {}", clean(e))
}
