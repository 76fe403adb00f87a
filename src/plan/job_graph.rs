//! The job graph: operators connected by forward edges with equal parallelism, the same slot
//! sharing group and chaining allowed are fused into one task (Flink's operator chaining);
//! every other edge is an exchange between tasks and states why the chain broke there.
use super::logical::{Edge, LogicalGraph, NodeKind, Partitioning};
use crate::pipeline::Chain;

/// A task: a chain of operators run by one thread per subtask, calling each other directly.
#[derive(Clone, Debug)]
pub struct JobVertex {
    /// Names of the chained operators joined by " -> ".
    pub name: String,
    /// Node ids of the stream graph, in chain order.
    pub nodes: Vec<usize>,
    /// Number of subtasks.
    pub parallelism: usize,
    /// Slot sharing group.
    pub slot_sharing_group: String,
}

/// An exchange between two tasks.
#[derive(Clone, Debug)]
pub struct JobEdge {
    /// Upstream task.
    pub from: usize,
    /// Downstream task.
    pub to: usize,
    /// Upstream node: the last of its chain, or one in its middle whose rows also go to this
    /// exchange ([`JobGraph::leaves_mid_chain`]) or that has a side output.
    pub from_node: usize,
    /// Downstream node: the first of its chain, or a join chained with its left input, for
    /// the join's right (build) side.
    pub to_node: usize,
    /// Which input of the downstream node this edge feeds (a join's left 0 or right 1, a
    /// union's n-th input): by position, as a node may take the same input twice.
    pub port: usize,
    /// Distribution of records.
    pub partitioning: Partitioning,
    /// Why the two operators are not chained.
    pub reason: String,
}

/// Tasks and exchanges, over the optimised stream graph they were built from.
#[derive(Clone, Debug)]
pub struct JobGraph {
    /// The optimised graph of single operators.
    pub stream: LogicalGraph,
    /// Tasks in topological order.
    pub vertices: Vec<JobVertex>,
    /// Exchanges.
    pub edges: Vec<JobEdge>,
}

/// Why the edge `from -> to` cannot be chained, or None when it can. `chained_to[from]`: the
/// consumer `from` is chained to already, if any. A chain is a list, so an operator with
/// several consumers is chained to the first it can be; the others get its rows over
/// exchanges from the middle of its chain (Flink chains an operator to all such consumers,
/// a tree; one chained output keeps the task a single pass over each batch).
fn chain_break(g: &LogicalGraph, from: usize, to: usize, partitioning: &Partitioning, chained_to: &[Option<usize>]) -> Option<String> {
    pair_break(g, from, to, partitioning)
        .or_else(|| {
            let ins = g.inputs(to).count();
            (ins > 1).then(|| format!("'{}' has {ins} inputs", g.nodes[to].name))
        })
        .or_else(|| chained_to[from].map(|c| format!("'{}' is chained to '{}' already", g.nodes[from].name, g.nodes[c].name)))
}

/// Why `from -> to` cannot be chained, leaving out how many inputs `to` has and how many
/// consumers `from` has.
fn pair_break(g: &LogicalGraph, from: usize, to: usize, partitioning: &Partitioning) -> Option<String> {
    let (u, v) = (&g.nodes[from], &g.nodes[to]);
    if let NodeKind::SideOutput(tag) = &v.kind {
        return Some(format!("side output '{tag}' of '{}'", u.name));
    }
    if u.parallelism != v.parallelism {
        return Some(format!("parallelism {} -> {}", u.parallelism, v.parallelism));
    }
    match partitioning {
        Partitioning::Forward => {}
        Partitioning::Hash(keys) => return Some(format!("hash exchange on [{}]", keys.join(", "))),
        other => return Some(format!("{other} exchange")),
    }
    if u.slot_sharing_group != v.slot_sharing_group {
        return Some(format!("slot sharing group '{}' -> '{}'", u.slot_sharing_group, v.slot_sharing_group));
    }
    if v.chain == Chain::New {
        return Some(format!("chain = new on '{}'", v.name));
    }
    if v.chain == Chain::Never {
        return Some(format!("chain = never on '{}'", v.name));
    }
    if u.chain == Chain::Never {
        return Some(format!("chain = never on '{}'", u.name));
    }
    None
}

