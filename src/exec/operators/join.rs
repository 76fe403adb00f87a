//! Equi-joins of two inputs (port 0 = left, port 1 = right). The right side is the build side:
//! it is collected until its input ends; left batches then stream through, joined with it.
//! Each join costs time in proportion to the right side too, so left batches are gathered
//! until they are about as large as it (up to [`MAX_GATHER_ROWS`]) or have waited
//! [`MAX_GATHER_WAIT`]: joining 65 K-row batches one by one against 1.5 M right rows would
//! redo the right side's work for every batch.
//! Right and full joins stream their left rows the same way and note which right rows matched;
//! the right rows that never did go out at the end, with null left columns. Inputs arrive
//! either hash-partitioned on the keys (both sides) or with the right side broadcast to every
//! subtask (not for right and full joins: each subtask would add the unmatched rows again).
use std::sync::Arc;
use std::time::Instant;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::exec::join_filter::JoinFilterSlot;
use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::exec::operator::{Collector, Operator, emit_in_batches};
use crate::exec::state::{StateReader, StateWriter, stack};
use crate::plan::expr::clean;

use super::hash_index::HashIndex;
pub use super::shared_build::SharedBuild;
use super::shared_build::{Build, Claim};
use super::stateless::SEQ_COLUMN;

/// Join types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// Matching pairs.
    Inner,
    /// All left rows, matched or not.
    Left,
    /// All right rows, matched or not.
    Right,
    /// All rows of both sides.
    Full,
    /// Left rows that have a match (left columns only).
    Semi,
    /// Left rows that have no match (left columns only).
    Anti,
}

impl How {
    /// Parses the pipeline file's name.
    pub fn parse(s: &str) -> Option<How> {
        Some(match s {
            "inner" => How::Inner,
            "left" => How::Left,
            "right" => How::Right,
            "full" | "outer" => How::Full,
            "semi" => How::Semi,
            "anti" => How::Anti,
            _ => return None,
        })
    }

    /// True for right and full joins: their right rows that match no left row are output too.
    pub fn keeps_unmatched_right(self) -> bool {
        matches!(self, How::Right | How::Full)
    }

    fn polars(self) -> JoinType {
        match self {
            How::Inner => JoinType::Inner,
            How::Left => JoinType::Left,
            How::Right => JoinType::Right,
            How::Full => JoinType::Full,
            How::Semi => JoinType::Semi,
            How::Anti => JoinType::Anti,
        }
    }
}

/// How the inputs reach the join's subtasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Every subtask gets the whole right side; the left side is not moved.
    BroadcastRight,
    /// Both sides hash-partitioned on their keys.
    Hash,
}

/// What a join computes.
#[derive(Clone, Debug)]
pub struct JoinPlan {
    /// Join type.
    pub how: How,
    /// Key columns of the left input.
    pub left_on: Vec<String>,
    /// Key columns of the right input.
    pub right_on: Vec<String>,
    /// Appended to right columns whose names clash with left ones.
    pub suffix: String,
    /// Broadcast or shuffle.
    pub strategy: Strategy,
    /// Output columns in order (a right join presents its keys like the others do).
    pub layout: Vec<String>,
    /// The subtask reads its right input to the end before it takes any left batch, so the
    /// left side waits upstream (backpressure) instead of being buffered here. Set by the
    /// optimizer where no other consumer depends on the left side's producers.
    pub build_first: bool,
    /// The right key column whose values go to the left side's reader once the right side is
    /// read (see [`crate::exec::join_filter`]). Set by the optimizer.
    pub filter_key: Option<String>,
}

impl JoinPlan {
    /// Joins two frames. Key columns appear once (SQL `USING`): the left key columns, filled
    /// from the right side for rows only the right side has.
    pub fn apply(&self, left: LazyFrame, right: LazyFrame) -> LazyFrame {
        let on = |cols: &[String]| cols.iter().map(|c| col(c.as_str())).collect::<Vec<_>>();
        // Input order after a join is the left side's; the right side's sequence would only
        // come back as a suffixed column.
        let right = right.drop(by_name([SEQ_COLUMN], false, false));
        let args = JoinArgs::new(self.how.polars()).with_coalesce(JoinCoalesce::CoalesceColumns).with_suffix(Some(self.suffix.as_str().into()));
        let joined = left.join(right, on(&self.left_on), on(&self.right_on), args);
        if self.how != How::Right {
            return joined;
        }
        // polars names a right join's keys after the right side and puts them with its columns.
        let renamed: Vec<(&String, &String)> = self.right_on.iter().zip(&self.left_on).filter(|(r, l)| r != l).collect();
        let joined = if renamed.is_empty() { joined } else { joined.rename(renamed.iter().map(|p| p.0.as_str()), renamed.iter().map(|p| p.1.as_str()), true) };
        joined.select(self.layout.iter().map(|c| col(c.as_str())).collect::<Vec<_>>())
    }

