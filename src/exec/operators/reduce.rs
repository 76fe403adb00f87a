//! Reductions that run in two phases around an exchange: aggregates, sort / limit / top-n and
//! distinct. The partial phase is chained to its input and shrinks what crosses the exchange;
//! the final phase merges the partial states of a key (or of everything). State is kept as
//! polars frames and compacted as it grows.
use std::sync::Arc;
use std::time::Instant;

use polars::prelude::*;

use super::aggregate::AggregatePlan;
use super::order::{DistinctPlan, SortPlan};
use crate::error::{Error, Result};
use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::exec::operator::{Collector, Operator, emit_in_batches};
use crate::exec::state::{StateReader, StateWriter, stack};
use crate::plan::expr::clean;
use crate::plan::logical::Partitioning;

/// What a two-phase operator computes.
#[derive(Clone, Debug)]
pub enum Reduce {
    /// `key_by` + `aggregate`.
    Aggregate(AggregatePlan),
    /// `sort` and / or `limit`, global or per key.
    Sort(SortPlan),
    /// `distinct`.
    Distinct(DistinctPlan),
}

impl Reduce {
    /// Short name for `explain`.
    pub fn label(&self) -> &'static str {
        match self {
            Reduce::Aggregate(_) => "aggregate",
            Reduce::Sort(s) if s.by.is_empty() => "limit",
            Reduce::Sort(s) if s.limit.is_some() => "top_n",
            Reduce::Sort(_) => "sort",
            Reduce::Distinct(_) => "distinct",
        }
    }

    /// The exchange between the phases, for an input of `schema`.
    pub fn exchange(&self, schema: &Schema) -> Partitioning {
        match self {
            Reduce::Aggregate(a) if a.keyless() => Partitioning::Global,
            Reduce::Aggregate(a) => Partitioning::Hash(a.keys.clone()),
            Reduce::Sort(s) if s.keys.is_empty() => Partitioning::Global,
            Reduce::Sort(s) => Partitioning::Hash(s.keys.clone()),
            Reduce::Distinct(d) => Partitioning::Hash(d.key_columns(schema)),
        }
    }

    /// Raw rows (of `schema`) -> partial state.
    pub fn partial(&self, lf: LazyFrame, schema: &Schema) -> LazyFrame {
        match self {
            Reduce::Aggregate(a) => a.partial(lf),
            Reduce::Sort(s) => s.apply(lf, schema),
            Reduce::Distinct(d) => d.apply(lf, schema),
        }
    }

    /// Partial states (of `schema`) -> one merged state.
    pub fn merge(&self, lf: LazyFrame, schema: &Schema) -> LazyFrame {
        match self {
            Reduce::Aggregate(a) => a.merge(lf),
            _ => self.partial(lf, schema),
        }
    }

    /// Merged state -> output rows.
    pub fn finalize(&self, lf: LazyFrame) -> LazyFrame {
        match self {
            Reduce::Aggregate(a) => a.finalize(lf),
            _ => lf,
        }
    }

    /// True when the result is one row even for no input (a global aggregate).
    fn answers_empty_input(&self) -> bool {
        matches!(self, Reduce::Aggregate(a) if a.keyless())
    }

    /// The whole computation in one go (for schemas and checks on an empty frame).
    pub fn single_phase(&self, lf: LazyFrame, schema: &Schema) -> PolarsResult<LazyFrame> {
        let partial = self.partial(lf, schema);
        let partial_schema = partial.clone().collect_schema()?;
        Ok(self.finalize(self.merge(partial, &partial_schema)))
    }
}

/// Which half of a two-phase reduction an operator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the exchange: raw rows in, partial state out.
    Partial,
    /// After the exchange: partial state in, output rows out.
    Final,
}

