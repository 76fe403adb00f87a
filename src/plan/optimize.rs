//! Rewrites of the logical graph before chaining, each leaving a note that `explain` shows:
//! two-phase aggregation (a partial aggregate before the hash exchange) and projection
//! pushdown (sources read only the columns something downstream uses).
use std::collections::BTreeSet;
use std::sync::Arc;

use polars::prelude::*;

use super::expr::{clean, columns_of};
use super::logical::{output_schema, Edge, LogicalGraph, Node, NodeKind, Partitioning};
use crate::exec::operators::reduce::Reduce;
use crate::exec::operators::stateless::{Step, SEQ_COLUMN};
use crate::pipeline::Chain;

/// Applies every optimisation; the result is the graph that is chained and run.
pub fn optimize(graph: &LogicalGraph) -> PolarsResult<LogicalGraph> {
    let mut g = two_phase_aggregation(graph)?;
    push_projection(&mut g)?;
    Ok(g)
}

/// Splits every reduction (aggregate, sort, distinct) into a partial phase (same parallelism
/// as its input, chained to it, forward edge) and a final phase after the exchange.
fn two_phase_aggregation(graph: &LogicalGraph) -> PolarsResult<LogicalGraph> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut edges: Vec<Edge> = Vec::new();
    let mut new_id = vec![0; graph.nodes.len()];
    for (id, node) in graph.nodes.iter().enumerate() {
        let inputs: Vec<&Edge> = graph.inputs(id).collect();
        if let NodeKind::Reduce(reduce) = &node.kind {
            let input = inputs[0];
            let upstream = &nodes[new_id[input.from]];
            let kind = NodeKind::PartialReduce(reduce.clone());
            let partial_schema = Arc::new(output_schema(&kind, std::slice::from_ref(&upstream.schema))?);
            let partial = Node {
                name: format!("{}/partial", node.name),
                label: format!("{} (partial)", node.label),
                detail: node.detail.clone(),
                kind,
                parallelism: upstream.parallelism,
                chain: Chain::Allowed,
                slot_sharing_group: upstream.slot_sharing_group.clone(),
                schema: partial_schema,
                notes: vec![match reduce {
                    Reduce::Aggregate(_) => "partial aggregation before the exchange".to_string(),
                    _ => format!("partial {} before the exchange", node.label),
                }],
                ordered: false,
            };
            nodes.push(partial);
            let partial_id = nodes.len() - 1;
            edges.push(Edge { from: new_id[input.from], to: partial_id, partitioning: Partitioning::Forward });
            let mut fin = node.clone();
            fin.label = format!("{} (final)", node.label);
            fin.kind = NodeKind::FinalReduce(reduce.clone());
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
        NodeKind::Stateless(Step::Drop(cols)) | NodeKind::Stateless(Step::Explode(cols)) => wanted.iter().chain(cols).cloned().collect(),
        // The fields of an unnested struct are wanted by their own names: keep the struct.
        NodeKind::Stateless(Step::Unnest(cols)) => wanted.iter().chain(cols).cloned().collect(),
        NodeKind::Stateless(Step::Parse { column, .. }) => wanted.iter().chain([column]).cloned().collect(),
        NodeKind::Stateless(Step::Cast(pairs)) => wanted.iter().cloned().chain(pairs.iter().map(|(c, _)| c.clone())).collect(),
        NodeKind::PartialReduce(Reduce::Aggregate(plan)) | NodeKind::Reduce(Reduce::Aggregate(plan)) => {
            plan.keys.iter().cloned().chain(plan.aggs.iter().filter_map(|a| a.arg.as_ref()).flat_map(columns_of)).collect()
        }
        // A per-key top-n also needs its keys and sort columns, and passes the rest through.
        NodeKind::PartialReduce(Reduce::Sort(plan)) | NodeKind::Reduce(Reduce::Sort(plan)) => {
            wanted.iter().cloned().chain(plan.keys.iter().cloned()).chain(plan.by.iter().flat_map(columns_of)).collect()
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
        let inputs: Vec<SchemaRef> = g.inputs(id).map(|e| g.nodes[e.from].schema.clone()).collect();
        let schema = match &g.nodes[id].kind {
            NodeKind::Source(config) => config.output_schema(),
            kind => output_schema(kind, &inputs)?,
        };
        g.nodes[id].schema = Arc::new(schema);
    }
    Ok(())
}

/// A polars error during optimisation as a message naming the pipeline.
pub fn describe(e: &PolarsError) -> String {
    format!("planning failed: {}", clean(e))
}