    /// The rows of a right or full join for `right` rows that matched no left row (of
    /// `left_schema`): their keys under the left side's names, the left side's other columns
    /// null, in the join's layout.
    pub fn right_only(&self, left_schema: &Schema, right: DataFrame) -> PolarsResult<DataFrame> {
        let full = JoinPlan { how: How::Full, ..self.clone() };
        let rows = full.apply(DataFrame::empty_with_schema(left_schema).lazy(), right.lazy());
        rows.select(self.layout.iter().map(|c| col(c.as_str())).collect::<Vec<_>>()).collect()
    }

    /// The output columns of a join of these inputs: left columns (keys included), then the
    /// right side's other columns, suffixed where a name clashes.
    pub fn layout_for(&self, left: &Schema, right: &Schema) -> PolarsResult<Vec<String>> {
        let full = JoinPlan { how: How::Full, layout: Vec::new(), ..self.clone() };
        let schema = full.apply(DataFrame::empty_with_schema(left).lazy(), DataFrame::empty_with_schema(right).lazy()).collect_schema()?;
        Ok(schema.iter_names().map(|n| n.to_string()).collect())
    }
}

/// The kind of a join's snapshot.
const JOIN_STATE: &str = "join";
/// Most left rows gathered before a join (bounds the memory the gathering takes).
pub const MAX_GATHER_ROWS: usize = 1 << 20;
/// Longest a gathered left row waits (tail mode: output latency stays low).
pub const MAX_GATHER_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
/// Numbers the right rows given to polars' join in a right or full join, to tell which matched.
const RIGHT_ROW: &str = "__rv_right_row";
/// Numbers the left rows given to polars' inner or right join, to count those that matched.
const LEFT_ROW: &str = "__rv_left_row";

/// One subtask of a join.
pub struct JoinOperator {
    name: String,
    node: usize,
    plan: JoinPlan,
    right_schema: SchemaRef,
    left_schema: SchemaRef,
    right: Vec<DataFrame>,
    built: Option<DataFrame>,
    /// The built right side indexed once by its keys, where the keys allow it.
    index: Option<Arc<HashIndex>>,
    /// Right and full joins: for each row of the built right side, whether a left row matched it.
    matched: Vec<bool>,
    /// Where the subtasks of a broadcast join share their build (see [`SharedBuild`]).
    shared: Option<Arc<SharedBuild>>,
    /// The right side has ended, and another subtask is building it: left rows are held.
    awaiting: bool,
    /// Left batches not joined yet: before the right side is complete, or being gathered.
    pending_left: Vec<DataFrame>,
    pending_rows: usize,
    /// When the oldest gathered batch arrived.
    pending_since: Option<Instant>,
    batch_rows: usize,
    metrics: Arc<Metrics>,
    /// Where this subtask gives its right side's keys, and which part of them it holds.
    keys_to: Option<(Arc<JoinFilterSlot>, usize)>,
}

impl Drop for JoinOperator {
    /// A subtask that ends before giving its keys (the job failed) must not leave the left
    /// side's reader waiting for them.
    fn drop(&mut self) {
        if let Some((slot, part)) = &self.keys_to {
            slot.close(*part);
        }
    }
}

impl JoinOperator {
    /// A new join subtask for node `node` with inputs of the given schemas.
    pub fn new(name: String, node: usize, plan: JoinPlan, left_schema: SchemaRef, right_schema: SchemaRef, batch_rows: usize, metrics: Arc<Metrics>) -> Self {
        let pending_left = Vec::new();
        JoinOperator {
            name,
            node,
            plan,
            right_schema,
            left_schema,
            right: Vec::new(),
            built: None,
            index: None,
            matched: Vec::new(),
            pending_left,
            pending_rows: 0,
            pending_since: None,
            batch_rows,
            metrics,
            keys_to: None,
            shared: None,
            awaiting: false,
        }
    }

