//! DOT and Mermaid rendering from one neutral diagram model, so both formats show the same.
use super::{GraphKind, subtask_name};
use crate::plan::execution::ExecutionGraph;
use crate::plan::logical::LogicalGraph;

struct Box_ {
    id: String,
    lines: Vec<String>,
}

struct Cluster {
    id: String,
    label: String,
    boxes: Vec<Box_>,
}

pub struct Diagram {
    title: String,
    clusters: Vec<Cluster>,
    edges: Vec<(String, String, String)>,
}

/// The diagram of one graph.
pub fn build(logical: &LogicalGraph, exec: &ExecutionGraph, kind: GraphKind) -> Diagram {
    let job = &exec.job;
    let stream = &job.stream;
    let mut d = Diagram { title: String::new(), clusters: Vec::new(), edges: Vec::new() };
    let single = |id: String, lines: Vec<String>| Cluster { id: String::new(), label: String::new(), boxes: vec![Box_ { id, lines }] };
    match kind {
        GraphKind::Logical => {
            d.title = format!("logical graph {}", logical.name);
            for (i, n) in logical.nodes.iter().enumerate() {
                d.clusters.push(single(format!("n{i}"), vec![n.name.clone(), format!("{} p={}", n.label, n.parallelism)]));
            }
            d.edges = logical.edges.iter().map(|e| (format!("n{}", e.from), format!("n{}", e.to), e.partitioning.to_string())).collect();
        }
        GraphKind::Job => {
            d.title = "job graph".into();
            for (t, v) in job.vertices.iter().enumerate() {
                let boxes =
                    v.nodes.iter().map(|&n| Box_ { id: format!("n{n}"), lines: vec![stream.nodes[n].name.clone(), stream.nodes[n].label.clone()] }).collect();
                d.clusters.push(Cluster { id: format!("task{t}"), label: format!("task {t} p={}", v.parallelism), boxes });
            }
            for v in &job.vertices {
                for w in v.nodes.windows(2) {
                    d.edges.push((format!("n{}", w[0]), format!("n{}", w[1]), "chained".into()));
                }
            }
            for e in &job.edges {
                d.edges.push((format!("n{}", e.from_node), format!("n{}", e.to_node), format!("{} ({})", e.partitioning, e.reason)));
            }
        }
        GraphKind::Execution => {
            d.title = "execution graph".into();
            for (t, v) in job.vertices.iter().enumerate() {
                let boxes = (0..v.parallelism).map(|i| Box_ { id: format!("t{t}s{i}"), lines: vec![subtask_name(exec, t, i)] }).collect();
                d.clusters.push(Cluster { id: format!("task{t}"), label: format!("task {t}: {}", v.name), boxes });
            }
            for c in &exec.channels {
                let e = &job.edges[c.edge];
                d.edges.push((format!("t{}s{}", e.from, c.from), format!("t{}s{}", e.to, c.to), e.partitioning.to_string()));
            }
        }
        GraphKind::Physical | GraphKind::All => {
            let slots = exec.placement();
            d.title = format!("physical placement: {} slots", slots.len());
            for slot in slots {
                let boxes = slot.subtasks.iter().map(|&(t, i)| Box_ { id: format!("t{t}s{i}"), lines: vec![subtask_name(exec, t, i)] }).collect();
                d.clusters.push(Cluster { id: format!("slot{}", slot.index), label: format!("slot {} ({})", slot.index, slot.group), boxes });
            }
            for c in &exec.channels {
                let e = &job.edges[c.edge];
                d.edges.push((format!("t{}s{}", e.from, c.from), format!("t{}s{}", e.to, c.to), String::new()));
            }
        }
    }
    d
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Mermaid entity codes for everything it would otherwise interpret (`#` first, since the
/// codes themselves start with it), so names are shown literally.
fn mermaid_esc(s: &str) -> String {
    s.replace('#', "#35;")
        .replace('"', "#quot;")
        .replace('[', "#91;")
        .replace(']', "#93;")
        .replace('|', "#124;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
        .replace('&', "#amp;")
        .replace(['\n', '\r'], " ")
}

impl Diagram {
    /// Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut s = format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n", esc(&self.title));
        for c in &self.clusters {
            let boxes: String =
                c.boxes.iter().map(|b| format!("    {} [label=\"{}\"];\n", b.id, b.lines.iter().map(|l| esc(l)).collect::<Vec<_>>().join("\\n"))).collect();
            if c.id.is_empty() {
                s.push_str(&boxes);
            } else {
                s.push_str(&format!("  subgraph cluster_{} {{\n    label=\"{}\";\n{boxes}  }}\n", c.id, esc(&c.label)));
            }
        }
        for (a, b, label) in &self.edges {
            s.push_str(&format!("  {a} -> {b} [label=\"{}\"];\n", esc(label)));
        }
        s.push_str("}\n");
        s
    }

    /// Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        // The title is a comment: one line, and no `%%{` directive a name could smuggle in.
        let title: String = self.title.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().replace("%%", "%");
        let mut s = format!("%% {title}\nflowchart LR\n");
        for c in &self.clusters {
            let boxes: String =
                c.boxes.iter().map(|b| format!("    {}[\"{}\"]\n", b.id, b.lines.iter().map(|l| mermaid_esc(l)).collect::<Vec<_>>().join("<br/>"))).collect();
            if c.id.is_empty() {
                s.push_str(&boxes);
            } else {
                s.push_str(&format!("  subgraph {}[\"{}\"]\n{boxes}  end\n", c.id, mermaid_esc(&c.label)));
            }
        }
        for (a, b, label) in &self.edges {
            if label.is_empty() {
                s.push_str(&format!("  {a} --> {b}\n"));
            } else {
                s.push_str(&format!("  {a} -->|\"{}\"| {b}\n", mermaid_esc(label)));
            }
        }
        s
    }
}