/// True when `from` has several consumers (side outputs left out): it cannot take a join into
/// its chain.
fn fans_out(g: &LogicalGraph, from: usize) -> bool {
    g.outputs(from).filter(|e| !g.is_side_edge(e)).count() > 1
}

/// Chains the optimised stream graph into tasks.
pub fn build(stream: LogicalGraph) -> JobGraph {
    let mut vertex_of = vec![usize::MAX; stream.nodes.len()];
    let mut chained_to: Vec<Option<usize>> = vec![None; stream.nodes.len()];
    let mut vertices: Vec<JobVertex> = Vec::new();
    let mut edges = Vec::new();
    for id in 0..stream.nodes.len() {
        let inputs: Vec<_> = stream.inputs(id).cloned().collect();
        let chained = match inputs.as_slice() {
            [e] if chain_break(&stream, e.from, id, &e.partitioning, &chained_to).is_none() => Some(e.from),
            [left, _] if chains_with_left(&stream, id, left) => Some(left.from),
            _ => None,
        };
        let node = &stream.nodes[id];
        let v = match chained {
            Some(from) => {
                chained_to[from] = Some(id);
                let v = vertex_of[from];
                vertices[v].nodes.push(id);
                vertices[v].name = format!("{} -> {}", vertices[v].name, node.name);
                v
            }
            None => {
                vertices.push(JobVertex {
                    name: node.name.clone(),
                    nodes: vec![id],
                    parallelism: node.parallelism,
                    slot_sharing_group: node.slot_sharing_group.clone(),
                });
                vertices.len() - 1
            }
        };
        // Every input but the chained one (always the first) arrives by an exchange: a join
        // chained with its left input still gets its right side so.
        for (port, e) in inputs.iter().enumerate().skip(usize::from(chained.is_some())) {
            let reason = chain_break(&stream, e.from, id, &e.partitioning, &chained_to).unwrap_or_default();
            edges.push(JobEdge { from: vertex_of[e.from], to: v, from_node: e.from, to_node: id, port, partitioning: e.partitioning.clone(), reason });
        }
        vertex_of[id] = v;
    }
    let (vertices, edges) = in_topological_order(vertices, edges);
    JobGraph { stream, vertices, edges }
}

/// True when join `id` can run in the task of its left input (Flink chains the inputs of a
/// batch job's multiple-input operators the same way): the task reads the join's right side
/// to the end from its exchange, then its own input, whose batches reach the join without a
/// hand-off to another thread. Only for a join that reads its right side first anyway, which
/// the optimizer allows only where holding the left side back cannot stall anything the right
/// side needs (see `optimize::build_side_first`; never in tail mode).
fn chains_with_left(g: &LogicalGraph, id: usize, left: &Edge) -> bool {
    matches!(&g.nodes[id].kind, NodeKind::Join(plan) if plan.build_first)
        && pair_break(g, left.from, id, &left.partitioning).is_none()
        && !fans_out(g, left.from)
}

/// The tasks renumbered so that every exchange goes to a later task (a task that took in a
/// join gets that join's right side from tasks made after it), keeping the order otherwise.
fn in_topological_order(vertices: Vec<JobVertex>, mut edges: Vec<JobEdge>) -> (Vec<JobVertex>, Vec<JobEdge>) {
    let n = vertices.len();
    let mut waiting: Vec<usize> = (0..n).map(|v| edges.iter().filter(|e| e.to == v).count()).collect();
    let mut order = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    while let Some(v) = (0..n).find(|&v| !placed[v] && waiting[v] == 0) {
        placed[v] = true;
        order.push(v);
        edges.iter().filter(|e| e.from == v).for_each(|e| waiting[e.to] -= 1);
    }
    debug_assert_eq!(order.len(), n, "the job graph has a cycle");
    order.extend((0..n).filter(|&v| !placed[v]));
    let mut new_index = vec![0; n];
    for (i, &v) in order.iter().enumerate() {
        new_index[v] = i;
    }
    for e in &mut edges {
        (e.from, e.to) = (new_index[e.from], new_index[e.to]);
    }
    let mut vertices: Vec<Option<JobVertex>> = vertices.into_iter().map(Some).collect();
    (order.iter().map(|&v| vertices[v].take().expect("each task once")).collect(), edges)
}

