//! Rewrites of the logical graph before chaining, each leaving a note that `explain` shows:
//! two-phase aggregation (a partial aggregate before the hash exchange) and projection
//! pushdown (sources read only the columns something downstream uses).
use std::collections::BTreeSet;
use std::sync::Arc;

use polars::prelude::*;

use super::expr::{clean, columns_of};
use super::logical::{Edge, LogicalGraph, Node, NodeKind, Partitioning, output_schema};
use crate::exec::operators::hash_aggregate::AggregateTable;
use crate::exec::operators::reduce::Reduce;
use crate::exec::operators::row_eval;
use crate::exec::operators::stateless::{SEQ_COLUMN, Step};
use crate::exec::operators::window::LATE;
use crate::pipeline::Chain;

/// Applies every optimisation; the result is the graph that is chained and run.
pub fn optimize(graph: &LogicalGraph) -> PolarsResult<LogicalGraph> {
    let mut g = two_phase_aggregation(graph)?;
    prune_partitions(&mut g)?;
    reread_for_joins(&mut g);
    clustered_aggregation(&mut g);
    push_row_group_filter(&mut g);
    push_projection(&mut g)?;
    build_side_first(&mut g);
    join_filters(&mut g);
    key_codes(&mut g);
    note_followed_build_sides(&mut g);
    Ok(g)
}

/// Aggregates without an exchange where the statistics of a Parquet source show that each
/// row group holds whole groups: a key column whose row groups' min/max ranges do not meet,
/// without nulls (see [`crate::exec::sources::disjoint_row_groups`]). A row group is
/// read by one subtask, so every row of a group reaches the same subtask without being sent
/// anywhere: the final phase follows the partial one on a forward edge, and both empty their
/// table at the end of each row group (a split), the final one into final values. TPC-H Q18
/// sums the quantity of 1.5 M orders over lineitem, which is sorted by order with row groups
/// cut between orders: no state row is hashed twice, nor sent, and the table holds one row
/// group's orders. The aggregate's input must be a chain of filters from a source that feeds
/// nothing else, and the final phase must run with the partial phase's parallelism.
fn clustered_aggregation(g: &mut LogicalGraph) {
    for partial in 0..g.nodes.len() {
        let NodeKind::PartialReduce(Reduce::Aggregate(plan)) = &g.nodes[partial].kind else { continue };
        let outputs: Vec<usize> = g.edges.iter().enumerate().filter(|(_, e)| e.from == partial).map(|(i, _)| i).collect();
        let [edge] = outputs[..] else { continue };
        let fin = g.edges[edge].to;
        if !matches!(g.edges[edge].partitioning, Partitioning::Hash(_)) || g.nodes[fin].parallelism != g.nodes[partial].parallelism {
            continue;
        }
        let Some((source, _)) = bounded_parquet_input(g, partial) else { continue };
        let NodeKind::Source(config) = &g.nodes[source].kind else { continue };
        let stored = |k: &&String| config.raw_schema.contains(k) && !config.declared.contains(*k) && !config.hive.iter().any(|(h, _)| h == *k);
        let Some((key, row_groups)) =
            plan.keys.iter().filter(stored).find_map(|k| crate::exec::sources::disjoint_row_groups(&config.files, k).map(|n| (k.clone(), n)))
        else {
            continue;
        };
        let source_name = g.nodes[source].name.clone();
        g.edges[edge].partitioning = Partitioning::Forward;
        g.nodes[fin].notes.push(format!(
            "groups complete per row group: the {key} statistics of the {row_groups} row groups of '{source_name}' do not overlap, so rows are aggregated where they are read, without an exchange, and each row group's groups are emitted when it ends"
        ));
    }
}

