//! Stateless steps (filter, select, with, rename, drop, cast) and the operator that runs a chain
//! of them as one polars plan per batch.
use std::sync::Arc;
use std::time::Instant;

use polars::prelude::*;

use super::row_eval;

use crate::error::{Error, Result};
use crate::exec::dead_letter::{self, ErrorKind, Rejection};
use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::exec::operator::{Collector, Operator};
use crate::pipeline::{DEAD_LETTER, OnError};
use crate::plan::expr::clean;

/// Hidden column carrying each row's position in source order, present only when a `first` /
/// `last` aggregate downstream needs it. Sinks never write it.
pub const SEQ_COLUMN: &str = "__rv_seq";

/// One compiled stateless step.
#[derive(Clone, Debug)]
pub enum Step {
    /// Keep rows where the predicate is true.
    Filter(Expr),
    /// Output exactly these expressions.
    Select(Vec<Expr>),
    /// Add or replace columns.
    With(Vec<Expr>),
    /// Rename columns (old, new).
    Rename(Vec<(String, String)>),
    /// Remove columns.
    Drop(Vec<String>),
    /// Change column types; a value that cannot be converted is an error.
    Cast(Vec<(String, DataType)>),
    /// One row per element of these list columns (exploded together); an empty list gives
    /// a row with a null, so no row disappears.
    Explode(Vec<String>),
    /// Replace these struct columns by their fields.
    Unnest(Vec<String>),
    /// Named groups of a regex over a string column become (typed) columns; a non-null value
    /// the regex does not match is an error. Always the last step of a fused group.
    Parse {
        /// The string column.
        column: String,
        /// The regex's named groups, extracted as a struct expression.
        groups: Expr,
        /// The regex, for the match check.
        regex: String,
        /// Types of group columns (strict casts); the others stay strings.
        types: Vec<(String, DataType)>,
    },
}

/// Hidden column holding a filter's predicate while the fused plan runs.
const KEEP_COLUMN: &str = "__rv_keep";

/// Hidden column that marks rows whose value a parse step did not match.
const MISMATCH_COLUMN: &str = "__rv_no_match";

impl Step {
    /// Adds this step to a lazy plan.
    pub fn apply(&self, lf: LazyFrame) -> LazyFrame {
        match self {
            Step::Filter(e) => lf.filter(e.clone()),
            Step::Select(es) => lf.select(es.clone()),
            Step::With(es) => lf.with_columns(es.clone()),
            Step::Rename(pairs) => lf.rename(pairs.iter().map(|p| p.0.as_str()), pairs.iter().map(|p| p.1.as_str()), true),
            Step::Drop(cols) => lf.drop(by_name(cols.iter().map(String::as_str), true, false)),
            Step::Cast(pairs) => lf.with_columns(pairs.iter().map(|(c, t)| col(c.as_str()).strict_cast(t.clone())).collect::<Vec<_>>()),
            Step::Explode(cols) => lf.explode(by_name(cols.iter().map(String::as_str), true, false), ExplodeOptions { empty_as_null: true, keep_nulls: true }),
            Step::Unnest(cols) => lf.unnest(by_name(cols.iter().map(String::as_str), true, false), None),
            Step::Parse { column, groups, regex, types } => {
                let c = || col(column.as_str());
                let mismatch = c().is_not_null().and(c().str().contains(lit(regex.clone()), true).not());
                lf.with_columns([groups.clone().alias("__rv_groups"), mismatch.alias(MISMATCH_COLUMN)])
                    .unnest(by_name(["__rv_groups"], true, false), None)
                    .with_columns(types.iter().map(|(n, t)| col(n.as_str()).strict_cast(t.clone())).collect::<Vec<_>>())
            }
        }
    }
}

/// One step of a fused group: its node id, operator name, step and error policy.
pub struct FusedStep {
    /// Node id (for counters and side outputs).
    pub id: usize,
    /// Operator name (for errors).
    pub name: String,
    /// What it does.
    pub step: Step,
    /// What it does with a row it cannot compute.
    pub on_error: OnError,
}

/// A chain of stateless steps run as one polars plan per batch. Each step is one node of the
/// graph; at most one of them is a filter, so every node's row counts stay exact.
///
/// When the fused plan fails (or a parse does not match), the batch runs again step by step:
/// each failing step names its operator, and under `on_error = "skip"` / `"dead_letter"` the
/// rows it cannot compute are found (by halving the batch) and rejected, the rest go on.
pub struct StatelessOperator {
    steps: Vec<FusedStep>,
    metrics: Arc<Metrics>,
    /// The first step is a filter whose predicate [`row_eval`] computes (decided on the first
    /// batch): it runs without planning a polars query per batch.
    direct_filter: std::cell::OnceCell<bool>,
}

