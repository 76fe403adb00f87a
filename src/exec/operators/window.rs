//! Event time: the watermark operator, and windows (tumbling and sliding) over a keyed stream.
//!
//! A watermark says "no row with an earlier event time follows". The watermark operator makes
//! them from a time column with bounded out-of-orderness (`max_delay`), per subtask, and sends
//! +inf at the end of a bounded input; downstream, a subtask's watermark is the minimum over
//! its input channels (see `exec::task`). A window fires when the watermark passes its end; it
//! keeps its state `allowed_lateness` longer, and a row that arrives late but within it updates
//! the window (the updated rows of its keys are emitted again). Rows later than that go to the
//! side output `<name>.late` when something reads it, and are counted as dropped otherwise.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use polars::prelude::*;

use super::aggregate::AggregatePlan;
use crate::error::{Error, Result};
use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::exec::operator::{Collector, Operator, emit_in_batches};
use crate::plan::expr::clean;

/// Output column: the window's first instant.
pub const WINDOW_START: &str = "window_start";
/// Output column: the instant just after the window.
pub const WINDOW_END: &str = "window_end";
/// The side output of rows too late for their windows.
pub const LATE: &str = "late";

/// Event time of a row, in milliseconds, from its time column of type `dtype` (datetime,
/// date or integer milliseconds). Err names what is accepted.
pub fn time_ms(column: &str, dtype: &DataType) -> std::result::Result<Expr, String> {
    let c = col(column);
    Ok(match dtype {
        DataType::Datetime(..) => c.dt().timestamp(TimeUnit::Milliseconds),
        DataType::Date => c.cast(DataType::Datetime(TimeUnit::Milliseconds, None)).dt().timestamp(TimeUnit::Milliseconds),
        d if d.is_integer() => c.cast(DataType::Int64),
        other => {
            return Err(format!(
                "column '{column}' is {other}, but event time needs a datetime, a date or integer milliseconds (parse strings with `with`, e.g. STRPTIME)"
            ));
        }
    })
}

/// Makes watermarks from a time column: the largest event time seen minus `max_delay`.
pub struct WatermarkOperator {
    time: Expr,
    max_delay: i64,
    current: i64,
    name: String,
    node: usize,
    metrics: Arc<Metrics>,
    /// After this long without rows, the stream is declared idle.
    idle_timeout: Option<std::time::Duration>,
    last_data: Instant,
    idle: bool,
}

impl WatermarkOperator {
    /// Watermarks from event times `time` (milliseconds), `max_delay` ms behind the latest, for
    /// node `node`; idle after `idle_timeout` ms without rows.
    pub fn new(name: String, node: usize, time: Expr, max_delay: i64, idle_timeout: Option<i64>, metrics: Arc<Metrics>) -> Self {
        let idle_timeout = idle_timeout.map(|ms| std::time::Duration::from_millis(ms as u64));
        WatermarkOperator { time, max_delay, current: i64::MIN, name, node, metrics, idle_timeout, last_data: Instant::now(), idle: false }
    }
}

impl Operator for WatermarkOperator {
    fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
        let latest = batch
            .clone()
            .lazy()
            .select([self.time.clone().max().alias("t")])
            .collect()
            .map_err(|e| Error::execution("operator", &self.name, clean(&e)))?
            .column("t")
            .ok()
            .and_then(|c| c.get(0).ok())
            .and_then(|v| v.extract::<i64>());
        let m = &self.metrics.nodes[self.node];
        NodeMetrics::add(&m.rows_in, batch.height() as u64);
        NodeMetrics::add(&m.rows_out, batch.height() as u64);
        self.last_data = Instant::now();
        self.idle = false;
        out.collect(batch)?;
        if let Some(t) = latest {
            let w = t.saturating_sub(self.max_delay);
            if w > self.current {
                self.current = w;
                self.metrics.nodes[self.node].watermark(w);
                out.watermark(w)?;
            }
        }
        Ok(())
    }

    /// Watermarks from upstream are replaced by this operator's own.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut dyn Collector) -> Result<()> {
        Ok(())
    }

    /// Idleness is decided here, from this operator's own timeout.
    fn on_idle(&mut self, _out: &mut dyn Collector) -> Result<()> {
        Ok(())
    }

    /// No rows for `idle_timeout`: the stream is idle, so it does not hold windows back.
    fn on_tick(&mut self, out: &mut dyn Collector) -> Result<()> {
        if let Some(timeout) = self.idle_timeout
            && !self.idle
            && self.last_data.elapsed() >= timeout
        {
            self.idle = true;
            out.idle()?;
        }
        Ok(())
    }

    /// The end of a bounded input: every window can fire.
    fn finish(&mut self, out: &mut dyn Collector) -> Result<()> {
        self.current = i64::MAX;
        out.watermark(i64::MAX)
    }
}

