//! A keyed running aggregate (`emit = "changes"`): after every batch it emits the new result of
//! each key the batch touched, as a changelog with an `op` column, `+I` the first time a key
//! appears and `+U` after. With `state_ttl`, a key not updated for that long (processing time) is
//! forgotten: it would start again from `+I`. This is what an unbounded stream needs from a
//! GROUP BY without a window; a bounded run gets the same changelog.
use std::sync::Arc;
use std::time::Instant;

use polars::prelude::*;

use super::aggregate::AggregatePlan;
use crate::error::{Error, Result};
use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::exec::operator::{Collector, Operator, emit_in_batches};
use crate::exec::state::{StateReader, StateWriter};
use crate::plan::expr::clean;

/// The changelog column.
pub const OP_COLUMN: &str = "op";

/// The rows a running aggregate emits for `lf` holding final results, with `op` first.
pub fn with_op(lf: LazyFrame, op: Expr, schema: &Schema) -> LazyFrame {
    let mut cols = vec![op.alias(OP_COLUMN)];
    cols.extend(schema.iter_names().map(|n| col(n.clone())));
    lf.select(cols)
}

/// A join on the group keys, where a null key is a key like any other (a group of its own).
fn nulls_match(how: JoinType) -> JoinArgs {
    let mut args = JoinArgs::new(how);
    args.nulls_equal = true;
    args
}

/// One subtask of a running aggregate: merged partial state per key, and when each key was
/// last updated.
pub struct RunningAggregate {
    name: String,
    node: usize,
    plan: AggregatePlan,
    ttl_ms: Option<i64>,
    state: Option<DataFrame>,
    /// Keys and `__touched` (ms since the operator started).
    touched: Option<DataFrame>,
    started: Instant,
    batch_rows: usize,
    metrics: Arc<Metrics>,
}

impl RunningAggregate {
    /// An empty operator for node `node`.
    pub fn new(name: String, node: usize, plan: AggregatePlan, ttl_ms: Option<i64>, batch_rows: usize, metrics: Arc<Metrics>) -> Self {
        RunningAggregate { name, node, plan, ttl_ms, state: None, touched: None, started: Instant::now(), batch_rows, metrics }
    }

    fn fail(&self, e: PolarsError) -> Error {
        Error::execution("operator", &self.name, clean(&e))
    }

    fn keys(&self) -> Vec<Expr> {
        self.plan.keys.iter().map(|k| col(k.as_str())).collect()
    }

    /// Forgets the keys not updated within the TTL.
    fn expire(&mut self, now: i64) -> PolarsResult<()> {
        let (Some(ttl), Some(touched)) = (self.ttl_ms, &self.touched) else { return Ok(()) };
        let expired = touched.clone().lazy().filter(col("__touched").lt(lit(now - ttl))).select(self.keys()).collect()?;
        if expired.height() == 0 {
            return Ok(());
        }
        let anti = |df: DataFrame, keys: Vec<Expr>| df.lazy().join(expired.clone().lazy(), keys.clone(), keys, nulls_match(JoinType::Anti)).collect();
        self.touched = Some(anti(touched.clone(), self.keys())?);
        if let Some(state) = self.state.take() {
            self.state = Some(anti(state, self.keys())?);
        }
        Ok(())
    }
}

