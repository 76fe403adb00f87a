//! Stateless steps (filter, select, with, rename, drop, cast) and the operator that runs a chain
//! of them as one polars plan per batch.
use std::sync::Arc;
use std::time::Instant;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::exec::operator::{Collector, Operator};
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

/// For a batch that went through a parse step: the first value the regex did not match, as an
/// error naming the operator; otherwise the batch without the marker column.
fn check_parse(df: DataFrame, name: &str, step: &Step) -> Result<DataFrame> {
    let Step::Parse { column, .. } = step else { return Ok(df) };
    let fail = |e: PolarsError| Error::execution("operator", name, clean(&e));
    let marks = df.column(MISMATCH_COLUMN).map_err(fail)?.bool().map_err(fail)?.clone();
    if let Some(row) = marks.iter().position(|m| m == Some(true)) {
        let value = df.column(column).ok().and_then(|c| c.get(row).ok().map(|v| v.to_string())).unwrap_or_default();
        let shown = crate::exec::sources::truncate_text(&value, 120);
        return Err(Error::execution("operator", name, format!("column '{column}': the regex does not match {shown}")));
    }
    df.drop(MISMATCH_COLUMN).map_err(fail)
}

/// A chain of stateless steps run as one polars plan per batch. Each step is one node of the
/// graph; at most one of them is a filter, so every node's row counts stay exact.
pub struct StatelessOperator {
    steps: Vec<(usize, String, Step)>,
    metrics: Arc<Metrics>,
}

impl StatelessOperator {
    /// Fuses `(node id, operator name, step)` triples, in chain order.
    pub fn new(steps: Vec<(usize, String, Step)>, metrics: Arc<Metrics>) -> Self {
        StatelessOperator { steps, metrics }
    }

    /// Runs the steps one by one to name the operator whose step fails.
    fn blame(&self, batch: DataFrame) -> Error {
        let mut df = batch;
        for (_, name, step) in &self.steps {
            match step.apply(df.lazy()).collect() {
                Ok(next) => df = next,
                Err(e) => return Error::execution("operator", name, clean(&e)),
            }
        }
        let names: Vec<_> = self.steps.iter().map(|s| s.1.as_str()).collect();
        Error::execution("operator", &names.join("+"), "failed in the fused plan but not step by step")
    }
}

impl Operator for StatelessOperator {
    fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
        let rows_in = batch.height() as u64;
        let start = Instant::now();
        let lf = self.steps.iter().fold(batch.clone().lazy(), |lf, (_, _, step)| step.apply(lf));
        let result = match lf.collect() {
            Ok(df) => df,
            Err(_) => return Err(self.blame(batch)),
        };
        let result = match self.steps.last() {
            Some((_, name, step @ Step::Parse { .. })) => check_parse(result, name, step)?,
            _ => result,
        };
        let elapsed = start.elapsed() / self.steps.len() as u32;
        let rows_out = result.height() as u64;
        let mut rows = rows_in;
        for (id, _, step) in &self.steps {
            let m = &self.metrics.nodes[*id];
            NodeMetrics::add(&m.rows_in, rows);
            if matches!(step, Step::Filter(_)) {
                NodeMetrics::add(&m.filtered, rows - rows_out);
                rows = rows_out;
            }
            NodeMetrics::add(&m.rows_out, rows);
            m.add_time(elapsed);
        }
        if rows_out == 0 {
            return Ok(());
        }
        out.collect(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keep(Vec<DataFrame>);
    impl Collector for Keep {
        fn collect(&mut self, batch: DataFrame) -> Result<()> {
            self.0.push(batch);
            Ok(())
        }
        fn watermark(&mut self, _: i64) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn fused_steps_count_rows_per_node() {
        let metrics = Arc::new(Metrics::new(3));
        let steps = vec![
            (0, "w".to_string(), Step::With(vec![(col("a") * lit(10)).alias("b")])),
            (1, "f".to_string(), Step::Filter(col("b").gt(lit(15)))),
            (2, "d".to_string(), Step::Drop(vec!["a".into()])),
        ];
        let mut op = StatelessOperator::new(steps, metrics.clone());
        let mut out = Keep(vec![]);
        op.process(df!("a" => [1, 2, 3]).unwrap(), &mut out).unwrap();
        assert_eq!(out.0[0], df!("b" => [20, 30]).unwrap());
        let get = |i: usize| (NodeMetrics::get(&metrics.nodes[i].rows_in), NodeMetrics::get(&metrics.nodes[i].rows_out));
        assert_eq!([get(0), get(1), get(2)], [(3, 3), (3, 2), (2, 2)]);
        assert_eq!(NodeMetrics::get(&metrics.nodes[1].filtered), 1);
    }

    #[test]
    fn failing_step_is_named() {
        let steps = vec![(0, "ok".to_string(), Step::Filter(lit(true))), (1, "bad".to_string(), Step::Cast(vec![("s".into(), DataType::Int64)]))];
        let mut op = StatelessOperator::new(steps, Arc::new(Metrics::new(2)));
        let e = op.process(df!("s" => ["x"]).unwrap(), &mut Keep(vec![])).unwrap_err();
        assert!(e.to_string().starts_with("operator 'bad':"), "{e}");
    }
}