/// Lets the Parquet reader hand a hash aggregate its string keys as dictionary codes (see
/// [`crate::exec::sources::SourceConfig::key_codes`]) where the aggregate's input is a chain of
/// filters from a source that feeds nothing else, and the key is a stored column (not declared,
/// nor a partition column) that nothing on the way reads: the filters, the reader's own filter
/// and the aggregates' arguments see strings only.
fn key_codes(g: &mut LogicalGraph) {
    use crate::exec::operators::reduce::Reduce;
    for aggregate in 0..g.nodes.len() {
        let NodeKind::PartialReduce(Reduce::Aggregate(plan)) = &g.nodes[aggregate].kind else { continue };
        if !g.nodes[aggregate].notes.iter().any(|n| n.contains("state: hash table")) {
            continue;
        }
        let Some((source, filters)) = bounded_parquet_input(g, aggregate) else { continue };
        let NodeKind::Source(config) = &g.nodes[source].kind else { continue };
        let mut read: BTreeSet<String> = plan.aggs.iter().filter_map(|a| a.arg.as_ref()).flat_map(columns_of).collect();
        for f in filters {
            if let NodeKind::Stateless(Step::Filter(predicate)) = &g.nodes[f].kind {
                read.extend(columns_of(predicate));
            }
        }
        let stored_string = |k: &String| {
            config.raw_schema.get(k) == Some(&DataType::String)
                && config.schema.get(k) == Some(&DataType::String)
                && !config.declared.contains(k)
                && !config.hive.iter().any(|(h, _)| h == k)
        };
        let codes: Vec<String> = plan.keys.iter().filter(|k| stored_string(k) && !read.contains(*k)).cloned().collect();
        if codes.is_empty() {
            continue;
        }
        let aggregate_name = g.nodes[aggregate].name.clone();
        g.nodes[source].notes.push(format!(
            "string keys read as dictionary codes: {} (for '{aggregate_name}', where a row group's pages are all dictionary-encoded)",
            codes.join(", ")
        ));
        if let NodeKind::Source(config) = &mut g.nodes[source].kind {
            config.key_codes.extend(codes);
        }
    }
}

/// Where `node` is a Parquet source, or a chain of filters from one, in which every node feeds
/// only the next (the last feeds only what `node` feeds): the source and the filters, from
/// `node` up. Filters that reject rows (`on_error`) must see every row, and stop the chain.
fn filters_from_parquet(g: &LogicalGraph, mut node: usize) -> Option<(usize, Vec<usize>)> {
    let mut filters = Vec::new();
    loop {
        if g.outputs(node).count() != 1 {
            return None;
        }
        let inputs: Vec<usize> = g.inputs(node).map(|e| e.from).collect();
        match (&g.nodes[node].kind, inputs.as_slice()) {
            (NodeKind::Source(c), _) if c.format == crate::pipeline::SourceFormat::Parquet => return Some((node, filters)),
            (NodeKind::Stateless(Step::Filter(_)), [input]) if g.nodes[node].on_error == crate::pipeline::OnError::Fail => {
                filters.push(node);
                node = *input;
            }
            _ => return None,
        }
    }
}

/// The Parquet source, not followed (tail mode), and the filters after it, that the one
/// input of `node` comes from (see [`filters_from_parquet`]).
fn bounded_parquet_input(g: &LogicalGraph, node: usize) -> Option<(usize, Vec<usize>)> {
    let inputs: Vec<usize> = g.inputs(node).map(|e| e.from).collect();
    let [input] = inputs[..] else { return None };
    let (source, filters) = filters_from_parquet(g, input)?;
    match &g.nodes[source].kind {
        NodeKind::Source(config) if config.follow.is_none() => Some((source, filters)),
        _ => None,
    }
}