impl Operator for RunningAggregate {
    fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
        let start = Instant::now();
        let m = &self.metrics.nodes[self.node];
        NodeMetrics::add(&m.rows_in, batch.height() as u64);
        let now = self.started.elapsed().as_millis() as i64;
        self.expire(now).map_err(|e| self.fail(e))?;
        let partial = self.plan.partial(batch.lazy()).collect().map_err(|e| self.fail(e))?;
        let keys = self.keys();
        let stamp = || lit(now).cast(DataType::Int64).alias("__touched");
        let touched_now = partial.clone().lazy().select(keys.clone()).with_column(stamp());
        // Which of the batch's keys were there before: `+U` for them, `+I` for the others.
        let seen = match &self.touched {
            Some(t) if !keys.is_empty() => {
                let before = t.clone().lazy().select(keys.clone()).with_column(lit(true).alias("__seen"));
                partial.clone().lazy().select(keys.clone()).join(before, keys.clone(), keys.clone(), nulls_match(JoinType::Left))
            }
            Some(_) => partial.clone().lazy().select([lit(true).alias("__seen")]),
            None => partial.clone().lazy().select(keys.clone()).with_column(lit(false).alias("__seen")),
        };
        let merged = match self.state.take() {
            Some(s) => concat([s.lazy(), partial.clone().lazy()], UnionArgs::default()).map_err(|e| self.fail(e))?,
            None => partial.lazy(),
        };
        let state = self.plan.merge(merged).collect().map_err(|e| self.fail(e))?;
        self.touched = Some(match (self.touched.take(), keys.is_empty()) {
            (Some(t), false) => concat([t.lazy(), touched_now], UnionArgs::default())
                .map_err(|e| self.fail(e))?
                .group_by(keys.clone())
                .agg([col("__touched").max()])
                .collect()
                .map_err(|e| self.fail(e))?,
            (None, false) => touched_now.collect().map_err(|e| self.fail(e))?,
            // One global group: one row.
            (_, true) => DataFrame::new(1, vec![Column::new("__touched".into(), [now])]).map_err(|e| self.fail(e))?,
        });
        let result = self.plan.finalize(state.clone().lazy());
        let changed = if keys.is_empty() {
            result.with_column(
                seen.collect()
                    .map_err(|e| self.fail(e))?
                    .column("__seen")
                    .ok()
                    .and_then(|c| c.get(0).ok())
                    .map_or(lit(false), |v| lit(v == AnyValue::Boolean(true)))
                    .alias("__seen"),
            )
        } else {
            result.join(seen, keys.clone(), keys, nulls_match(JoinType::Inner))
        };
        let op = when(col("__seen").fill_null(lit(false))).then(lit("+U")).otherwise(lit("+I"));
        let schema = self.plan.finalize(DataFrame::empty_with_schema(state.schema()).lazy()).collect_schema().map_err(|e| self.fail(e))?;
        let rows = with_op(changed, op, &schema).collect().map_err(|e| self.fail(e))?;
        self.state = Some(state);
        let m = &self.metrics.nodes[self.node];
        NodeMetrics::add(&m.rows_out, rows.height() as u64);
        m.add_time(start.elapsed());
        emit_in_batches(&rows, self.batch_rows, out)
    }

    /// The state and when each key was touched; times are relative to the operator's start,
    /// so the age of the state is kept too (and TTLs go on counting across a restore).
    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::new(RUNNING_STATE);
        w.frame("state", self.state.as_ref())?.frame("touched", self.touched.as_ref())?;
        w.value("age_ms", &(self.started.elapsed().as_millis() as u64))?;
        Ok(w.finish())
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let r = StateReader::open(state, RUNNING_STATE)?;
        self.state = r.frame("state")?;
        self.touched = r.frame("touched")?;
        let age = std::time::Duration::from_millis(r.value("age_ms")?);
        self.started = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        Ok(())
    }
}

/// The kind of a running aggregate's snapshot.
const RUNNING_STATE: &str = "running aggregate";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::operator::Collected;
    use crate::exec::operators::aggregate::AggSpec;
    use crate::plan::expr::AggFunc;

    #[test]
    fn a_null_key_is_a_group_too() {
        let plan = AggregatePlan { keys: vec!["k".into()], aggs: vec![AggSpec { name: "n".into(), func: AggFunc::Count, arg: None, q: None }], ordered: false };
        let mut op = RunningAggregate::new("r".into(), 0, plan, None, 100, Arc::new(Metrics::new(1)));
        let mut out = Collected::default();
        op.process(df!("k" => [None, Some("a")]).unwrap(), &mut out).unwrap();
        op.process(df!("k" => [None::<&str>]).unwrap(), &mut out).unwrap();
        assert_eq!(out.rows(), 3);
        let last = &out.batches[1];
        assert_eq!(last.column(OP_COLUMN).unwrap().str().unwrap().get(0), Some("+U"));
        assert_eq!(last.column("k").unwrap().str().unwrap().get(0), None);
    }

    #[test]
    fn a_key_past_its_ttl_starts_again() {
        let plan = AggregatePlan { keys: vec!["k".into()], aggs: vec![AggSpec { name: "n".into(), func: AggFunc::Count, arg: None, q: None }], ordered: false };
        // A TTL far above the time between the first two rows on a busy machine (30 ms failed
        // while a benchmark ran beside the tests).
        let mut op = RunningAggregate::new("r".into(), 0, plan, Some(500), 100, Arc::new(Metrics::new(1)));
        let mut out = Collected::default();
        op.process(df!("k" => ["a"]).unwrap(), &mut out).unwrap();
        op.process(df!("k" => ["a"]).unwrap(), &mut out).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(650));
        op.process(df!("k" => ["a"]).unwrap(), &mut out).unwrap();
        let ops: Vec<String> = out.batches.iter().map(|d| d.column(OP_COLUMN).unwrap().str().unwrap().get(0).unwrap().to_string()).collect();
        let counts: Vec<u32> = out.batches.iter().map(|d| d.column("n").unwrap().cast(&DataType::UInt32).unwrap().u32().unwrap().get(0).unwrap()).collect();
        assert_eq!((ops, counts), (vec!["+I".to_string(), "+U".into(), "+I".into()], vec![1, 2, 1]));
    }
}