/// Rows a step rejected: (row index in the step's input, kind, message).
type Rejected = Vec<(usize, ErrorKind, String)>;

impl StatelessOperator {
    /// Fuses steps, in chain order.
    pub fn new(steps: Vec<FusedStep>, metrics: Arc<Metrics>) -> Self {
        StatelessOperator { steps, metrics, direct_filter: std::cell::OnceCell::new() }
    }

    /// The whole group as one plan, and the rows each step emitted; a parse that did not
    /// match counts as a failure.
    fn fused(&self, batch: DataFrame) -> Option<(DataFrame, Vec<u64>)> {
        let mut steps = &self.steps[..];
        let mut batch = batch;
        // Filters run eagerly, so the rows after each step are known; only an explode (the last
        // step of a group) changes the count lazily.
        let mut rows = Vec::with_capacity(steps.len());
        if let Some(Step::Filter(predicate)) = steps.first().map(|s| &s.step)
            && *self.direct_filter.get_or_init(|| row_eval::supported(predicate, batch.schema()))
        {
            let keep = row_eval::eval(predicate, &batch).ok()?;
            batch = batch.filter_seq(keep.bool().ok()?).ok()?;
            rows.push(batch.height() as u64);
            steps = &steps[1..];
            if steps.is_empty() {
                return Some((batch, rows));
            }
        }
        let mut current = batch.height() as u64;
        let mut lf = batch.lazy();
        for s in steps {
            lf = match &s.step {
                // polars' lazy filter cuts a frame of more columns than threads into one piece
                // per thread and returns them as that many chunks, which every later group-by
                // or join copies back together (8% of TPC-H Q1). The eager filter works column
                // by column and keeps one chunk.
                Step::Filter(predicate) => {
                    let df = lf.with_column(predicate.clone().alias(KEEP_COLUMN)).collect().ok()?;
                    let keep = df.column(KEEP_COLUMN).ok()?.bool().ok()?.clone();
                    let df = df.drop(KEEP_COLUMN).ok()?.filter_seq(&keep).ok()?;
                    current = df.height() as u64;
                    df.lazy()
                }
                step => step.apply(lf),
            };
            rows.push(current);
        }
        let df = lf.collect().ok()?;
        if let (Some(last), Some(Step::Explode(_))) = (rows.last_mut(), self.steps.last().map(|s| &s.step)) {
            *last = df.height() as u64;
        }
        match self.steps.last().map(|s| &s.step) {
            Some(Step::Parse { .. }) => {
                let marks = df.column(MISMATCH_COLUMN).ok()?.bool().ok()?;
                if marks.any() { None } else { Some((df.drop(MISMATCH_COLUMN).ok()?, rows)) }
            }
            _ => Some((df, rows)),
        }
    }

    /// Runs the steps one by one, applying each one's `on_error`.
    fn step_by_step(&self, batch: DataFrame, out: &mut dyn Collector) -> Result<Option<DataFrame>> {
        let mut df = batch;
        for s in &self.steps {
            let start = Instant::now();
            let rows_in = df.height();
            let (next, rejected) = run_step(s, &df)?;
            let m = &self.metrics.nodes[s.id];
            NodeMetrics::add(&m.rows_in, rows_in as u64);
            NodeMetrics::add(&m.rejected, rejected.len() as u64);
            if matches!(s.step, Step::Filter(_)) {
                NodeMetrics::add(&m.filtered, (rows_in - rejected.len() - next.height()) as u64);
            }
            NodeMetrics::add(&m.rows_out, next.height() as u64);
            m.add_time(start.elapsed());
            if s.on_error == OnError::DeadLetter && !rejected.is_empty() {
                let fail = |e: PolarsError| Error::execution("operator", &s.name, clean(&e));
                let rows: Vec<Rejection> = rejected
                    .iter()
                    .map(|(row, kind, message)| Rejection {
                        file: None,
                        line: None,
                        offset: None,
                        column: None,
                        kind: *kind,
                        message: message.clone(),
                        raw: row_json(&df, *row),
                    })
                    .collect();
                out.side_output(s.id, DEAD_LETTER, dead_letter::frame(&s.name, &rows).map_err(fail)?)?;
            }
            df = next;
        }
        Ok(Some(df))
    }
}