    /// Shares the build with the other subtasks of a broadcast join through `slot`.
    pub fn with_shared_build(mut self, slot: Arc<SharedBuild>) -> Self {
        self.shared = Some(slot);
        self
    }

    /// The right side read so far, put together, with its keys given to the join filter (before
    /// the index is built: the reader waits for them), and its index.
    fn build_right(&mut self) -> Result<Build> {
        // The keys go out from the batches as they came: the reader waits for them, and
        // putting the right side together first took as long again (TPC-H Q3).
        let batches = std::mem::take(&mut self.right);
        self.give_keys(&batches);
        let right = Self::concat(batches, &self.right_schema).map_err(|e| self.fail(e))?;
        let index = self.build(&right)?;
        Ok((right, index))
    }

    /// The index of `right`, where its keys allow one.
    fn build(&self, right: &DataFrame) -> Result<Option<Arc<HashIndex>>> {
        let p = &self.plan;
        let index = HashIndex::build(p.how, &p.left_on, &p.right_on, &p.suffix, &self.left_schema, right).map_err(|e| self.fail(e))?;
        Ok(index.map(Arc::new))
    }

    /// Gives the keys of the right side's `filter_key` to `slot` as part `part` once the right
    /// side is read.
    pub fn with_keys_to(mut self, slot: Arc<JoinFilterSlot>, part: usize) -> Self {
        self.keys_to = Some((slot, part));
        self
    }

    fn give_keys(&self, right: &[DataFrame]) {
        let (Some((slot, part)), Some(key)) = (&self.keys_to, &self.plan.filter_key) else { return };
        if slot.wants(*part) {
            let mut keys = Int64Chunked::full_null(key.as_str().into(), 0);
            let read = right.iter().try_for_each(|batch| keys.append_owned(super::hash_index::as_i64_chunks(batch, key)?));
            match read {
                Ok(()) => slot.give(*part, keys),
                // Keys that cannot be read filter nothing: the join sees every row.
                Err(_) => slot.close(*part),
            }
        }
    }