/// How rows fall into windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Back-to-back windows of `size` ms.
    Tumbling {
        /// Length in ms.
        size: i64,
    },
    /// Windows of `size` ms starting every `slide` ms (`size` a multiple of `slide`).
    Sliding {
        /// Length in ms.
        size: i64,
        /// Step in ms.
        slide: i64,
    },
    /// Per key, rows less than `gap` ms apart are one session; it ends `gap` after its last row.
    Session {
        /// Inactivity that ends a session, ms.
        gap: i64,
    },
}

/// What a window operator computes.
#[derive(Clone, Debug)]
pub struct WindowPlan {
    /// Window shape.
    pub kind: WindowKind,
    /// The event time column, as milliseconds.
    pub time: Expr,
    /// Type of the window bounds in the output (the time column's, datetimes in ms).
    pub bound_type: DataType,
    /// How long after its end a window still takes late rows (ms).
    pub lateness: i64,
    /// The aggregate, whose keys are the user's keys, then `window_start`, `window_end` (ms).
    pub agg: AggregatePlan,
    /// Rows too late go to the side output `late` (else they are counted as dropped).
    pub late_output: bool,
}

impl WindowPlan {
    /// Rows with the window columns (ms) added, one copy per window a row falls in, and the
    /// event time as `__t`.
    fn assign(&self, lf: LazyFrame) -> PolarsResult<LazyFrame> {
        let t = col("__t");
        let lf = lf.with_column(self.time.clone().alias("__t"));
        let start_at = |step: i64, back: i64| {
            let s = t.clone() - ((t.clone() % lit(step)) + lit(step)) % lit(step) - lit(back);
            s.alias(WINDOW_START)
        };
        Ok(match self.kind {
            WindowKind::Tumbling { size } => lf.with_columns([start_at(size, 0)]).with_columns([(col(WINDOW_START) + lit(size)).alias(WINDOW_END)]),
            WindowKind::Sliding { size, slide } => {
                let copies: Vec<LazyFrame> = (0..size / slide)
                    .map(|k| lf.clone().with_columns([start_at(slide, k * slide)]).with_columns([(col(WINDOW_START) + lit(size)).alias(WINDOW_END)]))
                    .collect();
                concat(copies, UnionArgs::default())?
            }
            WindowKind::Session { gap } => return self.sessionize(lf, gap),
        })
    }

    /// The user's keys (without the window bounds).
    fn user_keys(&self) -> Vec<Expr> {
        self.agg.keys.iter().filter(|k| *k != WINDOW_START && *k != WINDOW_END).map(|k| col(k.as_str())).collect()
    }

    /// Session bounds for rows with `__t`: per key, sorted by time, a new session starts where
    /// the gap to the previous row is `gap` or more; it spans its first row to its last + gap.
    fn sessionize(&self, lf: LazyFrame, gap: i64) -> PolarsResult<LazyFrame> {
        let keys = self.user_keys();
        let over = |e: Expr| if keys.is_empty() { Ok(e) } else { e.over(keys.clone()) };
        let mut sort_by = keys.clone();
        sort_by.push(col("__t"));
        let prev = over(col("__t").shift(lit(1)))?;
        let new = prev.clone().is_null().or((col("__t") - prev).gt_eq(lit(gap)));
        let mut session_keys = keys.clone();
        session_keys.push(col("__sid"));
        Ok(lf
            .filter(col("__t").is_not_null())
            .sort_by_exprs(sort_by, SortMultipleOptions::default())
            .with_column(over(new.cast(DataType::Int64).cum_sum(false))?.alias("__sid"))
            .with_columns([
                col("__t").min().over(session_keys.clone())?.alias(WINDOW_START),
                (col("__t").max().over(session_keys)? + lit(gap)).alias(WINDOW_END),
            ])
            .drop(by_name(["__sid"], true, false)))
    }

