//! JSON rendering of the four graphs, for tools.
use serde_json::{Value, json};

use super::{GraphKind, subtask_name};
use crate::plan::execution::ExecutionGraph;
use crate::plan::logical::LogicalGraph;

fn schema(s: &polars::prelude::Schema) -> Value {
    s.iter().map(|(n, t)| json!({"name": n.as_str(), "type": t.to_string()})).collect()
}

pub fn render(logical: &LogicalGraph, exec: &ExecutionGraph, kinds: &[GraphKind]) -> String {
    let job = &exec.job;
    let mut out = serde_json::Map::new();
    out.insert("pipeline".into(), json!(logical.name));
    for kind in kinds {
        let (key, value) = match kind {
            GraphKind::Logical => (
                "logical",
                json!({
                    "nodes": logical.nodes.iter().enumerate().map(|(i, n)| json!({
                        "id": i, "name": n.name, "operation": n.label, "detail": n.detail,
                        "parallelism": n.parallelism, "slot_sharing_group": n.slot_sharing_group, "schema": schema(&n.schema),
                    })).collect::<Vec<_>>(),
                    "edges": logical.edges.iter().map(|e| json!({"from": e.from, "to": e.to, "partitioning": e.partitioning.to_string()})).collect::<Vec<_>>(),
                }),
            ),
            GraphKind::Job => (
                "job",
                json!({
                    "tasks": job.vertices.iter().enumerate().map(|(t, v)| json!({
                        "id": t, "name": v.name, "parallelism": v.parallelism, "slot_sharing_group": v.slot_sharing_group,
                        "operators": v.nodes.iter().map(|&n| {
                            let node = &job.stream.nodes[n];
                            json!({"name": node.name, "operation": node.label, "detail": node.detail, "optimizer": node.notes})
                        }).collect::<Vec<_>>(),
                        "fused": job.fused_groups(t).into_iter().filter(|g| g.len() > 1)
                            .map(|g| g.iter().map(|&n| job.stream.nodes[n].name.clone()).collect::<Vec<_>>()).collect::<Vec<_>>(),
                        "filters_in_aggregates": job.prefilters(t).into_iter()
                            .map(|(f, a)| json!({"filter": job.stream.nodes[f].name, "aggregate": job.stream.nodes[a].name})).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "exchanges": job.edges.iter().map(|e| json!({
                        "from": e.from, "to": e.to, "from_operator": job.stream.nodes[e.from_node].name, "to_operator": job.stream.nodes[e.to_node].name, "partitioning": e.partitioning.to_string(), "chain_break": e.reason,
                    })).collect::<Vec<_>>(),
                }),
            ),
            GraphKind::Execution => (
                "execution",
                json!({
                    "subtasks": job.vertices.iter().enumerate().flat_map(|(t, v)| (0..v.parallelism).map(move |i| (t, i)))
                        .map(|(t, i)| json!({"task": t, "index": i, "name": subtask_name(exec, t, i)})).collect::<Vec<_>>(),
                    "channels": exec.channels.iter().map(|c| {
                        let e = &job.edges[c.edge];
                        json!({"from": subtask_name(exec, e.from, c.from), "to": subtask_name(exec, e.to, c.to), "partitioning": e.partitioning.to_string()})
                    }).collect::<Vec<_>>(),
                }),
            ),
            GraphKind::Physical | GraphKind::All => {
                let slots = exec.placement();
                (
                    "physical",
                    json!({
                        "slots_needed": slots.len(),
                        "slots": slots.iter().map(|s| json!({
                            "index": s.index, "group": s.group,
                            "subtasks": s.subtasks.iter().map(|&(t, i)| subtask_name(exec, t, i)).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    }),
                )
            }
        };
        out.insert(key.into(), value);
    }
    serde_json::to_string_pretty(&Value::Object(out)).unwrap_or_default()
}