    /// Joins the gathered left batches, in arrival order, with the complete right side.
    fn join_pending(&mut self, out: &mut dyn Collector) -> Result<()> {
        if self.built.is_none() || self.pending_left.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending_left);
        (self.pending_rows, self.pending_since) = (0, None);
        if self.index.is_some() {
            // The index is probed batch by batch: putting the batches together first copied
            // their key columns into one (TPC-H Q18 on CSV holds all of lineitem here).
            let start = Instant::now();
            let mut all: Option<DataFrame> = None;
            for left in &pending {
                let part = self.joined(left)?;
                match &mut all {
                    Some(all) => all.vstack_mut_owned(part).map(drop).map_err(|e| self.fail(e))?,
                    None => all = Some(part),
                }
            }
            let mut all = all.expect("a pending batch");
            // A few matches from many batches go on as one chunk; more go on in batches.
            if all.height() < self.batch_rows {
                all.rechunk_mut();
            }
            return self.emit_joined(all, start, out);
        }
        let left = Self::concat(pending, &self.left_schema).map_err(|e| self.fail(e))?;
        self.emit(left, out)
    }

    /// Joins `left` with the complete right side, noting the right rows it matched in a right
    /// or full join: the rows, and how many left rows gave none (counted as filtered by the join).
    fn join(&mut self, left: &DataFrame) -> PolarsResult<(DataFrame, usize)> {
        let how = self.plan.how;
        let keeps = how.keeps_unmatched_right();
        if let Some(index) = &self.index {
            return index.join(left, keeps.then_some(self.matched.as_mut_slice()));
        }
        let right = self.built.clone().expect("right side built").lazy();
        // An inner or right join's left rows are numbered to count those that matched.
        let numbered = matches!(how, How::Inner | How::Right);
        let input = if numbered { left.clone().lazy().with_row_index(LEFT_ROW, None) } else { left.clone().lazy() };
        let joined = if keeps {
            // polars' join does not tell which right rows matched: they are numbered first, and
            // the join is made as the left (full) or inner (right) join that gives the matched rows.
            let probe = JoinPlan { how: if how == How::Full { How::Left } else { How::Inner }, ..self.plan.clone() };
            let joined = probe.apply(input, right.with_row_index(RIGHT_ROW, None)).collect()?;
            joined.column(RIGHT_ROW)?.idx()?.iter().flatten().for_each(|j| self.matched[j as usize] = true);
            joined
        } else {
            self.plan.apply(input, right).collect()?
        };
        let kept = match how {
            How::Left | How::Full => left.height(),
            How::Semi | How::Anti => joined.height(),
            How::Inner | How::Right => joined.column(LEFT_ROW)?.n_unique()?,
        };
        let joined = if keeps {
            joined.select(self.plan.layout.iter().map(String::as_str))?
        } else if numbered {
            joined.drop(LEFT_ROW)?
        } else {
            joined
        };
        Ok((joined, left.height() - kept))
    }

    /// Sends on the right rows of a right or full join that no left row matched (once every
    /// left row is joined).
    fn emit_unmatched_right(&mut self, out: &mut dyn Collector) -> Result<()> {
        if !self.plan.how.keeps_unmatched_right() {
            return Ok(());
        }
        let Some(right) = self.built.take() else { return Ok(()) };
        let start = Instant::now();
        let unmatched: BooleanChunked = std::mem::take(&mut self.matched).into_iter().map(|m| !m).collect();
        let rows = right.filter(&unmatched).and_then(|right| self.plan.right_only(&self.left_schema, right));
        self.emit_joined(rows.map_err(|e| self.fail(e))?, start, out)
    }

    /// Left rows to gather before a join: about the right side's size.
    fn gather_rows(&self) -> usize {
        let right = self.built.as_ref().map_or(0, DataFrame::height);
        right.min(MAX_GATHER_ROWS).max(self.batch_rows)
    }

    fn fail(&self, e: PolarsError) -> Error {
        Error::execution("operator", &self.name, clean(&e))
    }

    /// Joins from now on with the complete right side `build`, and the left rows held so far.
    fn adopt(&mut self, (right, index): Build, out: &mut dyn Collector) -> Result<()> {
        self.index = index;
        if self.plan.how.keeps_unmatched_right() {
            self.matched = vec![false; right.height()];
        }
        self.built = Some(right);
        self.join_pending(out)
    }

    /// Takes the build another subtask was making, once it is done (or now, waiting for it).
    fn take_shared_build(&mut self, wait: bool, out: &mut dyn Collector) -> Result<()> {
        if !self.awaiting {
            return Ok(());
        }
        let slot = self.shared.clone().expect("a subtask awaits only a shared build");
        let build = if wait { Some(slot.wait()) } else { slot.try_get().transpose() };
        let Some(build) = build else { return Ok(()) };
        // The builder's failure is the job's error.
        let build = build.map_err(|_| Error::Cancelled)?;
        self.awaiting = false;
        self.give_keys(std::slice::from_ref(&build.0));
        self.adopt(build, out)
    }

    fn concat(frames: Vec<DataFrame>, schema: &Schema) -> PolarsResult<DataFrame> {
        if frames.is_empty() {
            return Ok(DataFrame::empty_with_schema(schema));
        }
        concat(frames.into_iter().map(DataFrame::lazy).collect::<Vec<_>>(), UnionArgs::default())?.collect()
    }

    fn emit(&mut self, left: DataFrame, out: &mut dyn Collector) -> Result<()> {
        let start = Instant::now();
        let joined = self.joined(&left)?;
        self.emit_joined(joined, start, out)
    }

    /// [`Self::join`], with the left rows that gave no row counted as filtered.
    fn joined(&mut self, left: &DataFrame) -> Result<DataFrame> {
        let (joined, dropped) = self.join(left).map_err(|e| self.fail(e))?;
        NodeMetrics::add(&self.metrics.nodes[self.node].filtered, dropped as u64);
        Ok(joined)
    }

    /// Sends on the rows of a join that started at `start`.
    fn emit_joined(&self, joined: DataFrame, start: Instant, out: &mut dyn Collector) -> Result<()> {
        let m = &self.metrics.nodes[self.node];
        m.add_time(start.elapsed());
        NodeMetrics::add(&m.rows_out, joined.height() as u64);
        emit_in_batches(&joined, self.batch_rows, out)
    }
}