/// Frames of at least this many rows are merged by polars' streaming engine: its hash
/// aggregation is several times faster on many groups (a 25 M-row group-by into 10 M keys: 0.8 s
/// against 3.8 s in memory), while the in-memory engine starts faster on small frames. The
/// environment variable `RIVULET_STREAMING_ROWS` changes it (tests set 0, to run every merge
/// through it).
fn streaming_rows() -> usize {
    static ROWS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ROWS.get_or_init(|| std::env::var("RIVULET_STREAMING_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000))
}

/// Collects a merge of `rows` state rows with the engine suited to its size.
fn collect_sized(lf: LazyFrame, rows: usize) -> PolarsResult<DataFrame> {
    if rows >= streaming_rows() { lf.collect_with_engine(Engine::Streaming).map(|r| r.unwrap_single()) } else { lf.collect() }
}

/// The kind of a reduction's snapshot.
pub(super) const REDUCE_STATE: &str = "reduce";

/// One subtask of a reduction: frames of state, compacted as they grow.
pub struct ReduceOperator {
    name: String,
    node: usize,
    reduce: Reduce,
    phase: Phase,
    state: Vec<DataFrame>,
    state_rows: usize,
    compact_at: usize,
    /// The partial phase of an aggregate whose merges hardly shrank its state (most keys
    /// distinct): it sends each batch's partial state on at once instead of merging it again
    /// and again (DuckDB and Flink skip such pre-aggregation too). The final phase merges.
    pass_on: bool,
    batch_rows: usize,
    input_schema: SchemaRef,
    state_schema: SchemaRef,
    metrics: Arc<Metrics>,
}

impl ReduceOperator {
    /// A new, empty operator for node `node`, whose input rows have `input_schema`, and whose
    /// state has `state_schema` (the partial phase's output).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        node: usize,
        reduce: Reduce,
        phase: Phase,
        batch_rows: usize,
        input_schema: SchemaRef,
        state_schema: SchemaRef,
        metrics: Arc<Metrics>,
    ) -> Self {
        let compact_at = 4 * batch_rows;
        ReduceOperator { name, node, reduce, phase, state: Vec::new(), state_rows: 0, compact_at, pass_on: false, batch_rows, input_schema, state_schema, metrics }
    }

    fn fail(&self, e: PolarsError) -> Error {
        Error::execution("operator", &self.name, clean(&e))
    }

    /// Merges all state frames into one (one row per key for aggregates, the top n for a limit).
    fn compact(&mut self) -> Result<()> {
        if self.state.len() <= 1 {
            return Ok(());
        }
        let Some(all) = self.take_state()? else { return Ok(()) };
        let merged = collect_sized(self.reduce.merge(all, &self.state_schema), self.state_rows).map_err(|e| self.fail(e))?;
        if self.phase == Phase::Partial && matches!(self.reduce, Reduce::Aggregate(_)) && 2 * merged.height() > self.state_rows {
            self.pass_on = true;
        }
        self.state_rows = merged.height();
        // Grow the threshold with the state, so a state that does not shrink costs amortised
        // linear time (n log n for a sort).
        self.compact_at = self.compact_at.max(2 * self.state_rows);
        self.state.push(merged);
        Ok(())
    }

    /// Every state frame, taken out as one lazy frame (None when there is none).
    fn take_state(&mut self) -> Result<Option<LazyFrame>> {
        if self.state.is_empty() {
            return Ok(None);
        }
        let frames: Vec<LazyFrame> = self.state.drain(..).map(DataFrame::lazy).collect();
        concat(frames, UnionArgs::default()).map(Some).map_err(|e| self.fail(e))
    }
}

impl Operator for ReduceOperator {
    fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
        let start = Instant::now();
        NodeMetrics::add(&self.metrics.nodes[self.node].rows_in, batch.height() as u64);
        let partial = match self.phase {
            Phase::Partial => self.reduce.partial(batch.lazy(), &self.input_schema).collect().map_err(|e| self.fail(e))?,
            Phase::Final => batch,
        };
        self.state_rows += partial.height();
        self.state.push(partial);
        if self.state_rows >= self.compact_at && !self.pass_on {
            self.compact()?;
        }
        self.metrics.nodes[self.node].add_time(start.elapsed());
        if self.pass_on {
            let m = &self.metrics.nodes[self.node];
            for df in std::mem::take(&mut self.state) {
                NodeMetrics::add(&m.rows_out, df.height() as u64);
                emit_in_batches(&df, self.batch_rows, out)?;
            }
            self.state_rows = 0;
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::new(REDUCE_STATE);
        w.frame("state", stack(&self.state).map_err(|e| self.fail(e))?.as_ref())?;
        w.value("compact_at", &self.compact_at)?;
        w.value("pass_on", &self.pass_on)?;
        Ok(w.finish())
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let r = StateReader::open(state, REDUCE_STATE)?;
        self.state = r.frame("state")?.into_iter().collect();
        self.state_rows = self.state.iter().map(DataFrame::height).sum();
        self.compact_at = r.value("compact_at")?;
        self.pass_on = r.value("pass_on")?;
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Collector) -> Result<()> {
        let start = Instant::now();
        let result = match self.phase {
            // Compacted: one frame of partial state, or none.
            Phase::Partial => {
                self.compact()?;
                match self.state.pop() {
                    Some(df) => df,
                    None => return Ok(()),
                }
            }
            Phase::Final => {
                let rows = self.state_rows;
                match self.take_state()? {
                    // One merge of every state frame, and the final values, in one pass.
                    Some(all) => collect_sized(self.reduce.finalize(self.reduce.merge(all, &self.state_schema)), rows).map_err(|e| self.fail(e))?,
                    // A global aggregate over no rows still answers one row (count 0, others null).
                    None if self.reduce.answers_empty_input() => {
                        let empty = DataFrame::empty_with_schema(&self.state_schema).lazy();
                        self.reduce.finalize(self.reduce.merge(empty, &self.state_schema)).collect().map_err(|e| self.fail(e))?
                    }
                    None => return Ok(()),
                }
            }
        };
        let m = &self.metrics.nodes[self.node];
        m.add_time(start.elapsed());
        NodeMetrics::add(&m.rows_out, result.height() as u64);
        emit_in_batches(&result, self.batch_rows, out)
    }
}