/// Sends the keys of an inner, semi or right join's right side to the Parquet reader of its left side
/// at run time (see [`crate::exec::join_filter`]), where the left input is a chain of filters
/// from a source that feeds nothing else, on a key column the source stores as an integer or
/// date. Filters that reject rows (`on_error`) must see every row, and stop the chain.
fn join_filters(g: &mut LogicalGraph) {
    use crate::exec::operators::join::How;
    if g.nodes.iter().any(|n| matches!(&n.kind, NodeKind::Source(c) if c.follow.is_some())) {
        return;
    }
    for join in 0..g.nodes.len() {
        let NodeKind::Join(plan) = &g.nodes[join].kind else { continue };
        let inputs: Vec<usize> = g.inputs(join).map(|e| e.from).collect();
        let [left, right] = inputs[..] else { continue };
        // The reader waits for the keys: only safe where the join reads its right side first
        // (nothing the right side needs waits on the left side's source), which a chain of
        // filters from a source that feeds nothing else gives in a bounded run.
        if !matches!(plan.how, How::Inner | How::Semi | How::Right) || !plan.build_first {
            continue;
        }
        let Some((source, between)) = filters_from_parquet(g, left) else { continue };
        let NodeKind::Source(config) = &g.nodes[source].kind else { continue };
        let right_schema = &g.nodes[right].schema;
        // A stored column (not cast on reading, nor a partition column) whose values are i64s.
        let usable = |l: &String, r: &String| {
            let stored = config.raw_schema.get(l).filter(|t| config.schema.get(l) == Some(*t));
            stored.is_some_and(crate::exec::operators::hash_index::fits_i64) && right_schema.get(r).is_some_and(crate::exec::operators::hash_index::fits_i64)
        };
        let Some((column, key)) = plan.left_on.iter().zip(&plan.right_on).find(|(l, r)| usable(l, r)) else { continue };
        // Parquet stores these as signed 32- or 64-bit integers, whose statistics order as i64
        // does (a UInt32 above 2^31 is stored negative).
        let statistics = config.raw_schema.get(column).is_some_and(|t| !matches!(t, DataType::UInt32));
        let spec = crate::exec::sources::JoinFilterSpec { column: column.clone(), join, between, statistics };
        let (column, key) = (column.clone(), key.clone());
        let (source_name, join_name) = (g.nodes[source].name.clone(), g.nodes[join].name.clone());
        if let NodeKind::Source(config) = &mut g.nodes[source].kind {
            config.join_filter = Some(spec);
        }
        g.nodes[source].notes.push(format!(
            "join filter from '{join_name}': rows whose {column} is not among its right side's {key} values are dropped in the reader, and row groups whose {column} statistics hold none are skipped; it reads nothing before they are known"
        ));
        if let NodeKind::Join(plan) = &mut g.nodes[join].kind {
            plan.filter_key = Some(key.clone());
        }
        g.nodes[join].notes.push(format!(
            "join filter: its right side's {key} values go to the reader of '{source_name}' (rows without a match are counted as filtered here)"
        ));
    }
}

/// Lets a bounded join read its right (build) side first when holding the left input back
/// cannot stall anything the right side needs: every node upstream of the left input feeds
/// only that input's subgraph or the join. Otherwise (a source feeding both sides, as in
/// TPC-H Q18), holding the left back could deadlock, and left batches are buffered instead,
/// as Flink's batch mode turns such exchanges blocking. Tail mode never holds an input back:
/// the right side may not end, and checkpoint barriers must pass on every input.
fn build_side_first(g: &mut LogicalGraph) {
    if g.nodes.iter().any(|n| matches!(&n.kind, NodeKind::Source(c) if c.follow.is_some())) {
        return;
    }
    for id in 0..g.nodes.len() {
        if !matches!(g.nodes[id].kind, NodeKind::Join(_)) {
            continue;
        }
        let Some(left) = g.inputs(id).next().map(|e| e.from) else { continue };
        if !feeds_only(g, left, id) {
            continue;
        }
        if let NodeKind::Join(plan) = &mut g.nodes[id].kind {
            plan.build_first = true;
        }
        g.nodes[id].notes.push("right input read first: the left input waits upstream instead of being buffered".to_string());
    }
}

/// Gives a join whose left input shares its source with other consumers (TPC-H Q18 reads
/// lineitem for an aggregate whose result feeds the join's right side, and for the join's left
/// side) a second read of that source. Otherwise the join holds its whole left input in memory
/// until its right side is complete (see [`build_side_first`]); with a copy of its own, the left
/// source waits and then streams. Only for Parquet and IPC sources, whose columns are read
/// again at a fraction of the cost of holding them (a CSV file is parsed again at full cost),
/// and for a path of row-by-row operators that reject nothing (a copy would count rejections
/// twice). Copies are named `<name>/reread` and placed just before the join, keeping the
/// node order topological.
fn reread_for_joins(g: &mut LogicalGraph) {
    if g.nodes.iter().any(|n| matches!(&n.kind, NodeKind::Source(c) if c.follow.is_some())) {
        return;
    }
    let mut join = 0;
    while join < g.nodes.len() {
        if let Some(path) = rereadable_left_input(g, join) {
            copy_path_before(g, &path, join);
            // The join moved past its new inputs.
            join += path.len();
        }
        join += 1;
    }
}

