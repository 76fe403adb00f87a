//! Compiling one `[[op]]` of the pipeline file into a node of the logical graph: expressions
//! compiled, every column checked against the input schema, and the operation chosen.
use polars::prelude::*;

use super::expr::{AggFunc, columns_of, parse_aggregate};
use super::logical::{Builder, NodeKind};
use crate::exec::operators::aggregate::{AggSpec, AggregatePlan, mean_argument};
use crate::exec::operators::join::{How, JoinPlan, Strategy};
use crate::exec::operators::order::{DistinctPlan, Keep, SortPlan};
use crate::exec::operators::reduce::Reduce;
use crate::exec::operators::stateless::{SEQ_COLUMN, Step};
use crate::exec::operators::watermark::time_ms;
use crate::exec::operators::window::{LATE, WINDOW_END, WINDOW_START, WindowKind, WindowPlan};
use crate::pipeline::{Located, OpKind, OpSpec, Origin, side_output_name};

fn joined<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    items.iter().map(f).collect::<Vec<_>>().join(", ")
}

/// The node kind and `explain` detail of `op`, whose inputs are the nodes `inputs`; None when a
/// problem was reported.
pub(super) fn compile(b: &mut Builder<'_>, op: &OpSpec, inputs: &[usize], keep_seq: bool, who: &str) -> Option<(NodeKind, String)> {
    let in_schema = b.nodes[inputs[0]].schema.clone();
    let who_s = who.to_string();
    // Checks every column (no short circuit), so all missing ones are reported.
    let all_exist = |b: &mut Builder<'_>, cols: &[Located<String>]| {
        let mut ok = true;
        for c in cols {
            ok &= b.columns_exist(std::slice::from_ref(&c.value), c, &in_schema, who);
        }
        ok
    };
    Some(match &op.kind {
        OpKind::Filter(f) => (NodeKind::Stateless(Step::Filter(b.expr(f, &in_schema, who)?)), f.value.clone()),
        OpKind::Select(items) => {
            let mut exprs: Vec<Expr> = items.iter().filter_map(|t| b.expr(t, &in_schema, who)).collect();
            if exprs.len() != items.len() {
                return None;
            }
            if keep_seq {
                exprs.push(col(SEQ_COLUMN));
            }
            (NodeKind::Stateless(Step::Select(exprs)), joined(items, |i| i.value.clone()))
        }
        OpKind::With(items) => {
            let exprs: Vec<Expr> = items.iter().filter_map(|(name, t)| b.expr(t, &in_schema, who).map(|e| e.alias(name.value.as_str()))).collect();
            if exprs.len() != items.len() {
                return None;
            }
            (NodeKind::Stateless(Step::With(exprs)), joined(items, |(n, t)| format!("{} = {}", n.value, t.value)))
        }
        OpKind::Rename(pairs) => {
            let olds: Vec<Located<String>> = pairs.iter().map(|(o, _)| o.clone()).collect();
            if !all_exist(b, &olds) {
                return None;
            }
            let step = Step::Rename(pairs.iter().map(|(o, n)| (o.value.clone(), n.value.clone())).collect());
            (NodeKind::Stateless(step), joined(pairs, |(o, n)| format!("{} -> {}", o.value, n.value)))
        }
        OpKind::Drop(cols) => {
            if !all_exist(b, cols) {
                return None;
            }
            (NodeKind::Stateless(Step::Drop(cols.iter().map(|c| c.value.clone()).collect())), joined(cols, |c| c.value.clone()))
        }
        OpKind::Cast(pairs) => {
            let cols: Vec<Located<String>> = pairs.iter().map(|(c, _)| c.clone()).collect();
            if !all_exist(b, &cols) {
                return None;
            }
            let step = Step::Cast(pairs.iter().map(|(c, t)| (c.value.clone(), t.value.clone())).collect());
            (NodeKind::Stateless(step), joined(pairs, |(c, t)| format!("{} as {}", c.value, t.value)))
        }
        OpKind::Explode(cols) | OpKind::Unnest(cols) => {
            if !all_exist(b, cols) {
                return None;
            }
            let names: Vec<String> = cols.iter().map(|c| c.value.clone()).collect();
            let step = if matches!(op.kind, OpKind::Explode(_)) { Step::Explode(names) } else { Step::Unnest(names) };
            (NodeKind::Stateless(step), joined(cols, |c| c.value.clone()))
        }
        OpKind::Parse { column, regex, types } => {
            if !all_exist(b, std::slice::from_ref(column)) {
                return None;
            }
            let groups = match regex::Regex::new(&regex.value) {
                Ok(re) if re.capture_names().flatten().next().is_none() => Err("the regex has no named groups, e.g. (?P<status>\\d+)".to_string()),
                Ok(re) => {
                    let names: Vec<&str> = re.capture_names().flatten().collect();
                    let mut bad = types.iter().filter(|(n, _)| !names.contains(&n.value.as_str()));
                    match bad.next() {
                        Some((n, _)) => Err(format!("`types` names '{}', which is not a group of the regex (groups: {})", n.value, names.join(", "))),
                        None => col(column.value.as_str()).str().extract_groups(&regex.value).map_err(|e| super::expr::clean(&e)),
                    }
                }
                Err(e) => Err(format!("invalid regex: {e}")),
            };
            let groups = match groups {
                Ok(g) => g,
                Err(msg) => {
                    b.err(&regex.origin, who_s, msg);
                    return None;
                }
            };
            let step = Step::Parse {
                column: column.value.clone(),
                groups,
                regex: regex.value.clone(),
                types: types.iter().map(|(n, t)| (n.value.clone(), t.value.clone())).collect(),
            };
            (NodeKind::Stateless(step), format!("{} with {}", column.value, regex.value))
        }
        OpKind::Watermark { time, max_delay, idle_timeout } => {
            if !b.columns_exist(std::slice::from_ref(&time.value), time, &in_schema, who) {
                return None;
            }
            let dtype = in_schema.get(&time.value).cloned().unwrap_or(DataType::Null);
            let expr = match time_ms(&time.value, &dtype) {
                Ok(e) => e,
                Err(msg) => {
                    b.err(&time.origin, who_s, msg);
                    return None;
                }
            };
            let idle = idle_timeout.map_or(String::new(), |t| format!(", idle after {t} ms"));
            (
                NodeKind::Watermark { time: expr, max_delay: *max_delay, idle_timeout: *idle_timeout },
                format!("event time {}, max_delay {} ms{idle}", time.value, max_delay),
            )
        }
        OpKind::Aggregate { key_by, aggregates, window, changes } => {
            let mut ok = all_exist(b, key_by);
            let mut aggs = Vec::new();
            for (name, call) in aggregates {
                match parse_aggregate(call) {
                    Ok(c) => {
                        let cols = c.arg.as_ref().map(columns_of).unwrap_or_default();
                        ok &= b.columns_exist(&cols, call, &in_schema, who);
                        let mut arg = c.arg.map(|a| super::expr::exact_decimals(a, &in_schema));
                        if c.func == AggFunc::Mean {
                            arg = arg.map(|a| mean_argument(a, &in_schema));
                        }
                        aggs.push(AggSpec { name: name.value.clone(), func: c.func, arg, q: c.q });
                    }
                    Err((origin, msg)) => {
                        b.err(&origin, who_s.clone(), msg);
                        ok = false;
                    }
                }
            }
            if !ok {
                return None;
            }
            let plan = AggregatePlan { keys: key_by.iter().map(|k| k.value.clone()).collect(), aggs, ordered: in_schema.contains(SEQ_COLUMN) };
            let keys = if plan.keys.is_empty() { "(global)".to_string() } else { format!("[{}]", plan.keys.join(", ")) };
            let what = joined(aggregates, |(n, c)| format!("{} = {}", n.value, c.value));
            match window {
                None if changes.is_some() => {
                    let ttl = changes.flatten();
                    let ttl_text = ttl.map_or(String::new(), |t| format!(", state TTL {t} ms"));
                    (NodeKind::Running { plan, ttl }, format!("key_by {keys}, changelog{ttl_text}: {what}"))
                }
                None => (NodeKind::Reduce(Reduce::Aggregate(plan)), format!("key_by {keys}: {what}")),
                Some(w) => {
                    let processing_time = is_processing_time(&w.time.value);
                    if processing_time && w.lateness > 0 {
                        b.err(&w.time.origin, who_s, "a processing-time window has no late rows: remove `allowed_lateness`");
                        return None;
                    }
                    let (time, dtype) = if processing_time {
                        (lit(0i64), DataType::Datetime(TimeUnit::Milliseconds, None))
                    } else {
                        if !b.columns_exist(std::slice::from_ref(&w.time.value), &w.time, &in_schema, who) {
                            return None;
                        }
                        let dtype = in_schema.get(&w.time.value).cloned().unwrap_or(DataType::Null);
                        match time_ms(&w.time.value, &dtype) {
                            Ok(e) => (e, dtype),
                            Err(msg) => {
                                b.err(&w.time.origin, who_s, msg);
                                return None;
                            }
                        }
                    };
                    let bound_type = if dtype.is_integer() { DataType::Int64 } else { DataType::Datetime(TimeUnit::Milliseconds, None) };
                    let kind = match (w.gap, w.slide) {
                        (Some(gap), _) => WindowKind::Session { gap },
                        (None, Some(slide)) if slide != w.size => WindowKind::Sliding { size: w.size, slide },
                        _ => WindowKind::Tumbling { size: w.size },
                    };
                    let mut agg = plan;
                    agg.keys.extend([WINDOW_START.to_string(), WINDOW_END.to_string()]);
                    let late_output = b.consumed(&side_output_name(&op.common.name.value, LATE));
                    let shape = match &kind {
                        WindowKind::Tumbling { size } => format!("tumbling {size} ms"),
                        WindowKind::Sliding { size, slide } => format!("sliding {size} ms every {slide} ms"),
                        WindowKind::Session { gap } => format!("session with gap {gap} ms"),
                    };
                    let plan = WindowPlan { kind, time, bound_type, lateness: w.lateness, agg, late_output, processing_time };
                    let on = if processing_time { "processing time".to_string() } else { format!("{}, lateness {} ms", w.time.value, w.lateness) };
                    (NodeKind::Window(plan), format!("key_by {keys}, {shape} on {on}: {what}"))
                }
            }
        }
        OpKind::Union => {
            // Same columns and types by name; the output takes the first input's column order.
            let first = b.nodes[inputs[0]].clone();
            let visible = |s: &Schema| -> Vec<(String, DataType)> {
                let mut v: Vec<_> = s.iter().filter(|(n, _)| n.as_str() != SEQ_COLUMN).map(|(n, t)| (n.to_string(), t.clone())).collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            };
            let expected = visible(&first.schema);
            let mut ok = true;
            for (&input, name) in inputs.iter().zip(&op.inputs).skip(1) {
                let other = visible(&b.nodes[input].schema);
                if other != expected {
                    let show = |v: &[(String, DataType)], w: &[(String, DataType)]| {
                        v.iter().filter(|c| !w.contains(c)).map(|(n, t)| format!("{n}: {t}")).collect::<Vec<_>>().join(", ")
                    };
                    let msg = format!(
                        "union inputs differ: '{}' has [{}] that '{}' lacks, and '{}' has [{}] that '{}' lacks",
                        first.name,
                        show(&expected, &other),
                        name.value,
                        name.value,
                        show(&other, &expected),
                        first.name
                    );
                    b.err(&name.origin, who_s.clone(), msg);
                    ok = false;
                }
            }
            if !ok {
                return None;
            }
            let all_seq = inputs.iter().all(|&i| b.nodes[i].schema.contains(SEQ_COLUMN));
            let mut cols: Vec<Expr> = first.schema.iter_names().filter(|n| n.as_str() != SEQ_COLUMN).map(|n| col(n.clone())).collect();
            if all_seq {
                cols.push(col(SEQ_COLUMN));
            }
            (NodeKind::Stateless(Step::Select(cols)), joined(&op.inputs, |i| i.value.clone()))
        }
        OpKind::Sort { by, limit, key_by } => {
            let mut ok = all_exist(b, key_by);
            let (mut exprs, mut descending, mut nulls_last) = (Vec::new(), Vec::new(), Vec::new());
            for item in by {
                let (text, desc, nulls) = parse_order_item(item);
                match b.expr(&text, &in_schema, who) {
                    Some(e) => {
                        exprs.push(e);
                        descending.push(desc);
                        nulls_last.push(nulls);
                    }
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            let plan =
                SortPlan { by: exprs, descending, nulls_last, limit: limit.as_ref().map(|l| l.value), keys: key_by.iter().map(|k| k.value.clone()).collect() };
            let mut detail = if by.is_empty() { "input order".to_string() } else { joined(by, |i| i.value.clone()) };
            if let Some(n) = plan.limit {
                detail.push_str(&format!(", limit {n}"));
            }
            if !plan.keys.is_empty() {
                detail.push_str(&format!(" per key [{}]", plan.keys.join(", ")));
            }
            (NodeKind::Reduce(Reduce::Sort(plan)), detail)
        }
        OpKind::Join { how, left_on, right_on, suffix, strategy } => {
            let Some(how_v) = How::parse(&how.value) else {
                b.err(&how.origin, who_s, format!("unknown join {:?}; expected inner, left, right, full, semi or anti", how.value));
                return None;
            };
            let right_schema = b.nodes[inputs[1]].schema.clone();
            let mut ok = all_exist(b, left_on);
            for k in right_on {
                ok &= b.columns_exist(std::slice::from_ref(&k.value), k, &right_schema, who);
            }
            if !ok {
                return None;
            }
            // Hash partitioning sends equal keys to the same subtask only if they hash alike.
            for (l, r) in left_on.iter().zip(right_on) {
                let (lt, rt) = (in_schema.get(&l.value), right_schema.get(&r.value));
                if lt != rt {
                    let t = |t: Option<&DataType>| t.map_or("?".to_string(), |t| t.to_string());
                    let msg = format!("join key types differ: left '{}' is {}, right '{}' is {}; add a `cast` before the join", l.value, t(lt), r.value, t(rt));
                    b.err(&l.origin, who_s.clone(), msg);
                    ok = false;
                }
            }
            if !ok {
                return None;
            }
            let can_broadcast = !how_v.keeps_unmatched_right();
            let size = b.estimated_bytes(inputs[1]);
            let (chosen, why) = match strategy.as_ref().map(|s| (s.value.as_str(), &s.origin)) {
                Some(("broadcast", origin)) if !can_broadcast => {
                    b.err(
                        origin,
                        who_s,
                        format!("a {} join cannot broadcast its right input (unmatched right rows would repeat); use strategy = \"hash\"", how.value),
                    );
                    return None;
                }
                Some(("broadcast", _)) => (Strategy::BroadcastRight, "hint".to_string()),
                Some(_) => (Strategy::Hash, "hint".to_string()),
                None => match size {
                    Some(bytes) if can_broadcast && bytes <= b.broadcast_threshold => {
                        (Strategy::BroadcastRight, format!("right side {} <= broadcast_threshold {}", mb(bytes), mb(b.broadcast_threshold)))
                    }
                    Some(bytes) if can_broadcast => (Strategy::Hash, format!("right side {} > broadcast_threshold {}", mb(bytes), mb(b.broadcast_threshold))),
                    Some(_) => (Strategy::Hash, format!("a {} join keeps unmatched right rows", how.value)),
                    None => (Strategy::Hash, "right side size unknown".to_string()),
                },
            };
            let mut plan = JoinPlan {
                how: how_v,
                left_on: left_on.iter().map(|k| k.value.clone()).collect(),
                right_on: right_on.iter().map(|k| k.value.clone()).collect(),
                suffix: suffix.clone(),
                strategy: chosen,
                layout: Vec::new(),
                build_first: false,
                filter_key: None,
            };
            match plan.layout_for(&in_schema, &right_schema) {
                Ok(layout) => plan.layout = layout,
                Err(e) => {
                    b.err(&how.origin, who_s, super::expr::clean(&e));
                    return None;
                }
            }
            let strategy_name = if chosen == Strategy::Hash { "hash both sides" } else { "broadcast right" };
            let detail = format!("{} on [{}] = [{}], {strategy_name} ({why})", how.value, plan.left_on.join(", "), plan.right_on.join(", "));
            (NodeKind::Join(plan), detail)
        }
        OpKind::Distinct { columns, keep } => {
            if let Some(cols) = columns
                && !all_exist(b, cols)
            {
                return None;
            }
            let keep_v = match keep.value.as_str() {
                "last" => Keep::Last,
                "any" => Keep::Any,
                _ => Keep::First,
            };
            let plan = DistinctPlan { columns: columns.as_ref().map(|c| c.iter().map(|c| c.value.clone()).collect()), keep: keep_v };
            let on = columns.as_ref().map_or("all columns".to_string(), |c| joined(c, |c| c.value.clone()));
            (NodeKind::Reduce(Reduce::Distinct(plan)), format!("on {on}, keep {}", keep.value))
        }
    })
}

fn mb(bytes: u64) -> String {
    match bytes {
        b if b < 1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{:.1} MB", b as f64 / 1e6),
    }
}

/// Splits `expr [ASC|DESC] [NULLS FIRST|LAST]`; nulls sort last by default, as in DuckDB.
fn parse_order_item(item: &Located<String>) -> (Located<String>, bool, bool) {
    let mut text = item.value.trim().to_string();
    let mut take_suffix = |suffix: &str| {
        let upper = text.to_ascii_uppercase();
        if upper.ends_with(suffix) && (upper.len() == suffix.len() || upper[..upper.len() - suffix.len()].ends_with(' ')) {
            text.truncate(text.len() - suffix.len());
            text = text.trim_end().to_string();
            true
        } else {
            false
        }
    };
    let nulls_last = !take_suffix("NULLS FIRST");
    if nulls_last {
        take_suffix("NULLS LAST");
    }
    let descending = take_suffix("DESC");
    if !descending {
        take_suffix("ASC");
    }
    let offset = item.value.len() - item.value.trim_start().len();
    (Located::new(text, item.origin.shifted(0, offset)), descending, nulls_last)
}

/// Where to point when an operator fails on an empty frame of its input: the filter, the
/// first aggregate that fails on its own, or the operator.
pub(super) fn blame(op: &OpSpec, kind: &NodeKind, in_schema: &Schema) -> Origin {
    match (&op.kind, kind) {
        (OpKind::Filter(f), _) => f.origin.clone(),
        (OpKind::Aggregate { aggregates, .. }, NodeKind::Reduce(Reduce::Aggregate(plan))) => aggregates
            .iter()
            .zip(&plan.aggs)
            .find(|(_, agg)| {
                let one = Reduce::Aggregate(AggregatePlan { keys: plan.keys.clone(), aggs: vec![(*agg).clone()], ordered: plan.ordered });
                one.single_phase(DataFrame::empty_with_schema(in_schema).lazy(), in_schema).and_then(|lf| lf.collect()).is_err()
            })
            .map_or(op.common.origin.clone(), |((_, call), _)| call.origin.clone()),
        _ => op.common.origin.clone(),
    }
}

/// True for a window's `time = "PROCTIME()"` (Flink SQL's name): processing time, the wall
/// clock when the window operator receives a row.
pub fn is_processing_time(time: &str) -> bool {
    time.trim().eq_ignore_ascii_case("PROCTIME()")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_items_parse() {
        let item = |s: &str| parse_order_item(&Located::new(s.to_string(), Origin::at(1, 1)));
        let (t, d, n) = item("latency_ms DESC");
        assert_eq!((t.value.as_str(), d, n), ("latency_ms", true, true));
        let (t, d, n) = item("a + b asc nulls first");
        assert_eq!((t.value.as_str(), d, n), ("a + b", false, false));
        let (t, d, n) = item("descr");
        assert_eq!((t.value.as_str(), d, n), ("descr", false, true));
    }
}