    /// The schema of the window output for input rows of `schema`.
    pub fn output(&self, lf: LazyFrame) -> PolarsResult<LazyFrame> {
        Ok(self.finalize(self.agg.single_phase(self.assign(lf)?.drop(by_name(["__t"], true, false)))))
    }

    /// Final rows with the window bounds in the output type.
    fn finalize(&self, lf: LazyFrame) -> LazyFrame {
        lf.with_columns([col(WINDOW_START).cast(self.bound_type.clone()), col(WINDOW_END).cast(self.bound_type.clone())])
    }
}

/// One subtask of a window operator: the partial aggregates of every open window.
pub struct WindowOperator {
    name: String,
    node: usize,
    plan: WindowPlan,
    /// Partial state: keys, window bounds (ms), partial aggregates.
    state: Option<DataFrame>,
    /// Ends of the windows that fired already.
    fired: BTreeSet<i64>,
    /// Sessions: the raw rows (with `__t`) of sessions not yet expired.
    rows: Option<DataFrame>,
    /// Sessions: what was emitted, per session end, so an unchanged session is not emitted again.
    emitted: std::collections::BTreeMap<i64, std::collections::HashSet<String>>,
    watermark: i64,
    batch_rows: usize,
    metrics: Arc<Metrics>,
}

impl WindowOperator {
    /// An empty operator for node `node`.
    pub fn new(name: String, node: usize, plan: WindowPlan, batch_rows: usize, metrics: Arc<Metrics>) -> Self {
        let emitted = std::collections::BTreeMap::new();
        WindowOperator { name, node, plan, state: None, fired: BTreeSet::new(), rows: None, emitted, watermark: i64::MIN, batch_rows, metrics }
    }

    /// Sessions: keeps the rows, sends the late ones away, and updates sessions that closed
    /// already when a late row (within the lateness) changes them.
    fn session_rows(&mut self, batch: DataFrame, gap: i64, out: &mut dyn Collector) -> Result<()> {
        let with_t = batch.lazy().with_column(self.plan.time.clone().alias("__t"));
        let expired = self.watermark.saturating_sub(self.plan.lateness).saturating_sub(gap);
        let late_rows = col("__t").is_null().or(col("__t").lt_eq(lit(expired)));
        let late = with_t.clone().filter(late_rows.clone()).drop(by_name(["__t"], true, false)).collect().map_err(|e| self.fail(e))?;
        let kept = with_t.filter(late_rows.not()).collect().map_err(|e| self.fail(e))?;
        self.late(late, out)?;
        let closes_late =
            kept.column("__t").map_err(|e| self.fail(e))?.i64().map_err(|e| self.fail(e))?.into_no_null_iter().any(|t| t.saturating_add(gap) <= self.watermark);
        self.rows = Some(match self.rows.take() {
            Some(mut rows) => {
                rows.vstack_mut_owned(kept).map_err(|e| self.fail(e))?;
                rows
            }
            None => kept,
        });
        if closes_late { self.fire_sessions(gap, out) } else { Ok(()) }
    }