/// The path from a Parquet or IPC source to the left input of `join` (left input first) when
/// that input is shared with other consumers and can be read a second time.
fn rereadable_left_input(g: &LogicalGraph, join: usize) -> Option<Vec<usize>> {
    if !matches!(g.nodes[join].kind, NodeKind::Join(_)) {
        return None;
    }
    let left = g.inputs(join).next()?.from;
    if feeds_only(g, left, join) {
        return None;
    }
    let mut path = vec![left];
    loop {
        let n = *path.last()?;
        if g.nodes[n].on_error != crate::pipeline::OnError::Fail {
            return None;
        }
        match &g.nodes[n].kind {
            NodeKind::Source(c) if matches!(c.format, crate::pipeline::SourceFormat::Parquet | crate::pipeline::SourceFormat::Ipc) => return Some(path),
            NodeKind::Stateless(_) => {
                let inputs: Vec<usize> = g.inputs(n).map(|e| e.from).collect();
                let [input] = inputs.as_slice() else { return None };
                path.push(*input);
            }
            _ => return None,
        }
    }
}

/// Inserts copies of the nodes of `path` (a chain, its last node upstream) just before `join`,
/// and points the join's left input at the copy of the path's first node.
fn copy_path_before(g: &mut LogicalGraph, path: &[usize], join: usize) {
    let shift = |id: usize| if id >= join { id + path.len() } else { id };
    // The copies take ids join..join + len, upstream first.
    let copy = |n: usize| join + path.len() - 1 - path.iter().position(|&p| p == n).expect("on the path");
    let source = *path.last().expect("a path has a source");
    let joined = g.nodes[join].name.clone();
    let copies: Vec<Node> = path
        .iter()
        .rev()
        .map(|&n| {
            let mut node = g.nodes[n].clone();
            node.notes.push(if n == source {
                format!(
                    "'{}' read again for join '{joined}': its left input then streams instead of being held until the right side is complete",
                    g.nodes[n].name
                )
            } else {
                format!("a copy of '{}' on the second read of '{}'", g.nodes[n].name, g.nodes[source].name)
            });
            node.name = unique_name(g, &format!("{}/reread", node.name));
            node
        })
        .collect();
    let left_edge = g.edges.iter().position(|e| e.to == join).expect("a join has a left input");
    let inner: Vec<Edge> = path
        .windows(2)
        .map(|w| {
            let partitioning = g.edges.iter().find(|e| e.from == w[1] && e.to == w[0]).expect("the path is connected").partitioning.clone();
            Edge { from: copy(w[1]), to: copy(w[0]), partitioning }
        })
        .collect();
    for e in &mut g.edges {
        e.from = shift(e.from);
        e.to = shift(e.to);
    }
    g.edges[left_edge].from = copy(path[0]);
    g.edges.extend(inner);
    g.nodes.splice(join..join, copies);
}

/// `name`, or `name` with the first number from 2 on that no node has (a source read again for
/// several joins).
fn unique_name(g: &LogicalGraph, name: &str) -> String {
    let taken = |n: &str| g.nodes.iter().any(|node| node.name == n);
    std::iter::once(name.to_string()).chain((2..).map(|i| format!("{name}{i}"))).find(|n| !taken(n)).expect("some number is free")
}

/// True when `node` and everything upstream of it send rows only to each other, and to `sink`
/// over one edge alone (a join of an input with itself takes it over two).
fn feeds_only(g: &LogicalGraph, node: usize, sink: usize) -> bool {
    let upstream = upstream(g, node);
    let into_sink = upstream.iter().flat_map(|&n| g.outputs(n)).filter(|e| e.to == sink).count();
    into_sink == 1 && upstream.iter().all(|&n| g.outputs(n).all(|e| e.to == sink || upstream.contains(&e.to)))
}

/// `node` and every node upstream of it.
fn upstream(g: &LogicalGraph, node: usize) -> BTreeSet<usize> {
    let mut upstream = BTreeSet::from([node]);
    let mut todo = vec![node];
    while let Some(n) = todo.pop() {
        for e in g.inputs(n) {
            if upstream.insert(e.from) {
                todo.push(e.from);
            }
        }
    }
    upstream
}

/// How the note on a join that is never built starts (`run` repeats it as a warning).
pub const NEVER_BUILT: &str = "the right input never ends";