/// Applies one step to `df`: its output, and the rows it rejected (empty under `fail`, where the
/// first bad row is an error naming the operator).
fn run_step(s: &FusedStep, df: &DataFrame) -> Result<(DataFrame, Rejected)> {
    let fail = |e: PolarsError| Error::execution("operator", &s.name, clean(&e));
    let (out, mut rejected) = match s.step.apply(df.clone().lazy()).collect() {
        Ok(out) => (out, Vec::new()),
        Err(e) if s.on_error == OnError::Fail => return Err(fail(e)),
        Err(_) => {
            let mut frames = Vec::new();
            let mut rejected = Vec::new();
            halve(&s.step, df, 0, &mut frames, &mut rejected);
            if frames.is_empty() && df.height() >= 100 {
                // Every row failed: the operator is wrong, not the data.
                let message = rejected.first().map_or(String::new(), |r| r.2.clone());
                return Err(Error::execution(
                    "operator",
                    &s.name,
                    format!("every row of a batch of {} failed, so this is not bad data: {message}", df.height()),
                ));
            }
            let mut frames = frames.into_iter();
            let out = match frames.next() {
                Some(mut out) => {
                    for f in frames {
                        out.vstack_mut_owned(f).map_err(fail)?;
                    }
                    out
                }
                None => s.step.apply(df.clear().lazy()).collect().map_err(fail)?,
            };
            (out, rejected)
        }
    };
    if let Step::Parse { column, .. } = &s.step {
        // Rows are one to one with the input here (a parse adds columns to each row).
        let marks = out.column(MISMATCH_COLUMN).map_err(fail)?.bool().map_err(fail)?.clone();
        let gone: std::collections::HashSet<usize> = rejected.iter().map(|r| r.0).collect();
        let kept_rows: Vec<usize> = (0..df.height()).filter(|r| !gone.contains(r)).collect();
        let mut misses = Vec::new();
        for (i, m) in marks.iter().enumerate() {
            if m == Some(true) {
                let row = kept_rows[i];
                let value = df.column(column).ok().and_then(|c| c.get(row).ok().map(|v| v.to_string())).unwrap_or_default();
                let message = format!("column '{column}': the regex does not match {}", crate::exec::sources::truncate_text(&value, 120));
                if s.on_error == OnError::Fail {
                    return Err(Error::execution("operator", &s.name, message));
                }
                misses.push((row, ErrorKind::NoMatch, message));
            }
        }
        let out = out.filter_seq(&!&marks.fill_null_with_values(false).map_err(fail)?).map_err(fail)?.drop(MISMATCH_COLUMN).map_err(fail)?;
        rejected.extend(misses);
        rejected.sort_by_key(|r| r.0);
        return Ok((out, rejected));
    }
    Ok((out, rejected))
}

/// Finds the rows of `df` (whose first row is row `base` of the step's input) that `step`
/// cannot compute by halving; the outputs of the others go to `frames`, in row order.
fn halve(step: &Step, df: &DataFrame, base: usize, frames: &mut Vec<DataFrame>, rejected: &mut Rejected) {
    match step.apply(df.clone().lazy()).collect() {
        Ok(out) => frames.push(out),
        Err(e) if df.height() == 1 => rejected.push((base, ErrorKind::Expression, clean(&e))),
        Err(_) if df.height() == 0 => {}
        Err(_) => {
            let mid = df.height() / 2;
            halve(step, &df.slice(0, mid), base, frames, rejected);
            halve(step, &df.slice(mid as i64, df.height() - mid), base + mid, frames, rejected);
        }
    }
}

/// Row `row` of `df` as a JSON object (the `raw` column of a rejected computed row).
pub(crate) fn row_json(df: &DataFrame, row: usize) -> String {
    let mut one = df.slice(row as i64, 1);
    if one.schema().contains(SEQ_COLUMN) {
        let _ = one.drop_in_place(SEQ_COLUMN);
    }
    let mut buf = Vec::new();
    match JsonWriter::new(&mut buf).with_json_format(JsonFormat::JsonLines).finish(&mut one) {
        Ok(()) => dead_letter::raw_text(&buf),
        Err(e) => format!("(row {row} cannot be shown: {})", clean(&e)),
    }
}

