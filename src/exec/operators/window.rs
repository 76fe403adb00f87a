//! Windows (tumbling, sliding and session) over a keyed stream, in event time or processing
//! time.
//!
//! A watermark says "no row with an earlier event time follows" (see `watermark`); a subtask's
//! watermark is the minimum over its input channels (see `exec::task`). A window fires when the
//! watermark passes its end; it keeps its state `allowed_lateness` longer, and a row that
//! arrives late but within it updates the window (the updated rows of its keys are emitted
//! again). Rows later than that go to the side output `<name>.late` when something reads it,
//! and are counted as dropped otherwise. Processing-time windows follow the wall clock instead.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use polars::prelude::*;

use super::aggregate::AggregatePlan;
use crate::error::{Error, Result};
use crate::exec::metrics::{Metrics, NodeMetrics};
use super::watermark::set_aside_null_times;
use crate::exec::operator::{Collector, Operator, emit_in_batches};
use crate::exec::source::StopRequest;
use crate::exec::state::{StateReader, StateWriter};
use crate::pipeline::OnError;
use crate::plan::expr::clean;

/// Output column: the window's first instant.
pub const WINDOW_START: &str = "window_start";
/// Output column: the instant just after the window.
pub const WINDOW_END: &str = "window_end";
/// The side output of rows too late for their windows.
pub const LATE: &str = "late";

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
    /// Processing time (`time = "PROCTIME()"`): a row's time is the wall clock when the
    /// operator receives it, and windows fire when the wall clock passes their end (`time` is
    /// then unused).
    pub processing_time: bool,
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl WindowPlan {
    /// The time of a row in ms: its event time, or `now` for processing time.
    fn time_of_rows(&self, now: i64) -> Expr {
        if self.processing_time { lit(now) } else { self.time.clone() }
    }

    /// Rows with the window columns (ms) added, one copy per window a row falls in, and the
    /// row's time as `__t` (`now` for processing time).
    fn assign(&self, lf: LazyFrame, now: i64) -> PolarsResult<LazyFrame> {
        let t = col("__t");
        let lf = lf.with_column(self.time_of_rows(now).alias("__t"));
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
        Ok(self.finalize(self.agg.single_phase(self.assign(lf, 0)?.drop(by_name(["__t"], true, false)))))
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
    /// A clean stop without `--drain` discards the open windows instead of firing them.
    stop: StopRequest,
    /// What happens to a row without an event time.
    on_error: OnError,
    /// Processing time: the event-time watermark from upstream, passed on as it advances.
    upstream: i64,
}

impl WindowOperator {
    /// An empty operator for node `node`.
    pub fn new(name: String, node: usize, plan: WindowPlan, batch_rows: usize, metrics: Arc<Metrics>, stop: StopRequest, on_error: OnError) -> Self {
        let emitted = std::collections::BTreeMap::new();
        let fired = BTreeSet::new();
        WindowOperator { name, node, plan, state: None, fired, rows: None, emitted, watermark: i64::MIN, batch_rows, metrics, stop, on_error, upstream: i64::MIN }
    }

    /// The job stops without `--drain`: the windows that have not fired are dropped and
    /// counted (one per key and window), so the summary says what was not emitted.
    fn discard_open(&mut self) -> Result<()> {
        let wm = self.watermark;
        let open = match self.plan.kind {
            WindowKind::Session { gap } => match self.rows.take() {
                Some(rows) => {
                    let sessions = self.plan.sessionize(rows.lazy(), gap).map_err(|e| self.fail(e))?;
                    let mut keys = self.plan.user_keys();
                    keys.push(col(WINDOW_END));
                    let open = sessions.filter(col(WINDOW_END).gt(lit(wm))).select(keys).unique(None, UniqueKeepStrategy::Any);
                    open.collect().map_err(|e| self.fail(e))?.height()
                }
                None => 0,
            },
            _ => match self.state.take() {
                Some(state) => state.lazy().filter(col(WINDOW_END).gt(lit(wm))).collect().map_err(|e| self.fail(e))?.height(),
                None => 0,
            },
        };
        NodeMetrics::add(&self.metrics.nodes[self.node].discarded, open as u64);
        Ok(())
    }

    /// Sessions: keeps the rows, sends the late ones away, and updates sessions that closed
    /// already when a late row (within the lateness) changes them.
    fn session_rows(&mut self, batch: DataFrame, gap: i64, now: i64, out: &mut dyn Collector) -> Result<()> {
        let with_t = batch.lazy().with_column(self.plan.time_of_rows(now).alias("__t"));
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
            let fresh = result.filter_seq(&BooleanChunked::from_slice("".into(), &keep)).map_err(|e| self.fail(e))?;
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
        // Processing time: the clock moves before the rows are placed, so they fall in open windows.
        let now = if self.plan.processing_time { self.clock_to(wall_clock_ms(), out)? } else { 0 };
        let batch = if self.plan.processing_time {
            batch
        } else {
            set_aside_null_times(batch, &self.plan.time, self.on_error, (&self.name, self.node), &self.metrics, out)?
        };
        if let WindowKind::Session { gap } = self.plan.kind {
            let r = self.session_rows(batch, gap, now, out);
            self.metrics.nodes[self.node].add_time(start.elapsed());
            return r;
        }
        let assigned = self.plan.assign(batch.lazy().with_row_index("__row", None), now).and_then(LazyFrame::collect).map_err(|e| self.fail(e))?;
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
        // Processing-time windows follow the wall clock: event time from upstream only passes
        // through (it is tracked apart from the clock), but its end (+inf, the end of the
        // input) fires what is left.
        if self.plan.processing_time {
            if watermark <= self.upstream {
                return Ok(());
            }
            self.upstream = watermark;
            if watermark == i64::MAX {
                if self.stop.discards_open_windows() {
                    // Windows the clock has closed by now are complete: they fire.
                    self.clock_to(wall_clock_ms(), out)?;
                    self.discard_open()?;
                } else {
                    self.fire_until(i64::MAX, out)?;
                }
            }
            return out.watermark(watermark);
        }
        if watermark <= self.watermark {
            return Ok(());
        }
        // +inf after a stop is the stop, not the end of the data: without `--drain`, the
        // windows still open are not complete and do not fire.
        if watermark == i64::MAX && self.stop.discards_open_windows() {
            self.discard_open()?;
            self.watermark = watermark;
            return out.watermark(watermark);
        }
        self.fire_until(watermark, out)?;
        out.watermark(watermark)
    }

    /// Processing time: the wall clock, checked while the input is quiet, fires windows.
    fn on_tick(&mut self, out: &mut dyn Collector) -> Result<()> {
        if self.plan.processing_time {
            self.clock_to(wall_clock_ms(), out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Collector) -> Result<()> {
        // End of input: what has not fired fires now.
        self.on_watermark(i64::MAX, out)
    }

    /// Open and fired-but-late-updatable windows, sessions' rows, and the watermark.
    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::new(WINDOW_STATE);
        let emitted: Vec<(i64, Vec<&String>)> = self.emitted.iter().map(|(end, s)| (*end, s.iter().collect())).collect();
        w.value("watermark", &self.watermark)?.value("upstream", &self.upstream)?.value("fired", &self.fired)?.value("emitted", &emitted)?;
        w.frame("state", self.state.as_ref())?.frame("rows", self.rows.as_ref())?;
        Ok(w.finish())
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let r = StateReader::open(state, WINDOW_STATE)?;
        self.watermark = r.value("watermark")?;
        self.upstream = r.value("upstream")?;
        self.fired = r.value("fired")?;
        let emitted: Vec<(i64, Vec<String>)> = r.value("emitted")?;
        self.emitted = emitted.into_iter().map(|(end, s)| (end, s.into_iter().collect())).collect();
        self.state = r.frame("state")?;
        self.rows = r.frame("rows")?;
        Ok(())
    }
}

/// The kind of a window operator's snapshot.
const WINDOW_STATE: &str = "window";

impl WindowOperator {
    /// Processing time: moves the operator's clock to `now` (never backwards, should the wall
    /// clock step back) and fires the windows that ended by then. Returns the clock.
    fn clock_to(&mut self, now: i64, out: &mut dyn Collector) -> Result<i64> {
        // A window [s, e) fires once the clock reaches e: no row stamped e or later belongs to it.
        if now > self.watermark {
            self.fire_until(now, out)?;
        }
        Ok(self.watermark)
    }

    /// Fires every window that ends by `watermark` and forgets state past its lateness.
    fn fire_until(&mut self, watermark: i64, out: &mut dyn Collector) -> Result<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.metrics.nodes[self.node].watermark(watermark);
        if let WindowKind::Session { gap } = self.plan.kind {
            return self.fire_sessions(gap, out);
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::operator::Collected;
    use crate::exec::operators::aggregate::AggSpec;
    use crate::plan::expr::AggFunc;

    fn plan(kind: WindowKind, lateness: i64, processing_time: bool) -> WindowPlan {
        let aggs = vec![
            AggSpec { name: "n".into(), func: AggFunc::Count, arg: None, q: None },
            AggSpec { name: "s".into(), func: AggFunc::Sum, arg: Some(col("v")), q: None },
        ];
        let agg = AggregatePlan { keys: vec!["k".into(), WINDOW_START.into(), WINDOW_END.into()], aggs, ordered: false };
        WindowPlan { kind, time: col("t"), bound_type: DataType::Int64, lateness, agg, late_output: true, processing_time }
    }

    fn operator(plan: WindowPlan, stop: StopRequest) -> WindowOperator {
        WindowOperator::new("w".into(), 0, plan, 1000, Arc::new(Metrics::new(1)), stop, OnError::DeadLetter)
    }

    /// Emitted rows as sorted text lines.
    fn rows(out: &Collected) -> Vec<String> {
        let mut lines = Vec::new();
        for df in &out.batches {
            for i in 0..df.height() {
                let row = df.get_row(i).unwrap();
                lines.push(row.0.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
            }
        }
        lines.sort();
        lines
    }

    /// Batches of (key, time ms, value), in and out of order, with watermarks between them.
    fn script() -> Vec<(DataFrame, i64)> {
        let batch = |k: &[&str], t: &[i64], v: &[i64]| df!("k" => k, "t" => t, "v" => v).unwrap();
        vec![
            (batch(&["a", "b", "a"], &[1_000, 2_000, 9_000], &[1, 2, 3]), 5_000),
            (batch(&["a", "b"], &[12_000, 3_000], &[4, 5]), 11_000),
            // 4_000 is late for [0, 10 s), but within the lateness: an update.
            (batch(&["a", "b"], &[4_000, 25_000], &[6, 7]), 21_000),
            (batch(&["b", "a"], &[26_000, 1_500], &[8, 9]), 27_000),
            (batch(&["a"], &[40_000], &[10]), i64::MAX),
        ]
    }

    fn run(op: &mut WindowOperator, steps: &[(DataFrame, i64)], out: &mut Collected) {
        for (batch, watermark) in steps {
            op.process(batch.clone(), out).unwrap();
            op.on_watermark(*watermark, out).unwrap();
        }
    }

    #[test]
    fn a_restored_window_operator_goes_on_as_the_original() {
        for kind in [WindowKind::Tumbling { size: 10_000 }, WindowKind::Sliding { size: 10_000, slide: 5_000 }, WindowKind::Session { gap: 5_000 }] {
            let steps = script();
            for cut in 1..steps.len() {
                let (mut whole, mut expected) = (operator(plan(kind.clone(), 10_000, false), StopRequest::default()), Collected::default());
                run(&mut whole, &steps, &mut expected);
                let (mut first, mut got) = (operator(plan(kind.clone(), 10_000, false), StopRequest::default()), Collected::default());
                run(&mut first, &steps[..cut], &mut got);
                let state = first.snapshot().unwrap();
                drop(first);
                let mut second = operator(plan(kind.clone(), 10_000, false), StopRequest::default());
                second.restore(&state).unwrap();
                run(&mut second, &steps[cut..], &mut got);
                assert_eq!(rows(&got), rows(&expected), "{kind:?}, restored after step {cut}");
                assert_eq!(got.sides.iter().map(DataFrame::height).sum::<usize>(), expected.sides.iter().map(DataFrame::height).sum::<usize>());
            }
        }
    }

    #[test]
    fn a_stop_without_drain_discards_open_windows_and_counts_them() {
        let stop = StopRequest::new(false);
        let mut op = operator(plan(WindowKind::Tumbling { size: 10_000 }, 0, false), stop.clone());
        let mut out = Collected::default();
        op.process(df!("k" => ["a", "b", "a"], "t" => [1_000i64, 2_000, 15_000], "v" => [1i64, 2, 3]).unwrap(), &mut out).unwrap();
        op.on_watermark(12_000, &mut out).unwrap();
        assert_eq!(out.rows(), 2, "[0, 10 s) fired for a and b");
        stop.flag().store(true, std::sync::atomic::Ordering::SeqCst);
        op.finish(&mut out).unwrap();
        assert_eq!(out.rows(), 2, "the open window [10 s, 20 s) was not fired");
        assert_eq!(NodeMetrics::get(&op.metrics.nodes[0].discarded), 1);

        // With --drain, the same stop fires it.
        let stop = StopRequest::new(true);
        let mut op = operator(plan(WindowKind::Tumbling { size: 10_000 }, 0, false), stop.clone());
        let mut out = Collected::default();
        op.process(df!("k" => ["a"], "t" => [15_000i64], "v" => [3i64]).unwrap(), &mut out).unwrap();
        stop.flag().store(true, std::sync::atomic::Ordering::SeqCst);
        op.finish(&mut out).unwrap();
        assert_eq!(out.rows(), 1);
    }

    #[test]
    fn processing_time_windows_fire_by_the_wall_clock() {
        let mut op = operator(plan(WindowKind::Tumbling { size: 100 }, 0, true), StopRequest::default());
        let mut out = Collected::default();
        let before = wall_clock_ms();
        // No time column is read: rows are stamped when they arrive.
        op.process(df!("k" => ["a", "a", "b"], "v" => [1i64, 2, 3]).unwrap(), &mut out).unwrap();
        // Event time from upstream does not fire processing-time windows, but it passes on.
        let mut watermarks = WatermarksSeen::default();
        op.on_watermark(5_000, &mut watermarks).unwrap();
        op.on_watermark(i64::MAX - 1, &mut watermarks).unwrap();
        assert_eq!((watermarks.0.as_slice(), watermarks.1), ([5_000, i64::MAX - 1].as_slice(), 0));
        std::thread::sleep(std::time::Duration::from_millis(250));
        op.on_tick(&mut out).unwrap();
        assert_eq!(out.rows(), 2, "{:?}", out.batches);
        let df = &out.batches[0];
        let start = df.column(WINDOW_START).unwrap().i64().unwrap().get(0).unwrap();
        assert!(start >= before - 100 && start <= wall_clock_ms(), "window starts at {start}, the run at {before}");
        let total: i64 = out.batches.iter().map(|d| d.column("n").unwrap().cast(&DataType::Int64).unwrap().i64().unwrap().sum().unwrap()).sum();
        assert_eq!(total, 3);
    }

    /// Watermarks passed on, and rows emitted.
    #[derive(Default)]
    struct WatermarksSeen(Vec<i64>, usize);

    impl Collector for WatermarksSeen {
        fn collect(&mut self, batch: DataFrame) -> Result<()> {
            self.1 += batch.height();
            Ok(())
        }
        fn watermark(&mut self, watermark: i64) -> Result<()> {
            self.0.push(watermark);
            Ok(())
        }
        fn side_output(&mut self, _: usize, _: &str, _: DataFrame) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn rows_without_event_time_are_rejected() {
        let mut op = operator(plan(WindowKind::Tumbling { size: 10_000 }, 0, false), StopRequest::default());
        let mut out = Collected::default();
        op.process(df!("k" => ["a", "b"], "t" => [Some(1_000i64), None], "v" => [1i64, 2]).unwrap(), &mut out).unwrap();
        op.finish(&mut out).unwrap();
        assert_eq!(out.rows(), 1);
        assert_eq!(out.sides[0].column("kind").unwrap().str().unwrap().get(0), Some("null_time"));
        assert_eq!(NodeMetrics::get(&op.metrics.nodes[0].rejected), 1);
        assert_eq!(NodeMetrics::get(&op.metrics.nodes[0].dropped), 0);

        let mut strict = WindowOperator::new("w".into(), 0, plan(WindowKind::Tumbling { size: 10_000 }, 0, false), 10, Arc::new(Metrics::new(1)), StopRequest::default(), OnError::Fail);
        let err = strict.process(df!("k" => ["b"], "t" => [None::<i64>], "v" => [2i64]).unwrap(), &mut out).unwrap_err().to_string();
        assert!(err.contains("'w'") && err.contains("null_time") && err.contains("\"k\":\"b\""), "{err}");
    }
}