/// Notes a join whose right input comes from a followed file (tail mode): that input never
/// ends, so the join is never built, and its left rows are held until the run stops.
fn note_followed_build_sides(g: &mut LogicalGraph) {
    use crate::exec::sources::FollowInput;
    for join in 0..g.nodes.len() {
        if !matches!(g.nodes[join].kind, NodeKind::Join(_)) {
            continue;
        }
        let Some(right) = g.inputs(join).nth(1).map(|e| e.from) else { continue };
        let followed =
            |n: &&usize| matches!(&g.nodes[**n].kind, NodeKind::Source(c) if matches!(c.follow.as_ref().map(|f| &f.input), Some(FollowInput::Files { .. })));
        let names: Vec<String> = upstream(g, right).iter().filter(followed).map(|&n| format!("'{}'", g.nodes[n].name)).collect();
        if names.is_empty() {
            continue;
        }
        g.nodes[join].notes.push(format!(
            "{NEVER_BUILT}: {} followed (tail mode), so the join is never built and its left rows are held until the run stops; `follow = false` on a source reads it once, as a lookup table",
            if names.len() == 1 { format!("source {} is", names[0]) } else { format!("sources {} are", names.join(", ")) }
        ));
    }
}

/// The AND-ed parts of a predicate.
fn conjuncts(e: &Expr) -> Vec<Expr> {
    match e {
        Expr::BinaryExpr { left, op: Operator::And | Operator::LogicalAnd, right } => {
            let mut out = conjuncts(left);
            out.extend(conjuncts(right));
            out
        }
        other => vec![other.clone()],
    }
}

/// The filter that is the only consumer of node `id` (side outputs aside), and its predicate.
fn filter_after(g: &LogicalGraph, id: usize) -> Option<(usize, Expr)> {
    let outs: Vec<usize> = g.outputs(id).filter(|e| !g.is_side_edge(e)).map(|e| e.to).collect();
    let [consumer] = outs.as_slice() else { return None };
    match &g.nodes[*consumer].kind {
        NodeKind::Stateless(Step::Filter(predicate)) => Some((*consumer, predicate.clone())),
        _ => None,
    }
}

/// Drops the files of a partitioned source that a filter right after it would reject anyway:
/// each part of the filter that reads partition columns only is evaluated on the file's
/// partition values, before any file is opened.
fn prune_partitions(g: &mut LogicalGraph) -> PolarsResult<()> {
    for id in 0..g.nodes.len() {
        let Some((_, predicate)) = filter_after(g, id) else {
            continue;
        };
        let NodeKind::Source(config) = &mut g.nodes[id].kind else {
            continue;
        };
        if config.hive.is_empty() {
            continue;
        }
        let names: Vec<&str> = config.hive.iter().map(|(n, _)| n.as_str()).collect();
        let parts: Vec<Expr> = conjuncts(&predicate)
            .into_iter()
            .filter(|c| {
                let cols = columns_of(c);
                !cols.is_empty() && cols.iter().all(|c| names.contains(&c.as_str()))
            })
            .collect();
        if parts.is_empty() {
            continue;
        }
        let before = config.files.len();
        let mut keep = Vec::new();
        for values in &config.hive_values {
            let columns: Vec<Column> =
                config.hive.iter().zip(values).map(|((n, t), v)| Column::new(n.as_str().into(), [v.as_deref()]).strict_cast(t)).collect::<PolarsResult<_>>()?;
            let row = DataFrame::new(1, columns)?;
            let lf = parts.iter().fold(row.lazy(), |lf, p| lf.filter(p.clone()));
            keep.push(lf.collect()?.height() == 1);
        }
        let mut k = keep.iter();
        config.files.retain(|_| *k.next().expect("one flag per file"));
        let mut k = keep.iter();
        config.hive_values.retain(|_| *k.next().expect("one flag per file"));
        let shown: Vec<String> = parts.iter().map(|p| format!("{p:?}")).collect();
        let note = format!("partitions pruned: {}/{before} files kept by {}", config.files.len(), shown.join(" AND "));
        g.nodes[id].notes.push(note);
    }
    Ok(())
}