    /// Sessions: emits every session that ended by the watermark and was not emitted as it is
    /// now; forgets sessions past their lateness.
    fn fire_sessions(&mut self, gap: i64, out: &mut dyn Collector) -> Result<()> {
        let Some(rows) = &self.rows else { return Ok(()) };
        let wm = self.watermark;
        let sessions = self.plan.sessionize(rows.clone().lazy(), gap).map_err(|e| self.fail(e))?;
        let due = sessions.clone().filter(col(WINDOW_END).lt_eq(lit(wm))).drop(by_name(["__t"], true, false));
        let result = self.plan.finalize(self.plan.agg.single_phase(due)).collect().map_err(|e| self.fail(e))?;
        if result.height() > 0 {
            // A session is emitted again only when a late row changed it.
            let text: Vec<Expr> = result.get_column_names().iter().map(|n| col(n.as_str()).cast(DataType::String).fill_null(lit("\u{0}"))).collect();
            let signatures = result.clone().lazy().select([concat_str(text, "\u{1f}", false).alias("s")]).collect().map_err(|e| self.fail(e))?;
            let ends = result.column(WINDOW_END).map_err(|e| self.fail(e))?.cast(&DataType::Int64).map_err(|e| self.fail(e))?;
            let ends = ends.i64().map_err(|e| self.fail(e))?.clone();
            let mut keep = Vec::with_capacity(result.height());
            for (s, end) in signatures.column("s").map_err(|e| self.fail(e))?.str().map_err(|e| self.fail(e))?.iter().zip(ends.iter()) {
                let (s, end) = (s.unwrap_or_default().to_string(), end.unwrap_or(i64::MIN));
                keep.push(self.emitted.entry(end).or_default().insert(s));
            }
            let fresh = result.filter(&BooleanChunked::from_slice("".into(), &keep)).map_err(|e| self.fail(e))?;
            NodeMetrics::add(&self.metrics.nodes[self.node].rows_out, fresh.height() as u64);
            emit_in_batches(&fresh, self.batch_rows, out)?;
        }
        // Rows of sessions past their lateness are forgotten.
        let horizon = wm.saturating_sub(self.plan.lateness);
        let live =
            sessions.filter(col(WINDOW_END).gt(lit(horizon))).drop(by_name([WINDOW_START, WINDOW_END], true, false)).collect().map_err(|e| self.fail(e))?;
        self.rows = Some(live);
        self.emitted = self.emitted.split_off(&horizon.saturating_add(1));
        Ok(())
    }

    /// Rows too late: counted, and sent to the `late` side output when it is read.
    fn late(&mut self, late: DataFrame, out: &mut dyn Collector) -> Result<()> {
        if late.height() > 0 {
            NodeMetrics::add(&self.metrics.nodes[self.node].dropped, late.height() as u64);
            if self.plan.late_output {
                out.side_output(self.node, LATE, late)?;
            }
        }
        Ok(())
    }

    fn fail(&self, e: PolarsError) -> Error {
        Error::execution("operator", &self.name, clean(&e))
    }

    /// Emits the final rows of the state rows `rows` selects.
    fn emit(&mut self, rows: Expr, out: &mut dyn Collector) -> Result<()> {
        let Some(state) = &self.state else { return Ok(()) };
        let merged = self.plan.agg.finalize(state.clone().lazy().filter(rows));
        let result = self.plan.finalize(merged).collect().map_err(|e| self.fail(e))?;
        NodeMetrics::add(&self.metrics.nodes[self.node].rows_out, result.height() as u64);
        emit_in_batches(&result, self.batch_rows, out)
    }
}