impl JobGraph {
    /// True when exchange `e` feeds an operator inside its task's chain (the right side of a
    /// join chained with its left input), not the task's first operator.
    pub fn feeds_mid_chain(&self, e: &JobEdge) -> bool {
        self.vertices[e.to].nodes[0] != e.to_node
    }

    /// True when exchange `e` leaves its task from the middle of the chain: its operator is
    /// chained to another consumer, and its rows go to this one besides (see `chain_break`).
    pub fn leaves_mid_chain(&self, e: &JobEdge) -> bool {
        self.vertices[e.from].nodes.last() != Some(&e.from_node) && !matches!(self.stream.nodes[e.to_node].kind, NodeKind::SideOutput(_))
    }

    /// The nodes of task `vertex` whose rows also leave the task from the middle of its chain.
    pub fn forks(&self, vertex: usize) -> Vec<usize> {
        let mut nodes: Vec<usize> = self.edges.iter().filter(|e| e.from == vertex && self.leaves_mid_chain(e)).map(|e| e.from_node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Lone filters that the partial aggregate chained right after them runs itself (see
    /// [`crate::exec::operators::hash_aggregate::Prefilter`]), as (filter, aggregate) nodes: a
    /// filter group of one node with `on_error = "fail"` and a condition the row evaluator
    /// computes, before a partial aggregate kept in a hash table.
    pub fn prefilters(&self, vertex: usize) -> Vec<(usize, usize)> {
        use crate::exec::operators::reduce::Reduce;
        use crate::exec::operators::stateless::Step;
        let nodes = &self.stream.nodes;
        let groups = self.fused_groups(vertex);
        let forks = self.forks(vertex);
        groups
            .windows(2)
            .filter_map(|w| {
                let ([filter], [aggregate]) = (w[0].as_slice(), w[1].as_slice()) else { return None };
                // A filter whose rows also leave the chain has to produce them.
                if forks.contains(filter) {
                    return None;
                }
                let NodeKind::Stateless(Step::Filter(predicate)) = &nodes[*filter].kind else { return None };
                let input = self.stream.inputs(*filter).next().map(|e| &nodes[e.from].schema)?;
                let fits = nodes[*filter].on_error == crate::pipeline::OnError::Fail && crate::exec::operators::row_eval::supported(predicate, input);
                let hashed = matches!(nodes[*aggregate].kind, NodeKind::PartialReduce(Reduce::Aggregate(_)))
                    && nodes[*aggregate].notes.iter().any(|n| n.contains("state: hash table"));
                (fits && hashed).then_some((*filter, *aggregate))
            })
            .collect()
    }

    /// Groups of consecutive stateless nodes of a task that run as one polars pass per batch
    /// (at most one filter each, so every operator's row counts stay exact; a parse ends one,
    /// and so does a node whose rows also leave the chain).
    pub fn fused_groups(&self, vertex: usize) -> Vec<Vec<usize>> {
        let forks = self.forks(vertex);
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut filters = 0;
        let mut open = false;
        for &id in &self.vertices[vertex].nodes {
            let NodeKind::Stateless(step) = &self.stream.nodes[id].kind else {
                groups.push(vec![id]);
                open = false;
                continue;
            };
            let is_filter = matches!(step, crate::exec::operators::stateless::Step::Filter(_));
            if open && !(is_filter && filters == 1) {
                groups.last_mut().expect("open group").push(id);
            } else {
                groups.push(vec![id]);
                filters = 0;
                open = true;
            }
            filters += usize::from(is_filter);
            // A parse is checked for unmatched values right after its group runs, and an explode
            // changes the number of rows: each ends its group, so row counts stay exact.
            if matches!(step, crate::exec::operators::stateless::Step::Parse { .. } | crate::exec::operators::stateless::Step::Explode(_))
                || forks.contains(&id)
            {
                open = false;
            }
        }
        groups
    }
}