/// The comparisons of a file column with a constant among the AND-ed parts of `predicate`,
/// as bounds a row group's min/max statistics can refute (`x = c` becomes `x >= c`, `x <= c`).
/// `columns` are the columns whose statistics can be trusted for this: stored with the type the
/// filter sees (a declared cast can change the order: `"9" > "10"` as strings, not as numbers).
/// For floats only upper bounds count: some writers leave NaN out of min/max, and NaN passes
/// `x > c` in polars' total order.
pub fn statistics_bounds(predicate: &Expr, columns: &Schema) -> Vec<Expr> {
    let mut out = Vec::new();
    for part in conjuncts(predicate) {
        let Expr::BinaryExpr { left, op, right } = &part else { continue };
        let column = |a: &Expr, b: &Expr| match a {
            Expr::Column(name) if columns_of(b).is_empty() => columns.get(name).cloned(),
            _ => None,
        };
        let (dtype, column_left) = match (column(left, right), column(right, left)) {
            (Some(t), _) => (t, true),
            (None, Some(t)) => (t, false),
            (None, None) => continue,
        };
        // Does the bound say "column below the constant"?
        let upper = |op: &Operator| matches!((op, column_left), (Operator::Lt | Operator::LtEq, true) | (Operator::Gt | Operator::GtEq, false));
        let float = dtype.is_float();
        match op {
            Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq if !float || upper(op) => out.push(part.clone()),
            Operator::Eq => {
                let (l, r) = if column_left { ((**left).clone(), (**right).clone()) } else { ((**right).clone(), (**left).clone()) };
                if !float {
                    out.push(l.clone().gt_eq(r.clone()));
                }
                out.push(l.lt_eq(r));
            }
            _ => {}
        }
    }
    out
}

/// Pushes a filter right after a Parquet source into its reader: the row groups whose min/max
/// statistics show that no row can pass are not read (the filter still runs on the rest).
fn push_row_group_filter(g: &mut LogicalGraph) {
    for id in 0..g.nodes.len() {
        let Some((consumer, predicate)) = filter_after(g, id) else {
            continue;
        };
        // A filter that rejects rows (on_error) must see every row to count them.
        if g.nodes[consumer].on_error != crate::pipeline::OnError::Fail {
            continue;
        }
        let NodeKind::Source(config) = &mut g.nodes[id].kind else {
            continue;
        };
        if config.format != crate::pipeline::SourceFormat::Parquet || config.follow.is_some() {
            continue;
        }
        let stored: Schema =
            config.schema.iter().filter(|(n, t)| config.raw_schema.get(n) == Some(*t)).map(|(n, t)| Field::new(n.clone(), t.clone())).collect();
        let bounds = statistics_bounds(&predicate, &stored);
        let reader_filter = reader_filter(&predicate, &stored, consumer);
        let mut notes = Vec::new();
        if !bounds.is_empty() {
            let shown: Vec<String> = bounds.iter().map(|p| format!("{p:?}")).collect();
            config.row_group_filter = bounds;
            notes.push(format!("predicate pushed to reader: row groups skipped by min/max statistics where not {}", shown.join(" AND ")));
        }
        if let Some(filter) = reader_filter {
            let read: BTreeSet<String> = filter.parts.iter().flat_map(columns_of).collect();
            let shown = filter.parts.iter().cloned().reduce(|a, b| a.and(b)).expect("a reader filter has parts");
            notes.push(format!(
                "predicate evaluated in the reader: {} decoded first, the other columns only for rows where {shown:?}",
                read.into_iter().collect::<Vec<_>>().join(", ")
            ));
            config.reader_filter = Some(filter);
        }
        g.nodes[id].notes.extend(notes);
    }
}