impl Operator for WindowOperator {
    fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
        let start = Instant::now();
        let m = &self.metrics.nodes[self.node];
        NodeMetrics::add(&m.rows_in, batch.height() as u64);
        if let WindowKind::Session { gap } = self.plan.kind {
            let r = self.session_rows(batch, gap, out);
            self.metrics.nodes[self.node].add_time(start.elapsed());
            return r;
        }
        let assigned = self.plan.assign(batch.lazy().with_row_index("__row", None)).and_then(LazyFrame::collect).map_err(|e| self.fail(e))?;
        // A row whose every window has closed for good is late.
        let open = col(WINDOW_END).gt(lit(self.watermark.saturating_sub(self.plan.lateness)));
        let live = assigned.clone().lazy().filter(open.clone().and(col("__t").is_not_null())).collect().map_err(|e| self.fail(e))?;
        let live_rows: BTreeSet<u32> = live.column("__row").map_err(|e| self.fail(e))?.u32().map_err(|e| self.fail(e))?.into_no_null_iter().collect();
        let late = assigned
            .lazy()
            .filter(col("__row").is_in(lit(Series::new("".into(), live_rows.iter().copied().collect::<Vec<u32>>())).implode(false), false).not())
            .unique_stable(Some(by_name(["__row"], true, false)), UniqueKeepStrategy::First)
            .drop(by_name(["__row", "__t", WINDOW_START, WINDOW_END], true, false))
            .collect()
            .map_err(|e| self.fail(e))?;
        self.late(late, out)?;
        let m = &self.metrics.nodes[self.node];
        let partial = self.plan.agg.partial(live.lazy().drop(by_name(["__row", "__t"], true, false))).collect().map_err(|e| self.fail(e))?;
        // Windows that fired already and get late rows: emit their updated rows.
        let updated: Vec<i64> = partial
            .column(WINDOW_END)
            .map_err(|e| self.fail(e))?
            .i64()
            .map_err(|e| self.fail(e))?
            .into_no_null_iter()
            .filter(|e| self.fired.contains(e))
            .collect();
        let merged = match self.state.take() {
            Some(s) => concat([s.lazy(), partial.clone().lazy()], UnionArgs::default()).map_err(|e| self.fail(e))?,
            None => partial.clone().lazy(),
        };
        self.state = Some(self.plan.agg.merge(merged).collect().map_err(|e| self.fail(e))?);
        if !updated.is_empty() {
            let mut keys: Vec<String> = self.plan.agg.keys.clone();
            keys.retain(|k| k != WINDOW_END && k != WINDOW_START);
            let mut touched = partial.lazy().filter(col(WINDOW_END).is_in(lit(Series::new("".into(), updated)).implode(false), false));
            let key_cols: Vec<Expr> = self.plan.agg.keys.iter().map(|k| col(k.as_str())).collect();
            touched = touched.select(key_cols.clone());
            let state = self.state.clone().expect("merged");
            let mut semi = JoinArgs::new(JoinType::Semi);
            // A null key is a group like any other.
            semi.nulls_equal = true;
            let rows = state.lazy().join(touched, key_cols.clone(), key_cols, semi);
            let result = self.plan.finalize(self.plan.agg.finalize(rows)).collect().map_err(|e| self.fail(e))?;
            NodeMetrics::add(&m.rows_out, result.height() as u64);
            emit_in_batches(&result, self.batch_rows, out)?;
        }
        m.add_time(start.elapsed());
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut dyn Collector) -> Result<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.metrics.nodes[self.node].watermark(watermark);
        if let WindowKind::Session { gap } = self.plan.kind {
            self.fire_sessions(gap, out)?;
            return out.watermark(watermark);
        }
        if let Some(state) = &self.state {
            // Windows whose end the watermark passed fire once.
            let ends = state.column(WINDOW_END).map_err(|e| self.fail(e))?.i64().map_err(|e| self.fail(e))?;
            let due: BTreeSet<i64> = ends.into_no_null_iter().filter(|&e| e <= watermark && !self.fired.contains(&e)).collect();
            if !due.is_empty() {
                let due_list: Vec<i64> = due.iter().copied().collect();
                self.emit(col(WINDOW_END).is_in(lit(Series::new("".into(), due_list)).implode(false), false), out)?;
                self.fired.extend(due);
            }
            // State past its lateness is dropped.
            let keep = col(WINDOW_END).gt(lit(watermark.saturating_sub(self.plan.lateness)));
            let state = self.state.take().expect("state");
            self.state = Some(state.lazy().filter(keep).collect().map_err(|e| self.fail(e))?);
            let horizon = watermark.saturating_sub(self.plan.lateness);
            self.fired.retain(|&e| e > horizon);
        }
        out.watermark(watermark)
    }

    fn finish(&mut self, out: &mut dyn Collector) -> Result<()> {
        // End of input: what has not fired fires now.
        self.on_watermark(i64::MAX, out)
    }
}