impl Operator for JoinOperator {
    fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
        self.process_port(0, batch, out)
    }

    fn process_port(&mut self, port: usize, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
        NodeMetrics::add(&self.metrics.nodes[self.node].rows_in, batch.height() as u64);
        self.take_shared_build(false, out)?;
        match (port, self.built.is_some()) {
            // Probing the index costs the same for any batch size: no gathering.
            (0, true) if self.index.is_some() && self.pending_left.is_empty() => self.emit(batch, out),
            (0, true) => {
                self.pending_since.get_or_insert_with(Instant::now);
                self.pending_rows += batch.height();
                self.pending_left.push(batch);
                if self.pending_rows >= self.gather_rows() || self.pending_since.is_some_and(|t| t.elapsed() >= MAX_GATHER_WAIT) {
                    self.join_pending(out)?;
                }
                Ok(())
            }
            (0, false) => {
                self.pending_rows += batch.height();
                self.pending_left.push(batch);
                Ok(())
            }
            _ => {
                self.right.push(batch);
                Ok(())
            }
        }
    }

    fn end_of_input(&mut self, port: usize, out: &mut dyn Collector) -> Result<()> {
        if port != 1 {
            return Ok(());
        }
        let build = match self.shared.clone() {
            Some(slot) => match slot.claim().map_err(|_| Error::Cancelled)? {
                // A failure drops the builder, which tells the others.
                Claim::Build(builder) => {
                    let build = self.build_right()?;
                    builder.publish(build.clone());
                    build
                }
                // The others drop their batches without putting them together.
                Claim::Built(build) => {
                    self.right.clear();
                    self.give_keys(std::slice::from_ref(&build.0));
                    build
                }
                Claim::Wait => {
                    self.right.clear();
                    self.awaiting = true;
                    return Ok(());
                }
            },
            None => self.build_right()?,
        };
        self.adopt(build, out)
    }

    /// The input is quiet: what was gathered is joined now.
    fn on_tick(&mut self, out: &mut dyn Collector) -> Result<()> {
        self.take_shared_build(false, out)?;
        self.join_pending(out)
    }

    /// Rows gathered before a watermark go out before it.
    fn on_watermark(&mut self, watermark: i64, out: &mut dyn Collector) -> Result<()> {
        // Rows held for the build go out before the watermark.
        self.take_shared_build(true, out)?;
        self.join_pending(out)?;
        out.watermark(watermark)
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let fail = |e: PolarsError| self.fail(e);
        let mut w = StateWriter::new(JOIN_STATE);
        w.frame("right", stack(&self.right).map_err(fail)?.as_ref())?;
        // A build another subtask is making is part of this one's state.
        let shared = match (&self.shared, self.awaiting) {
            (Some(slot), true) => Some(slot.wait().map_err(|_| Error::Cancelled)?.0),
            _ => None,
        };
        w.frame("built", shared.as_ref().or(self.built.as_ref()))?;
        w.frame("pending_left", stack(&self.pending_left).map_err(fail)?.as_ref())?;
        // One flag per built right row (a boolean column packs them into bits).
        let matched = (!self.matched.is_empty()).then(|| DataFrame::new(self.matched.len(), vec![Column::new("matched".into(), self.matched.as_slice())]));
        w.frame("matched", matched.transpose().map_err(fail)?.as_ref())?;
        Ok(w.finish())
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let r = StateReader::open(state, JOIN_STATE)?;
        self.right = r.frame("right")?.into_iter().collect();
        self.built = r.frame("built")?;
        if let Some(right) = &self.built {
            self.index = self.build(right)?;
        }
        self.matched = match r.frame("matched")? {
            Some(flags) => flags.column("matched").and_then(|c| c.bool().cloned()).map_err(|e| self.fail(e))?.iter().map(|m| m == Some(true)).collect(),
            None => Vec::new(),
        };
        self.pending_left = r.frame("pending_left")?.into_iter().collect();
        self.pending_rows = self.pending_left.iter().map(DataFrame::height).sum();
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Collector) -> Result<()> {
        if self.built.is_none() && !self.awaiting {
            self.end_of_input(1, out)?;
        }
        // Another subtask may be building the right side: its rows wait for it.
        self.take_shared_build(true, out)?;
        self.join_pending(out)?;
        self.emit_unmatched_right(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A join of left `k` with right `id`, without layout.
    fn plan(how: How, strategy: Strategy) -> JoinPlan {
        JoinPlan {
            how,
            left_on: vec!["k".into()],
            right_on: vec!["id".into()],
            suffix: "_right".into(),
            strategy,
            layout: vec![],
            build_first: false,
            filter_key: None,
        }
    }

    #[test]
    fn key_columns_appear_once_and_clashes_get_the_suffix() {
        let left = df!("k" => [1, 2, 3], "v" => ["a", "b", "c"]).unwrap();
        let right = df!("id" => [2, 3, 4], "v" => ["x", "y", "z"]).unwrap();
        let plan = plan(How::Full, Strategy::Hash);
        let out = plan.apply(left.lazy(), right.lazy()).collect().unwrap().sort(["k"], SortMultipleOptions::default()).unwrap();
        assert_eq!(out.get_column_names(), ["k", "v", "v_right"]);
        assert_eq!(out.column("k").unwrap().i32().unwrap().into_no_null_iter().collect::<Vec<_>>(), [1, 2, 3, 4]);
    }

    /// Right and full joins stream their left batches and add the right rows that nothing
    /// matched at the end: through the index (integer keys) and through polars (float keys)
    /// alike, and across a snapshot and restore between two left batches.
    #[test]
    fn right_and_full_joins_add_the_unmatched_right_rows_at_the_end() {
        use crate::exec::operator::Collected;
        let sorted = |df: DataFrame| df.sort(["k", "v", "w"], SortMultipleOptions::default().with_nulls_last(true)).unwrap();
        let ints = (
            df!("k" => [Some(1i64), Some(2), None, Some(2), Some(7)], "v" => ["a", "b", "c", "d", "e"]).unwrap(),
            df!("id" => [Some(2i64), Some(3), None, Some(2), Some(9)], "w" => [10, 11, 12, 13, 14]).unwrap(),
        );
        let floats = (
            df!("k" => [Some(1.5f64), Some(2.5), None, Some(2.5), Some(7.5)], "v" => ["a", "b", "c", "d", "e"]).unwrap(),
            df!("id" => [Some(2.5f64), Some(3.5), None, Some(2.5), Some(9.5)], "w" => [10, 11, 12, 13, 14]).unwrap(),
        );
        for (left, right) in [ints, floats] {
            for how in [How::Right, How::Full] {
                let layout = plan(how, Strategy::Hash).layout_for(left.schema(), right.schema()).unwrap();
                let plan = JoinPlan { layout, build_first: true, ..plan(how, Strategy::Hash) };
                let metrics = Arc::new(Metrics::new(1));
                let new = || JoinOperator::new("j".into(), 0, plan.clone(), left.schema().clone(), right.schema().clone(), 2, metrics.clone());
                let (mut op, mut out) = (new(), Collected::default());
                op.process_port(1, right.slice(0, 3), &mut out).unwrap();
                op.process_port(1, right.slice(3, 2), &mut out).unwrap();
                op.end_of_input(1, &mut out).unwrap();
                op.process_port(0, left.slice(0, 2), &mut out).unwrap();
                let mut op2 = new();
                op2.restore(&op.snapshot().unwrap()).unwrap();
                op2.process_port(0, left.slice(2, 3), &mut out).unwrap();
                op2.finish(&mut out).unwrap();
                let mut got = out.batches[0].clone();
                out.batches[1..].iter().for_each(|b| _ = got.vstack_mut(b).unwrap());
                let want = plan.apply(left.clone().lazy(), right.clone().lazy()).collect().unwrap();
                assert_eq!(got.get_column_names(), want.get_column_names(), "{how:?}");
                assert!(sorted(got.clone()).equals_missing(&sorted(want.clone())), "{how:?}\n{got}\n{want}");
                // The right rows that nothing matched (3, null, 9) come last.
                let last: Vec<Option<i32>> = got.column("w").unwrap().i32().unwrap().slice(-3, 3).iter().collect();
                assert_eq!(last, [Some(11), Some(12), Some(14)], "{how:?}");
            }
        }
    }

    /// The subtasks of a broadcast join share one build: the first to end its right input
    /// builds, the other takes that index, and each joins its own left rows with it.
    #[test]
    fn broadcast_subtasks_share_one_build() {
        use crate::exec::operator::Collected;
        let plan = JoinPlan { build_first: true, ..plan(How::Inner, Strategy::BroadcastRight) };
        let left = df!("k" => [1i64, 2, 5]).unwrap();
        let right = df!("id" => [2i64, 5, 7], "w" => ["b", "e", "g"]).unwrap();
        let slot: Arc<SharedBuild> = Arc::default();
        let metrics = Arc::new(Metrics::new(1));
        let new = || {
            let layout = plan.layout_for(left.schema(), right.schema()).unwrap();
            JoinOperator::new("j".into(), 0, JoinPlan { layout, ..plan.clone() }, left.schema().clone(), right.schema().clone(), 100, metrics.clone())
                .with_shared_build(slot.clone())
        };
        let (mut a, mut b) = (new(), new());
        let mut out = Collected::default();
        // Each gets the whole right side, in its own order.
        a.process_port(1, right.slice(0, 2), &mut out).unwrap();
        a.process_port(1, right.slice(2, 1), &mut out).unwrap();
        b.process_port(1, right.slice(2, 1), &mut out).unwrap();
        b.process_port(1, right.slice(0, 2), &mut out).unwrap();
        a.end_of_input(1, &mut out).unwrap();
        b.end_of_input(1, &mut out).unwrap();
        assert!(Arc::ptr_eq(a.index.as_ref().unwrap(), b.index.as_ref().unwrap()), "one index");
        for (op, rows) in [(&mut a, left.slice(0, 2)), (&mut b, left.slice(2, 1))] {
            op.process_port(0, rows, &mut out).unwrap();
        }
        let mut joined: Vec<(i64, String)> = out
            .batches
            .iter()
            .flat_map(|d| {
                d.column("k")
                    .unwrap()
                    .i64()
                    .unwrap()
                    .into_no_null_iter()
                    .zip(d.column("w").unwrap().str().unwrap().iter().map(|w| w.unwrap().to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        joined.sort();
        assert_eq!(joined, [(2, "b".to_string()), (5, "e".to_string())]);
    }

    /// A subtask whose right input ends while another builds holds its left rows, and joins them
    /// once the build is there.
    #[test]
    fn a_subtask_holds_its_left_rows_while_another_builds() {
        use crate::exec::operator::Collected;
        let plan = JoinPlan { build_first: true, ..plan(How::Inner, Strategy::BroadcastRight) };
        let left = df!("k" => [1i64, 2, 5]).unwrap();
        let right = df!("id" => [2i64, 5, 7], "w" => ["b", "e", "g"]).unwrap();
        let layout = plan.layout_for(left.schema(), right.schema()).unwrap();
        let slot: Arc<SharedBuild> = Arc::default();
        let metrics = Arc::new(Metrics::new(1));
        let mut op = JoinOperator::new("j".into(), 0, JoinPlan { layout, ..plan.clone() }, left.schema().clone(), right.schema().clone(), 100, metrics)
            .with_shared_build(slot.clone());
        // Another subtask claimed the build first.
        let Ok(Claim::Build(builder)) = slot.claim() else { panic!("the first claim builds") };
        let mut out = Collected::default();
        op.process_port(1, right.clone(), &mut out).unwrap();
        op.end_of_input(1, &mut out).unwrap();
        op.process_port(0, left.slice(0, 2), &mut out).unwrap();
        assert!(out.batches.is_empty(), "held until the build is there");
        let index = HashIndex::build(How::Inner, &plan.left_on, &plan.right_on, "_right", left.schema(), &right).unwrap().map(Arc::new);
        builder.publish((right.clone(), index));
        op.process_port(0, left.slice(2, 1), &mut out).unwrap();
        op.finish(&mut out).unwrap();
        let keys: Vec<i64> = out.batches.iter().flat_map(|d| d.column("k").unwrap().i64().unwrap().into_no_null_iter().collect::<Vec<_>>()).collect();
        assert_eq!(keys, [2, 5], "the held rows first, then the later ones, each with its match");
    }
}