impl Operator for StatelessOperator {
    fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
        let rows_in = batch.height() as u64;
        let start = Instant::now();
        let Some((result, emitted)) = self.fused(batch.clone()) else {
            return match self.step_by_step(batch, out)? {
                Some(df) if df.height() > 0 => out.collect(df),
                _ => Ok(()),
            };
        };
        let elapsed = start.elapsed() / self.steps.len() as u32;
        let mut rows = rows_in;
        for (s, &next) in self.steps.iter().zip(&emitted) {
            let m = &self.metrics.nodes[s.id];
            NodeMetrics::add(&m.rows_in, rows);
            if matches!(s.step, Step::Filter(_)) {
                NodeMetrics::add(&m.filtered, rows - next);
            }
            NodeMetrics::add(&m.rows_out, next);
            m.add_time(elapsed);
            rows = next;
        }
        if result.height() == 0 {
            return Ok(());
        }
        out.collect(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::operator::Collected;

    fn fs(id: usize, name: &str, step: Step, on_error: OnError) -> FusedStep {
        FusedStep { id, name: name.into(), step, on_error }
    }

    #[test]
    fn fused_steps_count_rows_per_node() {
        let metrics = Arc::new(Metrics::new(3));
        let steps = vec![
            fs(0, "w", Step::With(vec![(col("a") * lit(10)).alias("b")]), OnError::Fail),
            fs(1, "f", Step::Filter(col("b").gt(lit(15))), OnError::Fail),
            fs(2, "d", Step::Drop(vec!["a".into()]), OnError::Fail),
        ];
        let mut op = StatelessOperator::new(steps, metrics.clone());
        let mut out = Collected::default();
        op.process(df!("a" => [1, 2, 3]).unwrap(), &mut out).unwrap();
        assert_eq!(out.batches[0], df!("b" => [20, 30]).unwrap());
        let get = |i: usize| (NodeMetrics::get(&metrics.nodes[i].rows_in), NodeMetrics::get(&metrics.nodes[i].rows_out));
        assert_eq!([get(0), get(1), get(2)], [(3, 3), (3, 2), (2, 2)]);
        assert_eq!(NodeMetrics::get(&metrics.nodes[1].filtered), 1);
    }

    #[test]
    fn a_filter_fused_with_an_explode_counts_the_rows_it_kept() {
        let metrics = Arc::new(Metrics::new(3));
        let steps = vec![
            fs(0, "w", Step::With(vec![lit(1).alias("one")]), OnError::Fail),
            fs(1, "f", Step::Filter(col("k").gt(lit(1))), OnError::Fail),
            fs(2, "e", Step::Explode(vec!["tags".into()]), OnError::Fail),
        ];
        let mut op = StatelessOperator::new(steps, metrics.clone());
        let mut out = Collected::default();
        let tags = Series::new("tags".into(), [Series::new("".into(), ["a", "b", "c"]), Series::new("".into(), ["d", "e", "f"]), Series::new("".into(), ["g", "h", "i"])]);
        let input = DataFrame::new(3, vec![Series::new("k".into(), [1, 2, 3]).into_column(), tags.into_column()]).unwrap();
        op.process(input, &mut out).unwrap();
        assert_eq!(out.batches[0].height(), 6);
        let get = |i: usize| (NodeMetrics::get(&metrics.nodes[i].rows_in), NodeMetrics::get(&metrics.nodes[i].rows_out));
        // The filter kept 2 rows of 3 (not the 6 the explode made of them).
        assert_eq!([get(0), get(1), get(2)], [(3, 3), (3, 2), (2, 6)]);
        assert_eq!(NodeMetrics::get(&metrics.nodes[1].filtered), 1);
    }

    #[test]
    fn failing_step_is_named() {
        let steps = vec![fs(0, "ok", Step::Filter(lit(true)), OnError::Fail), fs(1, "bad", Step::Cast(vec![("s".into(), DataType::Int64)]), OnError::Fail)];
        let mut op = StatelessOperator::new(steps, Arc::new(Metrics::new(2)));
        let e = op.process(df!("s" => ["x"]).unwrap(), &mut Collected::default()).unwrap_err();
        assert!(e.to_string().starts_with("operator 'bad':"), "{e}");
    }

    #[test]
    fn rows_that_fail_are_rejected_and_the_rest_go_on() {
        let metrics = Arc::new(Metrics::new(2));
        let steps = vec![
            fs(0, "f", Step::Filter(col("k").neq(lit(0))), OnError::Fail),
            fs(1, "to_int", Step::Cast(vec![("s".into(), DataType::Int64)]), OnError::DeadLetter),
        ];
        let mut op = StatelessOperator::new(steps, metrics.clone());
        let mut out = Collected::default();
        let input = df!("k" => [1, 0, 1, 1, 1], "s" => ["1", "x", "y", "4", "z"]).unwrap();
        op.process(input, &mut out).unwrap();
        assert_eq!(out.batches[0].column("s").unwrap().i64().unwrap().into_no_null_iter().collect::<Vec<_>>(), [1, 4]);
        assert_eq!(out.sides.len(), 1);
        let dl = &out.sides[0];
        assert_eq!(dl.column("raw").unwrap().str().unwrap().iter().flatten().collect::<Vec<_>>(), [r#"{"k":1,"s":"y"}"#, r#"{"k":1,"s":"z"}"#]);
        let get = |i: usize, c: fn(&NodeMetrics) -> &std::sync::atomic::AtomicU64| NodeMetrics::get(c(&metrics.nodes[i]));
        assert_eq!([get(0, |m| &m.filtered), get(1, |m| &m.rows_in), get(1, |m| &m.rejected), get(1, |m| &m.rows_out)], [1, 4, 2, 2]);
    }
}