/// The conjuncts of a filter's `predicate` that the Parquet reader can evaluate itself: those
/// reading stored columns only (not partition columns, nor columns cast on reading), in
/// expressions that [`row_eval`] computes directly.
fn reader_filter(predicate: &Expr, stored: &Schema, consumer: usize) -> Option<crate::exec::sources::ReaderFilter> {
    let parts: Vec<Expr> = conjuncts(predicate)
        .into_iter()
        .filter(|c| {
            let cols = columns_of(c);
            !cols.is_empty() && cols.iter().all(|c| stored.contains(c)) && row_eval::supported(c, stored)
        })
        .collect();
    (!parts.is_empty()).then_some(crate::exec::sources::ReaderFilter { parts, consumer })
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
            // The runtime makes the same choice (see `runtime::build_operators`).
            let state = match reduce {
                Reduce::Aggregate(plan) if AggregateTable::new(plan, &upstream.schema, &partial_schema).is_some() => "state: hash table",
                _ => "state: polars frames",
            };
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
                    Reduce::Aggregate(_) => format!("partial aggregation before the exchange, {state}"),
                    _ => format!("partial {} before the exchange", node.label),
                }],
                ordered: false,
                on_error: crate::pipeline::OnError::Fail,
            };
            nodes.push(partial);
            let partial_id = nodes.len() - 1;
            edges.push(Edge { from: new_id[input.from], to: partial_id, partitioning: Partitioning::Forward });
            let mut fin = node.clone();
            fin.label = format!("{} (final)", node.label);
            fin.kind = NodeKind::FinalReduce(reduce.clone());
            if matches!(reduce, Reduce::Aggregate(_)) {
                fin.notes.push(state.to_string());
            }
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
        // A side output's rows are not made of its input's columns.
        NodeKind::SideOutput(_) => return BTreeSet::new(),
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
        // Each side gives the join its keys and the wanted columns it has (a right column whose
        // name clashes is wanted under its suffixed name). Names on both sides may be read from
        // both: a little more than needed, never less.
        NodeKind::Join(plan) => {
            let unsuffixed = wanted.iter().filter_map(|w| w.strip_suffix(plan.suffix.as_str()).map(str::to_string));
            plan.left_on.iter().chain(&plan.right_on).cloned().chain(wanted.iter().cloned()).chain(unsuffixed).collect()
        }
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
            let all: Vec<String> = config.schema.iter_names().map(|n| n.to_string()).chain(config.hive.iter().map(|(n, _)| n.clone())).collect();
            let total = all.len();
            let mut cols: Vec<String> = all.iter().filter(|c| wanted[id].contains(*c)).cloned().collect();
            if !cols.iter().any(|c| config.schema.contains(c)) {
                // No file column is used (rows are only counted, or only partition columns are
                // read): read the first one to know how many rows there are.
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
        // A join's column layout follows its inputs' columns.
        if let (NodeKind::Join(plan), [left, right]) = (&mut g.nodes[id].kind, inputs.as_slice()) {
            plan.layout = plan.layout_for(left, right)?;
        }
        let schema = match &g.nodes[id].kind {
            NodeKind::Source(config) => config.output_schema(),
            NodeKind::SideOutput(tag) if tag == LATE => late_schema(g, id),
            kind => output_schema(kind, &inputs)?,
        };
        g.nodes[id].schema = Arc::new(schema);
    }
    Ok(())
}

/// The rows of a window's `late` side output are its input rows.
pub fn late_schema(g: &LogicalGraph, side: usize) -> Schema {
    let owner = g.inputs(side).next().map(|e| e.from);
    let input = owner.and_then(|o| g.inputs(o).next()).map(|e| e.from);
    input.map_or_else(Schema::default, |i| {
        let mut s = (*g.nodes[i].schema).clone();
        s.shift_remove(SEQ_COLUMN);
        s
    })
}

/// A polars error during optimisation as a message naming the pipeline.
pub fn describe(e: &PolarsError) -> String {
    format!("planning failed: {}", clean(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(filter: &str, columns: &[(&str, DataType)]) -> Vec<String> {
        let schema: Schema = columns.iter().map(|(n, t)| Field::new((*n).into(), t.clone())).collect();
        let predicate = polars::sql::sql_expr(filter).unwrap();
        statistics_bounds(&predicate, &schema).iter().map(|e| format!("{e:?}")).collect()
    }

    #[test]
    fn comparisons_with_constants_become_bounds() {
        let int = [("x", DataType::Int64), ("y", DataType::Int64)];
        assert_eq!(bounds("x >= 5 AND y < 3 AND x + y > 1 AND x <> 2", &int).len(), 2);
        assert_eq!(bounds("x = 5", &int).len(), 2);
        assert_eq!(bounds("5 < x", &int).len(), 1);
        // Columns whose statistics cannot be trusted (absent from `columns`) give none.
        assert!(bounds("z > 1", &int).is_empty());
    }

    #[test]
    fn float_columns_only_get_upper_bounds() {
        // Some writers leave NaN out of min/max, and NaN passes `x > c`.
        let float = [("x", DataType::Float64)];
        assert!(bounds("x > 5", &float).is_empty());
        assert!(bounds("5 <= x", &float).is_empty());
        assert_eq!(bounds("x < 5", &float).len(), 1);
        assert_eq!(bounds("5 > x", &float).len(), 1);
        let eq = bounds("x = 5", &float);
        assert_eq!(eq.len(), 1);
        assert!(eq[0].contains("<="), "{eq:?}");
    }
}
