//! Aggregation into a hash table of accumulators, for keys of up to four integer-like or
//! string columns (strings get codes from a [`Dictionary`]; no key: one global group) and the
//! aggregates that fold into one number per key (`count`, `sum`, `mean`, `min`, `max`).
//!
//! The frame-based reduction (see [`super::reduce`]) re-groups its state with polars as it
//! grows: with a million keys each compaction hashes every state row again, and the state is
//! held several times over while it is merged. Here each row is hashed once, into a table
//! whose accumulators are updated in place, and a run of rows with the same key (input sorted
//! or clustered by key, like TPC-H's lineitem by order) costs one comparison per row. The
//! table emits the same partial-state columns as the frame-based reduction, so either can feed
//! the other's final phase, and snapshots are interchangeable.
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use polars::polars_utils::aliases::PlRandomState;
use polars::prelude::*;
use polars_arrow::array::PrimitiveArray;
use polars_arrow::bitmap::Bitmap;
use polars_arrow::types::NativeType;

use super::aggregate::AggregatePlan;
use super::dictionary::Dictionary;
use super::hash_index::{as_i64, fits_i64};
use super::reduce::{Phase, REDUCE_STATE};
use super::row_eval;
use crate::error::{Error, Result};
use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::exec::operator::{Collector, Operator, emit_in_batches};
use crate::exec::state::{StateReader, StateWriter};
use crate::plan::expr::{AggFunc, clean};

/// How a slot folds its input into a group's accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// Counts rows (`count(*)`; no input).
    Rows,
    /// Counts non-null values.
    Valid,
    /// Adds non-null values (integers wrap, as polars' sums do).
    Sum,
    /// Keeps the least non-null value.
    Min,
    /// Keeps the greatest non-null value.
    Max,
}

/// The accumulators of one slot, one per group, in the physical type of its state column.
#[derive(Clone, Debug)]
enum Acc {
    I64(Vec<i64>),
    F64(Vec<f64>),
    I128(Vec<i128>),
}

impl Acc {
    /// True when both hold values of the same type.
    fn same_kind(&self, other: &Acc) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    /// Forgets every group's value (keeping the capacity).
    fn clear(&mut self) {
        match self {
            Acc::I64(v) => v.clear(),
            Acc::F64(v) => v.clear(),
            Acc::I128(v) => v.clear(),
        }
    }

    /// The values, moved out: this accumulator is left empty, without memory.
    fn take(&mut self) -> Acc {
        match self {
            Acc::I64(v) => Acc::I64(std::mem::take(v)),
            Acc::F64(v) => Acc::F64(std::mem::take(v)),
            Acc::I128(v) => Acc::I128(std::mem::take(v)),
        }
    }

    /// The values as a series named `name`, with `validity`.
    fn into_series(self, name: PlSmallStr, validity: Option<Bitmap>) -> Series {
        match self {
            Acc::I64(v) => Int64Chunked::from_vec_validity(name, v, validity).into_series(),
            Acc::F64(v) => Float64Chunked::from_vec_validity(name, v, validity).into_series(),
            Acc::I128(v) => Int128Chunked::from_vec_validity(name, v, validity).into_series(),
        }
    }
}

/// A number an accumulator holds.
trait Num: NativeType + PartialOrd + Default {
    fn plus(self, other: Self) -> Self;
}
impl Num for i64 {
    fn plus(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
}
impl Num for i128 {
    fn plus(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
}
impl Num for f64 {
    fn plus(self, other: Self) -> Self {
        self + other
    }
}

/// One column of partial state (`__a{i}_v` or `__a{i}_n`) and how to compute it.
#[derive(Debug)]
struct Slot {
    /// The state column this slot fills.
    name: PlSmallStr,
    /// Its type in the state.
    dtype: DataType,
    /// On raw rows: the operation and the index of its input column (None for `Rows`).
    raw: (Op, Option<usize>),
    /// On partial states: the operation over this very column.
    merge: Op,
    acc: Acc,
    /// Min / max: whether the group has seen a value yet (otherwise its state is null).
    seen: Vec<bool>,
}

impl Slot {
    /// Keeps the accumulators of the first `groups` groups (drops the spare one).
    fn truncate(&mut self, groups: usize) {
        match &mut self.acc {
            Acc::I64(v) => v.truncate(groups),
            Acc::F64(v) => v.truncate(groups),
            Acc::I128(v) => v.truncate(groups),
        }
        self.seen.truncate(groups);
    }

    /// Min / max: which groups have a value (the others' state is null); None for the rest.
    fn validity(&self) -> Option<Bitmap> {
        matches!(self.merge, Op::Min | Op::Max).then(|| Bitmap::from_iter(self.seen.iter().copied()))
    }
}

/// Row values of the key columns, read as i64, with their validity.
struct KeyColumns {
    values: Vec<Int64Chunked>,
}

/// Group keys: up to four i64 values (integers, dates, string codes) and a bit per null key
/// column.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key<const N: usize> {
    values: [i64; N],
    nulls: u8,
}

impl<const N: usize> Default for Key<N> {
    fn default() -> Self {
        Key { values: [0; N], nulls: 0 }
    }
}

/// Assigns group numbers to keys, in order of first appearance.
trait Groups: Send {
    /// The group of each of the `rows` rows of `keys`, new keys getting the next numbers,
    /// written to `ids`; rows that `keep` leaves out get [`LEFT_OUT`] and no group. Returns
    /// how many runs of equal keys the kept rows form where the table was searched (a run
    /// costs one search; rows found by their value alone are not counted).
    fn assign(&mut self, keys: &KeyColumns, rows: usize, keep: Option<&Bitmap>, ids: &mut Vec<u32>) -> usize;
    fn len(&self) -> usize;
    /// The key columns of the groups, in group order: values (null keys as 0) and validity.
    fn columns(&self) -> Vec<(Vec<i64>, Vec<bool>)>;
    fn clear(&mut self);
    /// Empties the table and gives its memory back (nothing more will be added).
    fn release(&mut self) {
        self.clear();
    }
    /// From now on a group per run of equal keys, without searching for the key: for input
    /// clustered by key, where a table finds few keys again after their run.
    fn by_runs(&mut self) {}
}

/// Group numbers in an open-addressing hash table (linear probing), and the keys by group
/// number beside it. A slot is 8 bytes: 0 when empty, else the key hash's high 32 bits and the
/// group number + 1, so a probe compares keys only when those bits match. The table is kept at
/// most three quarters full.
///
/// Keys with a null are rare and live in a map of their own, so the keys beside the table are
/// bare values (8 bytes a column, not 16 for one column with its null bits): memory touched for
/// the first time costs the kernel a page clear, and with 1.5 M groups (TPC-H Q18) the table's
/// memory was most of the aggregate's time.
///
/// With millions of groups every probe misses the caches twice (the slot, then the key). The
/// hashes of a batch are computed first, so the slot of the row `PREFETCH_AHEAD` rows on is
/// prefetched, and the key of the row `PREFETCH_AHEAD / 2` on (whose slot has arrived by then): the misses overlap
/// instead of queuing. (A 10 M-key group-by spent most of its time in these probes.)
struct GroupMap<const N: usize> {
    slots: Vec<u64>,
    /// Every group's key values, by group number (0 where a key column is null).
    keys: Vec<[i64; N]>,
    /// Groups whose key has a null: their number by key, and (in group order) their null bits.
    null_keys: std::collections::HashMap<Key<N>, u32>,
    nulls: Vec<(u32, u8)>,
    /// Group numbers by the key's values, for keys of one or two columns whose values are all
    /// in 0..256 (flags, small codes): `u32::MAX` where none yet. Empty until first used.
    direct: Vec<u32>,
    /// A group per run (see [`Groups::by_runs`]): the table is not searched.
    runs_only: bool,
    hasher: PlRandomState,
    hashes: Vec<u64>,
}

impl<const N: usize> GroupMap<N> {
    fn new() -> Self {
        GroupMap {
            slots: written_zeros(1024),
            keys: Vec::new(),
            null_keys: std::collections::HashMap::new(),
            nulls: Vec::new(),
            direct: Vec::new(),
            runs_only: false,
            hasher: PlRandomState::default(),
            hashes: Vec::new(),
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The home slot of a key with hash `hash`: the hash's top bits. A slot holds the top 32
    /// bits, so growing the table finds each key's new home from its slot alone, and in the
    /// order of the old slots (homes 2i and 2i + 1 for home i): the copy runs through both tables
    /// in order instead of hashing every key again and writing at random.
    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        (hash >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    /// The group of `key` (whose hash is `hash`), added when new.
    #[inline]
    fn group(&mut self, key: Key<N>, hash: u64) -> u32 {
        if key.nulls != 0 {
            let next = self.keys.len() as u32;
            let id = *self.null_keys.entry(key).or_insert(next);
            if id == next {
                self.push_group(key);
            }
            return id;
        }
        let tag = hash & 0xFFFF_FFFF_0000_0000;
        let mask = self.mask();
        let mut pos = self.home(hash);
        loop {
            let slot = self.slots[pos];
            if slot == 0 {
                let id = self.push_group(key);
                self.slots[pos] = tag | (id as u64 + 1);
                // At most three quarters full: probe runs stay short.
                if 4 * self.keys.len() > 3 * self.slots.len() {
                    self.grow();
                }
                return id;
            }
            if slot & 0xFFFF_FFFF_0000_0000 == tag {
                let id = (slot as u32).wrapping_sub(1);
                if self.keys[id as usize] == key.values {
                    return id;
                }
            }
            pos = (pos + 1) & mask;
        }
    }

    /// Adds a group for `key` (not searched for) and returns its number.
    #[inline]
    fn push_group(&mut self, key: Key<N>) -> u32 {
        let id = self.keys.len() as u32;
        self.keys.push(key.values);
        if key.nulls != 0 {
            self.nulls.push((id, key.nulls));
        }
        id
    }

    fn grow(&mut self) {
        let bigger = written_zeros(2 * self.slots.len());
        let old = std::mem::replace(&mut self.slots, bigger);
        let mask = self.mask();
        for slot in old.into_iter().filter(|&s| s != 0) {
            let mut pos = self.home(slot);
            while self.slots[pos] != 0 {
                pos = (pos + 1) & mask;
            }
            self.slots[pos] = slot;
        }
    }

    /// Prefetches what probing row `i` will read: its slot, and (once the slot is likely in
    /// cache) the key of the group it holds.
    #[inline(always)]
    fn prefetch(&self, i: usize) {
        if let Some(&h) = self.hashes.get(i + PREFETCH_AHEAD) {
            prefetch_address(self.slots.as_ptr().wrapping_add(self.home(h)));
        }
        if let Some(&h) = self.hashes.get(i + PREFETCH_AHEAD / 2) {
            let slot = self.slots[self.home(h)];
            let id = (slot as u32).wrapping_sub(1) as usize;
            if slot != 0 && id < self.keys.len() {
                prefetch_address(self.keys.as_ptr().wrapping_add(id));
            }
        }
    }
}

impl<const N: usize> Groups for GroupMap<N> {
    fn assign(&mut self, keys: &KeyColumns, rows: usize, keep: Option<&Bitmap>, ids: &mut Vec<u32>) -> usize {
        ids.clear();
        if rows == 0 {
            return 0;
        }
        ids.reserve(rows);
        // One chunk per column (rechunked by the caller), so rows index the arrays directly.
        let arrays: Vec<&PrimitiveArray<i64>> = keys.values.iter().map(|c| c.downcast_as_array()).collect();
        let values: Vec<&[i64]> = arrays.iter().map(|a| a.values().as_slice()).collect();
        let validity: Vec<Option<&Bitmap>> = arrays.iter().map(|a| a.validity().filter(|b| b.unset_bits() > 0)).collect();
        let row_key = |i: usize| {
            let mut key = Key::<N>::default();
            for c in 0..N {
                // SAFETY: every column has `rows` values and validity bits.
                if validity[c].is_some_and(|b| !unsafe { b.get_bit_unchecked(i) }) {
                    key.nulls |= 1 << c;
                } else {
                    key.values[c] = unsafe { *values[c].get_unchecked(i) };
                }
            }
            key
        };
        // SAFETY: the mask has a bit per row.
        let left_out = |i: usize| keep.is_some_and(|k| !unsafe { k.get_bit_unchecked(i) });
        if self.runs_only {
            let mut runs = 0;
            if keep.is_none() && validity.iter().all(Option::is_none) {
                for i in 0..rows {
                    // SAFETY: every column has `rows` values.
                    let key: [i64; N] = std::array::from_fn(|c| unsafe { *values[c].get_unchecked(i) });
                    if i == 0 || self.keys.last() != Some(&key) {
                        self.keys.push(key);
                        runs += 1;
                    }
                    ids.push(self.keys.len() as u32 - 1);
                }
                return runs;
            }
            let mut last = None;
            for i in 0..rows {
                if left_out(i) {
                    ids.push(LEFT_OUT);
                    continue;
                }
                let key = row_key(i);
                if last != Some(key) {
                    self.push_group(key);
                    last = Some(key);
                    runs += 1;
                }
                ids.push(self.keys.len() as u32 - 1);
            }
            return runs;
        }
        // Keys of a small domain (TPC-H Q1's two flags) find their group by their values, with
        // no hashing. Their groups are also in the table, for batches that do not qualify.
        if N <= 2 && validity.iter().all(Option::is_none) && values.iter().all(|v| v.iter().all(|x| (0..DIRECT_VALUES).contains(x))) {
            if self.direct.is_empty() {
                self.direct = vec![u32::MAX; 1 << (8 * N)];
            }
            // A row indexes every key column, the mask and the row's key.
            #[allow(clippy::needless_range_loop)]
            for i in 0..rows {
                if left_out(i) {
                    ids.push(LEFT_OUT);
                    continue;
                }
                let index = (0..N).fold(0, |index, c| index | (values[c][i] as usize) << (8 * c));
                let mut id = self.direct[index];
                if id == u32::MAX {
                    let key = row_key(i);
                    id = self.group(key, self.hasher.hash_one(key));
                    self.direct[index] = id;
                }
                ids.push(id);
            }
            return 0;
        }
        // Prefetching pays when the table is beyond the caches.
        let far = self.slots.len() > PREFETCH_GROUPS;
        self.hashes.clear();
        if far {
            self.hashes.extend((0..rows).map(|i| self.hasher.hash_one(row_key(i))));
        }
        let mut last: Option<(Key<N>, u32)> = None;
        let mut runs = 0;
        for i in 0..rows {
            if left_out(i) {
                ids.push(LEFT_OUT);
                continue;
            }
            let key = row_key(i);
            // A run of equal keys (input sorted or clustered by key) costs a comparison.
            let id = match last {
                Some((k, id)) if k == key => id,
                _ => {
                    let hash = if far {
                        self.prefetch(i);
                        self.hashes[i]
                    } else {
                        self.hasher.hash_one(key)
                    };
                    let id = self.group(key, hash);
                    last = Some((key, id));
                    runs += 1;
                    id
                }
            };
            ids.push(id);
        }
        runs
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn columns(&self) -> Vec<(Vec<i64>, Vec<bool>)> {
        (0..N)
            .map(|c| {
                let values: Vec<i64> = self.keys.iter().map(|k| k[c]).collect();
                let mut valid = vec![true; values.len()];
                for &(id, nulls) in &self.nulls {
                    valid[id as usize] = nulls & (1 << c) == 0;
                }
                (values, valid)
            })
            .collect()
    }

    fn clear(&mut self) {
        // Keeps the capacity: a partial phase fills the table again.
        if !self.runs_only {
            self.slots.fill(0);
        }
        self.keys.clear();
        self.null_keys.clear();
        self.nulls.clear();
        self.direct.fill(u32::MAX);
    }

    fn release(&mut self) {
        *self = GroupMap::new();
    }

    fn by_runs(&mut self) {
        self.clear();
        self.slots = written_zeros(1024);
        self.direct = Vec::new();
        self.runs_only = true;
    }
}

/// One global group (an aggregate without `key_by`): every row is group 0.
struct OneGroup {
    seen: bool,
}

impl Groups for OneGroup {
    fn assign(&mut self, _: &KeyColumns, rows: usize, keep: Option<&Bitmap>, ids: &mut Vec<u32>) -> usize {
        ids.clear();
        match keep {
            None => ids.resize(rows, 0),
            Some(k) => ids.extend(k.iter().take(rows).map(|kept| if kept { 0 } else { LEFT_OUT })),
        }
        self.seen |= ids.contains(&0);
        0
    }

    fn len(&self) -> usize {
        self.seen as usize
    }

    fn columns(&self) -> Vec<(Vec<i64>, Vec<bool>)> {
        Vec::new()
    }

    fn clear(&mut self) {
        self.seen = false;
    }
}

/// The group of a row that a filter fused into the aggregate left out (see
/// [`AggregateTable::update_raw_kept`]); replaced by a spare group before folding.
const LEFT_OUT: u32 = u32::MAX;

/// The most key columns the table takes (the key's null bits fit in a byte).
const MAX_KEYS: usize = 4;

/// The accumulator type for a state column of `dtype` folded with `op`, if the table can hold
/// it. Float extremes are left to polars (its NaN rules).
fn acc_for(dtype: &DataType, op: Op) -> Option<Acc> {
    match (dtype, op) {
        (DataType::Float64, Op::Sum) => Some(Acc::F64(Vec::new())),
        (DataType::Decimal(..), _) => Some(Acc::I128(Vec::new())),
        (DataType::Int64, _) => Some(Acc::I64(Vec::new())),
        // Extremes keep the input's type: any whose values are integers that fit in 64 bits
        // (dates, times, narrower integers).
        (d, Op::Min | Op::Max) if fits_i64(&d.to_physical()) || matches!(d.to_physical(), DataType::Int64) => Some(Acc::I64(Vec::new())),
        _ => None,
    }
}

/// How a batch's raw inputs (the aggregate arguments) are obtained.
enum Inputs {
    /// Plain columns, read straight from the batch (cast to f64 for a mean).
    Plain(Vec<(PlSmallStr, bool)>),
    /// Expressions: hidden shared parts first (see `AggregatePlan::shared_parts`), then one
    /// expression per input. `direct`: evaluated by [`row_eval`], not by a polars query.
    Computed { shared: Vec<Expr>, inputs: Vec<Expr>, direct: bool },
}

/// The aggregation table: groups, and one accumulator per state column and group.
pub struct AggregateTable {
    keys: Vec<String>,
    key_types: Vec<DataType>,
    /// Codes for the strings of string key columns (None for integer-like ones).
    dictionaries: Vec<Option<Dictionary>>,
    groups: Box<dyn Groups>,
    slots: Vec<Slot>,
    inputs: Inputs,
    ids: Vec<u32>,
    /// Runs of equal keys searched for in the group table since [`AggregateTable::take_runs`].
    runs: usize,
}

impl AggregateTable {
    /// A table for `plan` over input rows of `input_schema`, filling the columns of
    /// `state_schema` (the partial phase's output); `None` when the keys or aggregates need
    /// the frame-based reduction.
    pub fn new(plan: &AggregatePlan, input_schema: &Schema, state_schema: &Schema) -> Option<Self> {
        if plan.keys.len() > MAX_KEYS || plan.keys.iter().any(|k| !state_schema.get(k).is_some_and(|d| fits_i64(d) || d == &DataType::String)) {
            return None;
        }
        let (shared, args) = plan.shared_parts();
        let shared: Vec<Expr> = shared.into_iter().map(|(name, e)| e.alias(name.as_str())).collect();
        let mut inputs: Vec<Expr> = Vec::new();
        let mut input_types: Vec<DataType> = Vec::new();
        let mut slots = Vec::new();
        let empty = DataFrame::empty_with_schema(input_schema).lazy();
        let computed = shared.iter().fold(empty, |lf, e| lf.with_column(e.clone()));
        // Each distinct argument once (TPC-H Q1 sums a column for `sum` and again for `avg`).
        let mut distinct_args: Vec<Expr> = Vec::new();
        for (i, (a, arg)) in plan.aggs.iter().zip(args).enumerate() {
            let input = arg.map(|arg| match distinct_args.iter().position(|e| e == &arg) {
                Some(j) => j,
                None => {
                    inputs.push(arg.clone().alias(format!("__in{}", inputs.len())));
                    distinct_args.push(arg);
                    inputs.len() - 1
                }
            });
            let arg_type = match input {
                Some(j) if j < input_types.len() => Some(input_types[j].clone()),
                Some(j) => {
                    let dtype = computed.clone().select([inputs[j].clone()]).collect_schema().ok()?.get_at_index(0)?.1.clone();
                    input_types.push(dtype.clone());
                    Some(dtype)
                }
                None => None,
            };
            let v = format!("__a{i}_v");
            let n = format!("__a{i}_n");
            let mut slot = |name: &str, raw: Op, input: Option<usize>, merge: Op| -> Option<()> {
                let dtype = state_schema.get(name)?.clone();
                let acc = acc_for(&dtype, merge)?;
                slots.push(Slot { name: name.into(), dtype, raw: (raw, input), merge, acc, seen: Vec::new() });
                Some(())
            };
            // The raw input must have the state's type, or widen to it without loss.
            let fits = |state: &str| -> bool {
                let (Some(arg), Some(state)) = (arg_type.as_ref(), state_schema.get(state)) else { return false };
                match state {
                    DataType::Int64 => fits_i64(arg) && arg.is_integer(),
                    DataType::Float64 => matches!(arg, DataType::Float64),
                    DataType::Decimal(_, s) => matches!(arg, DataType::Decimal(_, t) if t == s),
                    other => other == arg,
                }
            };
            match a.func {
                AggFunc::Count if input.is_none() => slot(&v, Op::Rows, None, Op::Sum)?,
                AggFunc::Count => slot(&v, Op::Valid, input, Op::Sum)?,
                AggFunc::Sum | AggFunc::Mean if fits(&v) => {
                    slot(&v, Op::Sum, input, Op::Sum)?;
                    slot(&n, Op::Valid, input, Op::Sum)?;
                }
                AggFunc::Min if fits(&v) => slot(&v, Op::Min, input, Op::Min)?,
                AggFunc::Max if fits(&v) => slot(&v, Op::Max, input, Op::Max)?,
                _ => return None,
            }
        }
        // Every state column besides the keys must be a slot, in the state's order.
        let state_columns: Vec<&str> = state_schema.iter_names().map(|n| n.as_str()).filter(|n| !plan.keys.iter().any(|k| k == n)).collect();
        if state_columns != slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>() {
            return None;
        }
        // A column, or a column cast to f64 (a mean's argument, see `mean_argument`).
        let plain = |(e, dtype): (&Expr, &DataType)| -> Option<(PlSmallStr, bool)> {
            let Expr::Alias(inner, _) = e else { return None };
            match &**inner {
                Expr::Column(name) => Some((name.clone(), false)),
                Expr::Cast { expr, .. } if dtype == &DataType::Float64 => match &**expr {
                    Expr::Column(name) => Some((name.clone(), true)),
                    _ => None,
                },
                _ => None,
            }
        };
        let inputs = match inputs.iter().zip(&input_types).map(plain).collect::<Option<Vec<_>>>() {
            Some(columns) if shared.is_empty() => Inputs::Plain(columns),
            _ => {
                // Each shared part may read the ones before it.
                let mut schema = input_schema.clone();
                let mut direct = true;
                for e in &shared {
                    direct &= row_eval::supported(e, &schema);
                    let field = e.to_field(&schema).ok()?;
                    schema.with_column(field.name, field.dtype);
                }
                direct &= inputs.iter().all(|e| row_eval::supported(e, &schema));
                Inputs::Computed { shared, inputs, direct }
            }
        };
        let key_types = plan.keys.iter().map(|k| state_schema.get(k).cloned()).collect::<Option<Vec<_>>>()?;
        let groups: Box<dyn Groups> = match plan.keys.len() {
            0 => Box::new(OneGroup { seen: false }),
            1 => Box::new(GroupMap::<1>::new()),
            2 => Box::new(GroupMap::<2>::new()),
            3 => Box::new(GroupMap::<3>::new()),
            _ => Box::new(GroupMap::<4>::new()),
        };
        let dictionaries = key_types.iter().map(|t| (t == &DataType::String).then(Dictionary::default)).collect();
        Some(AggregateTable { keys: plan.keys.clone(), key_types, dictionaries, groups, slots, inputs, ids: Vec::new(), runs: 0 })
    }

    /// Number of groups held.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// True when the table holds no group.
    pub fn is_empty(&self) -> bool {
        self.groups.len() == 0
    }

    fn key_columns(&mut self, df: &DataFrame) -> PolarsResult<KeyColumns> {
        let values = self
            .keys
            .iter()
            .zip(&mut self.dictionaries)
            .map(|(k, dictionary)| match dictionary {
                Some(d) => {
                    let column = df.column(k)?;
                    let codes = match column.dtype() {
                        DataType::Enum(..) => d.encode_categories(column)?,
                        _ => d.encode(column.str()?),
                    };
                    Ok(codes.rechunk().into_owned())
                }
                None => as_i64(df, k),
            })
            .collect::<PolarsResult<Vec<_>>>()?;
        Ok(KeyColumns { values })
    }

    /// The raw inputs of a batch of input rows, by input index.
    fn evaluate(&self, batch: &DataFrame) -> PolarsResult<Vec<Column>> {
        match &self.inputs {
            Inputs::Plain(columns) => columns
                .iter()
                .map(|(name, to_f64)| {
                    let c = batch.column(name)?;
                    if *to_f64 { c.cast(&DataType::Float64) } else { Ok(c.clone()) }
                })
                .collect(),
            Inputs::Computed { shared, inputs, direct: true } => {
                let mut work = batch.clone();
                for e in shared {
                    let c = row_eval::eval_rows(e, &work)?;
                    work.with_column(c)?;
                }
                inputs.iter().map(|e| row_eval::eval_rows(e, &work)).collect()
            }
            Inputs::Computed { shared, inputs, direct: false } => {
                let lf = shared.iter().fold(batch.clone().lazy(), |lf, e| lf.with_column(e.clone()));
                Ok(lf.select(inputs.clone()).collect()?.into_columns())
            }
        }
    }

    /// Folds a batch of raw input rows into the table.
    pub fn update_raw(&mut self, batch: &DataFrame) -> PolarsResult<()> {
        let inputs = self.evaluate(batch)?;
        self.fold_raw(batch, &inputs, None)
    }

    /// Folds the rows of `batch` that `keep` marks, without copying them out first: a filter
    /// that keeps most rows runs inside the aggregate. The rows left out fold into a spare
    /// group past the last, dropped afterwards. Their arguments are computed too, so when that
    /// fails (a decimal overflow the filter would have kept out) the kept rows are taken out and
    /// folded the usual way.
    pub fn update_raw_kept(&mut self, batch: &DataFrame, keep: &BooleanChunked) -> PolarsResult<()> {
        let Ok(inputs) = self.evaluate(batch) else {
            return self.update_raw(&batch.filter_seq(keep)?);
        };
        self.fold_raw(batch, &inputs, Some(&row_eval::true_rows(keep)))
    }

    fn fold_raw(&mut self, batch: &DataFrame, inputs: &[Column], keep: Option<&Bitmap>) -> PolarsResult<()> {
        let keys = self.key_columns(batch)?;
        self.runs += self.groups.assign(&keys, batch.height(), keep, &mut self.ids);
        let mut groups = self.groups.len();
        if keep.is_some() {
            let spare = groups as u32;
            self.ids.iter_mut().filter(|g| **g == LEFT_OUT).for_each(|g| *g = spare);
            groups += 1;
        }
        // The batch's rows per group, when small: every count of rows or of values without
        // nulls adds it instead of passing over the rows again (TPC-H Q1 has seven of them).
        let mut rows_per_group: Option<Vec<i64>> = None;
        for j in 0..self.slots.len() {
            let (done, rest) = self.slots.split_at_mut(j);
            let slot = &mut rest[0];
            // A slot folding what an earlier one folds (the same operation on the same input)
            // always holds what that one holds: with few groups, a copy costs less than a pass.
            if groups <= LANE_GROUPS
                && let Some(twin) = done.iter().find(|d| d.raw == slot.raw && d.acc.same_kind(&slot.acc))
            {
                slot.acc = twin.acc.clone();
                slot.seen.clone_from(&twin.seen);
                continue;
            }
            let (op, input) = slot.raw;
            let input = input.map(|i| &inputs[i]);
            let counts_rows = op == Op::Rows || (op == Op::Valid && input.is_some_and(|c| c.null_count() == 0));
            match &mut slot.acc {
                Acc::I64(acc) if counts_rows && groups <= LANE_GROUPS => {
                    let per_group = rows_per_group.get_or_insert_with(|| {
                        let mut n = vec![0; groups];
                        count_each(&mut n, &self.ids, groups);
                        n
                    });
                    acc.resize(groups, 0);
                    acc.iter_mut().zip(per_group.iter()).for_each(|(a, n)| *a += n);
                }
                _ => fold(slot, op, input, &self.ids, groups)?,
            }
            if keep.is_some() {
                slot.truncate(groups - 1);
            }
        }
        Ok(())
    }

    /// Folds a batch of partial states (the state columns) into the table.
    pub fn update_state(&mut self, batch: &DataFrame) -> PolarsResult<()> {
        let keys = self.key_columns(batch)?;
        self.groups.assign(&keys, batch.height(), None, &mut self.ids);
        let groups = self.groups.len();
        for slot in &mut self.slots {
            let column = batch.column(slot.name.as_str())?.clone();
            fold(slot, slot.merge, Some(&column), &self.ids, groups)?;
        }
        Ok(())
    }

    /// Each input row as a partial state of its own (the partial phase, when grouping hardly
    /// shrinks the rows, sends them on like this instead of hashing them).
    pub fn rows_as_state(&self, batch: &DataFrame) -> PolarsResult<DataFrame> {
        let inputs = self.evaluate(batch)?;
        let rows = batch.height();
        let mut columns = Vec::with_capacity(self.keys.len() + self.slots.len());
        for (k, dtype) in self.keys.iter().zip(&self.key_types) {
            // A key read as dictionary codes goes on as strings, as the state's schema says.
            columns.push(batch.column(k)?.cast(dtype)?);
        }
        for slot in &self.slots {
            let input = || slot.raw.1.map(|i| &inputs[i]).expect("values have an input");
            let column = match slot.raw.0 {
                Op::Rows => Int64Chunked::full(slot.name.clone(), 1, rows).into_column(),
                Op::Valid => input().is_not_null().cast(&DataType::Int64)?.into_column(),
                Op::Sum => input().cast(&slot.dtype)?.fill_null(FillNullStrategy::Zero)?,
                Op::Min | Op::Max => input().cast(&slot.dtype)?,
            };
            columns.push(column.with_name(slot.name.clone()));
        }
        DataFrame::new(rows, columns)
    }

    /// The table as partial-state rows: the keys, then the state columns.
    pub fn state(&self) -> PolarsResult<DataFrame> {
        let mut columns = self.key_state_columns()?;
        for slot in &self.slots {
            columns.push(to_logical(slot.acc.clone().into_series(slot.name.clone(), slot.validity()), &slot.dtype)?);
        }
        DataFrame::new(self.groups.len(), columns)
    }

    /// The table as partial-state rows, as [`AggregateTable::state`], leaving it empty: the
    /// accumulators move into the frame instead of being copied, and the group table's memory
    /// is given back (the final phase's last emit; with millions of groups the copy was as big
    /// again as the table).
    pub fn take_state(&mut self) -> PolarsResult<DataFrame> {
        let groups = self.groups.len();
        let mut columns = self.key_state_columns()?;
        self.groups.release();
        self.dictionaries.iter_mut().flatten().for_each(|d| *d = Dictionary::default());
        for slot in &mut self.slots {
            let validity = slot.validity();
            slot.seen = Vec::new();
            columns.push(to_logical(slot.acc.take().into_series(slot.name.clone(), validity), &slot.dtype)?);
        }
        DataFrame::new(groups, columns)
    }

    /// The key columns of the state, in group order.
    fn key_state_columns(&self) -> PolarsResult<Vec<Column>> {
        let mut columns = Vec::with_capacity(self.keys.len() + self.slots.len());
        for (((name, dtype), dictionary), (values, valid)) in self.keys.iter().zip(&self.key_types).zip(&self.dictionaries).zip(self.groups.columns()) {
            let column = match dictionary {
                Some(d) => d.decode(name.as_str().into(), &values, &valid).into_column(),
                None => to_logical(Int64Chunked::from_vec_validity(name.as_str().into(), values, Some(Bitmap::from_iter(valid))).into_series(), dtype)?,
            };
            columns.push(column);
        }
        Ok(columns)
    }

    /// How many runs of equal keys raw rows formed, each searched for in the group table,
    /// since the last call.
    pub fn take_runs(&mut self) -> usize {
        std::mem::take(&mut self.runs)
    }

    /// Groups raw rows by runs of equal keys from now on (see [`Groups::by_runs`]).
    pub fn group_by_runs(&mut self) {
        debug_assert!(self.is_empty(), "switched between emits");
        self.groups.by_runs();
    }

    /// Empties the table.
    pub fn clear(&mut self) {
        self.groups.clear();
        self.dictionaries.iter_mut().flatten().for_each(Dictionary::clear);
        for slot in &mut self.slots {
            slot.seen.clear();
            slot.acc.clear();
        }
    }
}

/// A physical series (i64, f64 or i128 values) as a column of logical type `dtype`.
fn to_logical(series: Series, dtype: &DataType) -> PolarsResult<Column> {
    let physical = series.cast(&dtype.to_physical())?;
    // SAFETY: the values came from a column of this type (or are counts and sums of it).
    Ok(unsafe { physical.from_physical_unchecked(dtype)? }.into_column())
}

/// Folds one input column (None for a row count) into a slot's accumulators, by group id.
fn fold(slot: &mut Slot, op: Op, input: Option<&Column>, ids: &[u32], groups: usize) -> PolarsResult<()> {
    if matches!(op, Op::Min | Op::Max) {
        slot.seen.resize(groups, false);
    }
    match (&mut slot.acc, op) {
        (Acc::I64(acc), Op::Rows) => {
            acc.resize(groups, 0);
            count_each(acc, ids, groups);
        }
        (Acc::I64(acc), Op::Valid) => {
            acc.resize(groups, 0);
            let mut offset = 0;
            for chunk in input.expect("a count of values has an input").as_materialized_series().chunks() {
                let ids = &ids[offset..offset + chunk.len()];
                offset += chunk.len();
                match chunk.validity().filter(|b| b.unset_bits() > 0) {
                    None => count_each(acc, ids, groups),
                    Some(b) => ids.iter().zip(b.iter()).for_each(|(&g, ok)| acc[g as usize] += ok as i64),
                }
            }
        }
        (Acc::I64(acc), op) => fold_values::<Int64Type>(acc, &mut slot.seen, op, input, ids, groups, DataType::Int64)?,
        (Acc::F64(acc), op) => fold_values::<Float64Type>(acc, &mut slot.seen, op, input, ids, groups, DataType::Float64)?,
        (Acc::I128(acc), op) => fold_values::<Int128Type>(acc, &mut slot.seen, op, input, ids, groups, DataType::Int128)?,
    }
    Ok(())
}

/// Sums, minima or maxima of an input column's values into accumulators of type `T`.
fn fold_values<T>(
    acc: &mut Vec<T::Native>,
    seen: &mut [bool],
    op: Op,
    input: Option<&Column>,
    ids: &[u32],
    groups: usize,
    physical: DataType,
) -> PolarsResult<()>
where
    T: PolarsNumericType,
    T::Native: Num,
{
    acc.resize(groups, T::Native::default());
    let column = input.expect("sums and extremes have an input");
    let series = column.as_materialized_series().to_physical_repr().cast(&physical)?;
    let ca: &ChunkedArray<T> = series.as_ref().as_ref();
    let mut offset = 0;
    for arr in ca.downcast_iter() {
        let values = arr.values().as_slice();
        let ids = &ids[offset..offset + values.len()];
        offset += values.len();
        let valid = arr.validity().filter(|b| b.unset_bits() > 0);
        // Integer sums are exact in any order; float sums keep the rows' order.
        if op == Op::Sum && valid.is_none() && groups <= LANE_GROUPS && physical != DataType::Float64 {
            sum_in_lanes(&mut acc[..groups], ids, |i| values[i]);
            continue;
        }
        let rows = ids.iter().zip(values).enumerate().filter(|(i, _)| valid.is_none_or(|b| unsafe { b.get_bit_unchecked(*i) }));
        let far = groups > PREFETCH_GROUPS;
        match op {
            Op::Sum => rows.for_each(|(i, (&g, &v))| {
                if far {
                    prefetch(acc, ids, i + PREFETCH_AHEAD);
                }
                let a = &mut acc[g as usize];
                *a = a.plus(v);
            }),
            Op::Min | Op::Max => rows.for_each(|(_, (&g, &v))| {
                let g = g as usize;
                let better = if op == Op::Min { v < acc[g] } else { v > acc[g] };
                if !seen[g] || better {
                    acc[g] = v;
                    seen[g] = true;
                }
            }),
            Op::Rows | Op::Valid => unreachable!("counts are folded by fold"),
        }
    }
    Ok(())
}

/// With more groups than this (or more slots in the group table), accumulators and slots are
/// beyond the caches: each row's update is a memory access, so the one `PREFETCH_AHEAD` rows on
/// is requested early (the group ids of a batch are known before any accumulator is updated).
/// A 10 M-key group-by spent most of its time waiting for these.
const PREFETCH_GROUPS: usize = 1 << 16;
const PREFETCH_AHEAD: usize = 16;

/// Asks the CPU to bring the memory at `p` into the caches.
#[inline(always)]
fn prefetch_address<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching never faults and has no effect on memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A table of `n` zeros whose memory pages have all been written.
///
/// `vec![0; n]` gets pages the kernel has not mapped yet. A probe reads a slot before it writes
/// one, and a first read maps the shared zero page: the write after it then copies the page and
/// flushes the address from every core's TLB (an interrupt to the other core, which is dear in
/// a virtual machine). That was a fifth of TPC-H Q18's time. One write per page first makes each
/// page a single ordinary fault.
fn written_zeros(n: usize) -> Vec<u64> {
    let mut table = vec![0u64; n];
    const PER_PAGE: usize = 4096 / std::mem::size_of::<u64>();
    for i in (0..n).step_by(PER_PAGE) {
        // SAFETY: `i < n`; volatile so that the store of a value already there is kept.
        unsafe { std::ptr::write_volatile(table.as_mut_ptr().add(i), 0) };
    }
    table
}

/// Asks the CPU to fetch the accumulator of row `i`'s group (no-op past the end).
#[inline(always)]
fn prefetch<T>(acc: &[T], ids: &[u32], i: usize) {
    if let Some(&g) = ids.get(i) {
        prefetch_address(acc.as_ptr().wrapping_add(g as usize));
    }
}

/// Adds 1 to the accumulator of each row's group.
fn count_each(acc: &mut [i64], ids: &[u32], groups: usize) {
    if groups <= LANE_GROUPS {
        return sum_in_lanes(&mut acc[..groups], ids, |_| 1);
    }
    let far = groups > PREFETCH_GROUPS;
    ids.iter().enumerate().for_each(|(i, &g)| {
        if far {
            prefetch(acc, ids, i + PREFETCH_AHEAD);
        }
        acc[g as usize] += 1
    });
}

/// Key values below this are looked up directly (see [`GroupMap::direct`]).
const DIRECT_VALUES: i64 = 256;

/// Up to this many groups, sums and counts are folded in [`sum_in_lanes`].
const LANE_GROUPS: usize = 256;

/// Adds `value(i)` to the accumulator of row `i`'s group, for every row of `ids`. With few
/// groups, consecutive rows mostly hit the same accumulator, and each addition waits for the
/// one before it to be stored (TPC-H Q1: 4 groups, 15 sums of 6 M rows, a third of its time).
/// Eight copies of the accumulators, taken in turn, let eight additions run at once; they are
/// added together at the end. Only for additions that are exact in any order (integers). Eight
/// rather than four: TPC-H Q1 on Parquet 5% faster on an AMD EPYC (a 128-bit addition to memory
/// is two dependent writes).
fn sum_in_lanes<N: Num>(acc: &mut [N], ids: &[u32], value: impl Fn(usize) -> N) {
    const LANES: usize = 8;
    let groups = acc.len();
    let mut lanes = vec![N::default(); LANES * groups];
    let whole = ids.len() / LANES * LANES;
    for row in (0..whole).step_by(LANES) {
        for lane in 0..LANES {
            let a = &mut lanes[lane * groups + ids[row + lane] as usize];
            *a = a.plus(value(row + lane));
        }
    }
    for row in whole..ids.len() {
        let a = &mut lanes[ids[row] as usize];
        *a = a.plus(value(row));
    }
    for lane in lanes.chunks_exact(groups.max(1)) {
        for (a, &l) in acc.iter_mut().zip(lane) {
            *a = a.plus(l);
        }
    }
}

/// Partial states of at most this many groups times the batch size are held by the partial
/// phase before it sends them on: the partial phase only shrinks what crosses the exchange,
/// and a bounded table stays in cache and in memory. One batch's worth (64 K groups by
/// default) was faster than four on every case measured: TPC-H Q18 on Parquet (1.5 M orders,
/// lines clustered by order) 0.44 s to 0.35 s, a group-by of lineitem by its 200 K random part
/// keys 0.23-0.25 s to 0.19-0.20 s, 10 M keys unchanged (the table's memory is touched once).
const PARTIAL_BATCHES: usize = 1;

/// One subtask of a keyed aggregate over a [`AggregateTable`].
pub struct HashAggregateOperator {
    name: String,
    node: usize,
    plan: AggregatePlan,
    phase: Phase,
    table: AggregateTable,
    /// The partial phase sends its table on when it holds this many groups.
    flush_at: usize,
    /// Rows folded into the table since it was last sent on.
    folded: usize,
    /// The partial phase found (at a flush) that most rows have keys of their own: it sends
    /// each row on as its own partial state, and the final phase groups them (as DuckDB and
    /// Flink skip pre-aggregation that does not pay).
    pass_on: bool,
    /// The partial phase found (at a flush) that nearly every run of equal keys had a key of
    /// its own (input clustered by key, like TPC-H's lineitem by order): it folds each run into
    /// a partial state without searching a table, and sends each batch's states on.
    by_runs: bool,
    batch_rows: usize,
    metrics: Arc<Metrics>,
    /// A filter just before a partial phase, run inside it (see [`Prefilter`]).
    prefilter: Option<Prefilter>,
    /// Every group is complete at the end of each split of the source this operator is
    /// chained to (`optimize::clustered_aggregation`): both phases empty the table there, the
    /// final one into final values.
    per_split: bool,
}

/// A filter chained just before the partial phase, with `on_error = "fail"` and a condition
/// [`row_eval`] computes. When it keeps most rows, they are folded where they are (the rows it
/// drops go to a spare group) instead of being copied into a new batch first: TPC-H Q1's filter
/// keeps 98% of lineitem, and the copy was most of its cost. Its counters stay its own.
pub struct Prefilter {
    /// The filter's node.
    pub node: usize,
    /// The filter's name (for its errors).
    pub name: String,
    /// Its condition.
    pub predicate: Expr,
}

impl HashAggregateOperator {
    /// An operator for node `node`, or `None` when the plan needs the frame-based reduction.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        node: usize,
        plan: &AggregatePlan,
        phase: Phase,
        batch_rows: usize,
        input_schema: &Schema,
        state_schema: &Schema,
        metrics: Arc<Metrics>,
    ) -> Option<Self> {
        let table = AggregateTable::new(plan, input_schema, state_schema)?;
        let flush_at = PARTIAL_BATCHES * batch_rows;
        Some(HashAggregateOperator {
            name,
            node,
            plan: plan.clone(),
            phase,
            table,
            flush_at,
            folded: 0,
            pass_on: false,
            by_runs: false,
            batch_rows,
            metrics,
            prefilter: None,
            per_split: false,
        })
    }

    /// Empties the table at the end of every split of the source (see the field).
    pub fn per_split(mut self) -> Self {
        self.per_split = true;
        self
    }

    /// Runs `filter` (a partial phase's chained filter) inside this operator.
    pub fn with_prefilter(mut self, filter: Prefilter) -> Self {
        debug_assert_eq!(self.phase, Phase::Partial);
        self.prefilter = Some(filter);
        self
    }

    /// Applies the prefilter to `batch`, counting for the filter: None when no row passes;
    /// else the batch (filtered when few rows pass), when most but not all pass the rows to
    /// keep, and how many rows go on.
    fn prefiltered(&self, batch: DataFrame) -> Result<Option<(DataFrame, Option<BooleanChunked>, usize)>> {
        let Some(f) = &self.prefilter else {
            let rows = batch.height();
            return Ok(Some((batch, None, rows)));
        };
        let start = Instant::now();
        let fail = |e: PolarsError| Error::execution("operator", &f.name, clean(&e));
        let rows = batch.height();
        let keep = row_eval::eval_condition(&f.predicate, &batch).map_err(fail)?;
        let kept = keep.sum().unwrap_or(0) as usize;
        let m = &self.metrics.nodes[f.node];
        NodeMetrics::add(&m.rows_in, rows as u64);
        NodeMetrics::add(&m.rows_out, kept as u64);
        NodeMetrics::add(&m.filtered, (rows - kept) as u64);
        let out = match kept {
            0 => None,
            k if k == rows => Some((batch, None, k)),
            // Few rows pass: folding them from a smaller copy is cheaper.
            k if 2 * k < rows || self.pass_on => Some((batch.filter_seq(&keep).map_err(fail)?, None, k)),
            k => Some((batch, Some(keep), k)),
        };
        m.add_time(start.elapsed());
        Ok(out)
    }

    fn fail(&self, e: PolarsError) -> Error {
        Error::execution("operator", &self.name, clean(&e))
    }

    /// Sends the partial table on, and decides from what it held how to fold from now on.
    fn flush(&mut self, out: &mut dyn Collector) -> Result<()> {
        let (groups, runs) = (self.table.len(), self.table.take_runs());
        let switch = !self.by_runs && {
            self.pass_on = 2 * groups > self.folded;
            // The table merged fewer than one run in ten with an earlier one.
            !self.pass_on && runs > 0 && 10 * groups >= 9 * runs
        };
        self.folded = 0;
        self.emit(out)?;
        if switch {
            self.by_runs = true;
            self.table.group_by_runs();
        }
        Ok(())
    }

    /// Sends the table on (partial phase) or its final values (final phase), and empties it.
    fn emit(&mut self, out: &mut dyn Collector) -> Result<()> {
        if self.table.is_empty() {
            // A global aggregate over no rows still answers one row (count 0, others null).
            if self.phase == Phase::Final && self.plan.keyless() {
                let empty = self.table.state().map_err(|e| self.fail(e))?;
                let row = self.plan.finalize(self.plan.merge(empty.lazy())).collect().map_err(|e| self.fail(e))?;
                NodeMetrics::add(&self.metrics.nodes[self.node].rows_out, row.height() as u64);
                return out.collect(row);
            }
            return Ok(());
        }
        let rows = match self.phase {
            Phase::Partial => {
                let state = self.table.state().map_err(|e| self.fail(e))?;
                self.table.clear();
                state
            }
            // Per split, the table is emptied for the next split's groups, keeping its memory.
            Phase::Final if self.per_split => {
                let state = self.table.state().map_err(|e| self.fail(e))?;
                self.table.clear();
                self.plan.finalize(state.lazy()).collect().map_err(|e| self.fail(e))?
            }
            // Otherwise a final phase emits once, at the end of its input.
            Phase::Final => {
                let state = self.table.take_state().map_err(|e| self.fail(e))?;
                self.plan.finalize(state.lazy()).collect().map_err(|e| self.fail(e))?
            }
        };
        NodeMetrics::add(&self.metrics.nodes[self.node].rows_out, rows.height() as u64);
        emit_in_batches(&rows, self.batch_rows, out)
    }
}

impl Operator for HashAggregateOperator {
    fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
        let Some((batch, keep, rows)) = self.prefiltered(batch)? else { return Ok(()) };
        let start = Instant::now();
        let m = &self.metrics.nodes[self.node];
        NodeMetrics::add(&m.rows_in, rows as u64);
        if self.pass_on {
            let rows = self.table.rows_as_state(&batch).map_err(|e| self.fail(e))?;
            m.add_time(start.elapsed());
            NodeMetrics::add(&m.rows_out, rows.height() as u64);
            return if rows.height() > 0 { out.collect(rows) } else { Ok(()) };
        }
        let folded = match (self.phase, &keep) {
            (Phase::Partial, Some(keep)) => self.table.update_raw_kept(&batch, keep),
            (Phase::Partial, None) => self.table.update_raw(&batch),
            (Phase::Final, _) => self.table.update_state(&batch),
        };
        folded.map_err(|e| self.fail(e))?;
        self.folded += rows;
        self.metrics.nodes[self.node].add_time(start.elapsed());
        if self.phase == Phase::Partial && (self.by_runs || self.table.len() >= self.flush_at) {
            self.flush(out)?;
        }
        Ok(())
    }

    fn on_split_end(&mut self, out: &mut dyn Collector) -> Result<()> {
        if !self.per_split {
            return out.end_of_split();
        }
        let start = Instant::now();
        match self.phase {
            // The final phase must get every state of the split before it hears of its end.
            Phase::Partial => {
                if !self.table.is_empty() {
                    self.flush(out)?;
                }
                out.end_of_split()?;
            }
            // It ends here: after it, no operator's groups are known to be complete.
            Phase::Final => self.emit(out)?,
        }
        self.metrics.nodes[self.node].add_time(start.elapsed());
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        // The frame-based reduction's format: either operator restores the other's snapshot.
        let state = self.table.state().map_err(|e| self.fail(e))?;
        let mut w = StateWriter::new(REDUCE_STATE);
        w.frame("state", (state.height() > 0).then_some(&state))?;
        w.value("compact_at", &self.flush_at)?;
        w.value("pass_on", &self.pass_on)?;
        Ok(w.finish())
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let r = StateReader::open(state, REDUCE_STATE)?;
        if let Some(frame) = r.frame("state")? {
            self.table.update_state(&frame).map_err(|e| self.fail(e))?;
        }
        self.pass_on = r.value("pass_on")?;
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Collector) -> Result<()> {
        let start = Instant::now();
        self.emit(out)?;
        self.metrics.nodes[self.node].add_time(start.elapsed());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::operators::aggregate::AggSpec;
    use crate::plan::expr::AggFunc::*;

    fn spec(name: &str, func: AggFunc, arg: Option<Expr>) -> AggSpec {
        AggSpec { name: name.into(), func, arg, q: None }
    }

    fn plan(keys: &[&str], aggs: Vec<AggSpec>) -> AggregatePlan {
        AggregatePlan { keys: keys.iter().map(|k| k.to_string()).collect(), aggs, ordered: false }
    }

    fn state_schema(plan: &AggregatePlan, input: &DataFrame) -> SchemaRef {
        plan.partial(input.clear().lazy()).collect_schema().unwrap()
    }

    fn sorted(df: DataFrame, keys: &[&str]) -> DataFrame {
        if keys.is_empty() {
            return df;
        }
        df.sort(keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(), SortMultipleOptions::default().with_nulls_last(true)).unwrap()
    }

    /// Half the rows folded by a partial table, the other half passed on row by row, both
    /// merged by a final table and finalised: the answer must equal polars' one-phase aggregate.
    /// Then again with the first half folded by runs of equal keys (each batch sent on).
    fn check(plan: &AggregatePlan, input: &DataFrame) {
        check_with(plan, input, false);
        check_with(plan, input, true);
    }

    fn check_with(plan: &AggregatePlan, input: &DataFrame, by_runs: bool) {
        let state = state_schema(plan, input);
        let keys: Vec<&str> = plan.keys.iter().map(String::as_str).collect();
        let half = input.height() as i64 / 2;
        let mut final_table = AggregateTable::new(plan, input.schema(), &state).expect("the table takes this plan");
        let mut partial = AggregateTable::new(plan, input.schema(), &state).unwrap();
        if by_runs {
            partial.group_by_runs();
        }
        // In batches of 3 rows, so groups grow between batches.
        for offset in (0..half).step_by(3) {
            partial.update_raw(&input.slice(offset, 3.min((half - offset) as usize))).unwrap();
            if by_runs {
                let batch_state = partial.state().unwrap();
                partial.clear();
                final_table.update_state(&batch_state).unwrap();
            }
        }
        let partial_state = partial.state().unwrap();
        assert_eq!(partial_state.schema(), &state, "the partial state has the frame reduction's schema");
        final_table.update_state(&partial_state).unwrap();
        // The other half passed on row by row, as a partial phase does when keys hardly repeat.
        for offset in (half as usize..input.height()).step_by(3) {
            let rows = partial.rows_as_state(&input.slice(offset as i64, 3)).unwrap();
            assert_eq!(rows.schema(), &state, "rows passed on have the state's schema");
            final_table.update_state(&rows).unwrap();
        }
        // The final phase's last emit moves the state out: the same frame, and an empty table.
        let copied = final_table.state().unwrap();
        let taken = final_table.take_state().unwrap();
        assert!(taken.equals_missing(&copied), "take_state\n{taken}\nstate\n{copied}");
        assert!(final_table.is_empty() && final_table.state().unwrap().height() == 0);
        let got = sorted(plan.finalize(taken.lazy()).collect().unwrap(), &keys);
        let want = sorted(plan.single_phase(input.clone().lazy()).collect().unwrap(), &keys);
        for (g, w) in got.columns().iter().zip(want.columns()) {
            // Float sums may round differently in another order of additions.
            let close = g.dtype() == &DataType::Float64
                && g.f64().unwrap().iter().zip(w.f64().unwrap().iter()).all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
                    (a, b) => a == b,
                });
            assert!(
                close || g.equals_missing(w),
                "{keys:?}: column {}\ngot  {:?}\nwant {:?}",
                g.name(),
                g.as_materialized_series(),
                w.as_materialized_series()
            );
        }
        assert_eq!(got.get_column_names(), want.get_column_names());
    }

    fn data() -> DataFrame {
        let dates = Int32Chunked::new("d".into(), [Some(19000), Some(19001), None, Some(19000), Some(19000), Some(19001), Some(18000), None]).into_date();
        let price =
            Int128Chunked::new("price".into(), [Some(1050i128), Some(99), None, Some(-5), Some(1), Some(2), Some(3), Some(4)]).into_decimal(15, 2).unwrap();
        df!(
            "k" => [Some(1i64), Some(2), Some(1), None, Some(1), None, Some(2), Some(3)],
            "k32" => [5i32, 5, 6, 6, 5, 5, 6, 6],
            "ku" => [Some(1u32), Some(1), Some(1), Some(1), None, None, Some(2), Some(2)],
            "s" => [Some("R"), Some("A"), Some("R"), None, Some("a string longer than twelve"), Some("R"), None, Some("A")],
            "x" => [Some(10i64), None, Some(-3), Some(7), Some(1), None, Some(2), None],
            "small" => [Some(1i16), Some(2), None, Some(4), Some(5), Some(6), Some(7), Some(8)],
            "f" => [Some(0.5), Some(1.5), None, Some(2.25), Some(-1.0), Some(3.0), None, Some(4.0)],
            "d" => dates.into_series(),
            "price" => price.into_series(),
        )
        .unwrap()
    }

    fn every_aggregate() -> Vec<AggSpec> {
        vec![
            spec("rows", Count, None),
            spec("xs", Count, Some(col("x"))),
            spec("sum_x", Sum, Some(col("x"))),
            spec("sum_small", Sum, Some(col("small"))),
            spec("sum_f", Sum, Some(col("f"))),
            spec("sum_price", Sum, Some(col("price"))),
            spec("sum_expr", Sum, Some(col("x") * lit(2) + col("small").cast(DataType::Int64))),
            spec("mean_x", Mean, Some(col("x"))),
            spec("mean_price", Mean, Some(col("price"))),
            spec("min_x", Min, Some(col("x"))),
            spec("max_x", Max, Some(col("x"))),
            spec("first_day", Min, Some(col("d"))),
            spec("last_day", Max, Some(col("d"))),
            spec("min_price", Min, Some(col("price"))),
            spec("max_small", Max, Some(col("small"))),
        ]
    }

    #[test]
    fn equals_polars_without_keys_and_on_integer_like_date_and_string_keys_with_nulls() {
        let input = data();
        for keys in [&[][..], &["k"], &["k32", "ku"], &["d"], &["k", "k32", "d"], &["s"], &["s", "k32"], &["k", "s", "ku", "d"]] {
            check(&plan(keys, every_aggregate()), &input);
        }
    }

    #[test]
    fn rows_left_out_by_a_mask_are_folded_nowhere() {
        // Folding the rows a mask keeps (with nulls in the mask, which keep nothing) equals
        // folding a filtered copy, on every aggregate, with and without keys; twice, so the
        // spare group is dropped between batches.
        let input = data();
        let keep = BooleanChunked::new("keep".into(), [Some(true), Some(false), Some(true), None, Some(true), Some(true), Some(false), Some(true)]);
        for keys in [&[][..], &["k"], &["s", "k32"], &["d"]] {
            let p = plan(keys, every_aggregate());
            let state = state_schema(&p, &input);
            let mut masked = AggregateTable::new(&p, input.schema(), &state).unwrap();
            let mut copied = AggregateTable::new(&p, input.schema(), &state).unwrap();
            for _ in 0..2 {
                masked.update_raw_kept(&input, &keep).unwrap();
                copied.update_raw(&input.filter(&keep).unwrap()).unwrap();
            }
            let (a, b) = (masked.state().unwrap(), copied.state().unwrap());
            assert!(a.equals_missing(&b), "{keys:?}\nmasked\n{a}\ncopied\n{b}");
        }
    }

    #[test]
    fn shared_subexpressions_and_means_of_expressions_are_computed_from_the_batch() {
        let twice = || col("x") * lit(2);
        let aggs = vec![spec("a", Sum, Some(twice())), spec("b", Sum, Some(twice() + lit(1))), spec("m", Mean, Some(twice()))];
        check(&plan(&["k"], aggs), &data());
    }

    #[test]
    fn an_argument_of_several_aggregates_is_read_once_and_equal_slots_are_copied() {
        // sum and mean of the same decimal, twice each, and two counts of rows: two inputs.
        let aggs = vec![
            spec("s", Sum, Some(col("price"))),
            spec("m", Mean, Some(col("price"))),
            spec("n", Count, None),
            spec("s2", Sum, Some(col("price"))),
            spec("n2", Count, None),
            spec("lo", Min, Some(col("price"))),
            spec("lo2", Min, Some(col("price"))),
            spec("x", Sum, Some(col("x"))),
        ];
        let p = plan(&["k"], aggs);
        let table = AggregateTable::new(&p, data().schema(), &state_schema(&p, &data())).unwrap();
        let Inputs::Plain(columns) = &table.inputs else { panic!("plain columns") };
        assert_eq!(columns.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["price", "x"]);
        check(&p, &data());
        for keys in [&[][..], &["k"], &["d"]] {
            check(&plan(keys, every_aggregate()), &data());
        }
    }

    #[test]
    fn decimal_and_f64_arithmetic_is_evaluated_without_a_polars_query_and_agrees() {
        use crate::plan::decimal::{Arith, arith};
        let disc = || arith(Arith::Mul, col("price"), arith(Arith::Sub, lit(1), col("price")));
        let aggs = vec![
            spec("a", Sum, Some(disc())),
            spec("b", Sum, Some(arith(Arith::Mul, disc(), arith(Arith::Add, lit(1), col("price"))))),
            spec("m", Mean, Some(disc())),
            spec("f", Sum, Some(col("f") * (lit(1) - col("f")))),
            spec("g", Mean, Some((col("f") * (lit(1) - col("f"))).cast(DataType::Float64))),
        ];
        let p = plan(&["s", "k"], aggs);
        let input = data();
        let table = AggregateTable::new(&p, input.schema(), &state_schema(&p, &input)).unwrap();
        assert!(matches!(table.inputs, Inputs::Computed { direct: true, .. }), "every argument is one row_eval takes");
        check(&p, &input);
    }

    #[test]
    fn a_table_of_many_groups_grows_and_prefetches_without_losing_a_row() {
        // 150 K keys in scattered order, 3 rows each, with a null key: the table grows many
        // times and probes with prefetching (more slots than PREFETCH_GROUPS).
        let n = 450_000i64;
        let keys: Vec<Option<i64>> = (0..n).map(|i| if i % 100_003 == 0 { None } else { Some(i * 7919 % 150_000) }).collect();
        let input = df!("k" => keys, "x" => (0..n).collect::<Vec<_>>()).unwrap();
        check(&plan(&["k"], vec![spec("n", Count, None), spec("s", Sum, Some(col("x")))]), &input);
    }

    #[test]
    fn small_keys_found_directly_share_groups_with_keys_that_are_not() {
        // Batches of 3 rows: some with every key value in 0..256 (looked up directly), some
        // with a larger value or a null (hashed), over the same groups.
        let n = 600i64;
        let a: Vec<Option<i64>> = (0..n)
            .map(|i| {
                if i % 17 == 0 {
                    None
                } else if i % 13 == 0 {
                    Some(300)
                } else {
                    Some(i % 5)
                }
            })
            .collect();
        let b: Vec<i64> = (0..n).map(|i| i % 3 * 100).collect();
        let input = df!("a" => a, "b" => b, "x" => (0..n).collect::<Vec<_>>()).unwrap();
        for keys in [&["a"][..], &["a", "b"], &["b"]] {
            check(&plan(keys, vec![spec("n", Count, None), spec("s", Sum, Some(col("x")))]), &input);
        }
    }

    #[test]
    fn sums_in_lanes_equal_sums_row_by_row() {
        // Row counts that leave 0 to 3 rows past the last whole set of lanes, and values that
        // wrap around, as polars' integer sums do.
        for rows in [0usize, 1, 5, 6, 7, 8, 1001] {
            let ids: Vec<u32> = (0..rows).map(|i| (i * 7 % 5) as u32).collect();
            let values: Vec<i64> = (0..rows).map(|i| if i % 3 == 0 { i64::MAX - i as i64 } else { i as i64 }).collect();
            let mut want = vec![3i64; 5];
            for (&g, &v) in ids.iter().zip(&values) {
                want[g as usize] = want[g as usize].wrapping_add(v);
            }
            let mut got = vec![3i64; 5];
            sum_in_lanes(&mut got, &ids, |i| values[i]);
            assert_eq!(got, want, "{rows} rows");
            let mut counts = vec![0i64; 5];
            count_each(&mut counts, &ids, 5);
            assert_eq!(counts.iter().sum::<i64>(), rows as i64);
            assert!((0..5).all(|g| counts[g] == ids.iter().filter(|&&i| i == g as u32).count() as i64));
        }
    }

    #[test]
    fn keys_with_nulls_keep_their_own_groups_through_growth() {
        // Two key columns, nulls in either or both, and the key (0, 0), whose values equal
        // those a null group keeps beside the table: about 12,000 groups make the table grow
        // after the null groups were made.
        let n = 12_000i64;
        let a: Vec<Option<i64>> = (0..n).map(|i| if i % 7 == 3 { None } else { Some(i % 40) }).collect();
        let b: Vec<Option<i64>> = (0..n).map(|i| if i % 11 == 5 { None } else { Some(i % 4001) }).collect();
        let input = df!("a" => a, "b" => b, "x" => (0..n).collect::<Vec<_>>()).unwrap();
        check(&plan(&["a", "b"], vec![spec("n", Count, None), spec("s", Sum, Some(col("x")))]), &input);
        check(&plan(&["a"], vec![spec("n", Count, None), spec("s", Sum, Some(col("x")))]), &input);
    }

    #[test]
    fn a_key_that_returns_after_a_run_of_others_keeps_its_group() {
        let input = df!("k" => [1i64, 1, 2, 2, 1, 3, 1], "x" => [1i64, 2, 3, 4, 5, 6, 7]).unwrap();
        let p = plan(&["k"], vec![spec("s", Sum, Some(col("x")))]);
        let mut table = AggregateTable::new(&p, input.schema(), &state_schema(&p, &input)).unwrap();
        table.update_raw(&input).unwrap();
        assert_eq!(table.len(), 3);
        let out = sorted(p.finalize(table.state().unwrap().lazy()).collect().unwrap(), &["k"]);
        assert_eq!(out.column("s").unwrap().i64().unwrap().into_no_null_iter().collect::<Vec<_>>(), [15, 7, 6]);
        table.clear();
        assert_eq!(table.len(), 0);
        assert_eq!(table.state().unwrap().height(), 0);
    }

    #[test]
    fn keys_and_aggregates_it_cannot_fold_are_left_to_the_frame_reduction() {
        let input = df!("s" => ["a"], "k" => [1i64], "f" => [1.0f64], "i" => [1i32]).unwrap();
        let refuses = |keys: &[&str], agg: AggSpec| {
            let p = plan(keys, vec![agg]);
            AggregateTable::new(&p, input.schema(), &state_schema(&p, &input)).is_none()
        };
        assert!(!refuses(&["s", "k"], spec("n", Count, None)), "string keys get codes");
        assert!(refuses(&["f"], spec("n", Count, None)), "float keys");
        assert!(!refuses(&[], spec("n", Count, None)), "one global group");
        assert!(refuses(&["k"], spec("m", Min, Some(col("f")))), "float extremes (NaN rules)");
        assert!(refuses(&["k"], spec("m", Median, Some(col("f")))), "lists of values");
        assert!(refuses(&["k"], spec("s", Sum, Some(col("i")))), "an Int32 sum stays Int32 and wraps there");
        assert!(!refuses(&["k"], spec("s", Sum, Some(col("f")))));
    }

    /// Runs every batch of `batches` through a partial and a final operator and returns the
    /// answer sorted by `k`, and whether the partial phase switched to folding by runs.
    fn two_phases(plan: &AggregatePlan, batches: &[DataFrame], batch_rows: usize) -> (DataFrame, bool) {
        let input = &batches[0];
        let state = state_schema(plan, input);
        let metrics = Arc::new(Metrics::new(1));
        let new = |phase| HashAggregateOperator::new("agg".into(), 0, plan, phase, batch_rows, input.schema(), &state, metrics.clone()).unwrap();
        let (mut partial, mut last) = (new(Phase::Partial), new(Phase::Final));
        let mut states = crate::exec::operator::Collected::default();
        for b in batches {
            partial.process(b.clone(), &mut states).unwrap();
        }
        partial.finish(&mut states).unwrap();
        let mut out = crate::exec::operator::Collected::default();
        for s in states.batches {
            last.process(s, &mut out).unwrap();
        }
        last.finish(&mut out).unwrap();
        let mut answer = out.batches.into_iter().reduce(|a, b| a.vstack(&b).unwrap()).unwrap();
        answer.rechunk_mut();
        (sorted(answer, &["k"]), partial.by_runs)
    }

    #[test]
    fn clustered_keys_are_folded_by_runs_and_scattered_ones_by_the_table() {
        let p = plan(&["k"], vec![spec("n", Count, None), spec("s", Sum, Some(col("x"))), spec("m", Max, Some(col("x")))]);
        // Keys in runs of 4 (a run may straddle two batches), with a null key run and nulls in x.
        let clustered = |k: i64| if k % 97 == 5 { None } else { Some(k / 4) };
        let scattered = |k: i64| Some(k * 7919 % 1000);
        for (key, runs) in [(&clustered as &dyn Fn(i64) -> Option<i64>, true), (&scattered, false)] {
            let rows: Vec<i64> = (0..4000).collect();
            let k: Vec<Option<i64>> = rows.iter().map(|&i| key(i)).collect();
            let x: Vec<Option<i64>> = rows.iter().map(|&i| (i % 13 != 0).then_some(i % 50 - 20)).collect();
            let input = df!("k" => k, "x" => x).unwrap();
            let batches: Vec<DataFrame> = (0..4000).step_by(250).map(|o| input.slice(o, 250)).collect();
            let (got, switched) = two_phases(&p, &batches, 500);
            assert_eq!(switched, runs, "folded by runs");
            let want = sorted(p.single_phase(input.lazy()).collect().unwrap(), &["k"]);
            assert!(got.equals_missing(&want), "got\n{got}\nwant\n{want}");
        }
    }

    /// Chained per split, the partial phase sends its table on at the end of each split and the
    /// final phase answers that split's groups there, with an empty table after.
    #[test]
    fn per_split_phases_answer_each_split_at_its_end() {
        use crate::exec::operator::{Chain, Collected, Collector, Operator};
        let p = plan(&["k"], vec![spec("n", Count, None), spec("s", Sum, Some(col("x")))]);
        let splits = [df!("k" => [1i64, 2, 1], "x" => [10i64, 20, 30]).unwrap(), df!("k" => [3i64, 3], "x" => [1i64, 2]).unwrap()];
        let state = state_schema(&p, &splits[0]);
        let metrics = Arc::new(Metrics::new(1));
        let new = |phase| HashAggregateOperator::new("agg".into(), 0, &p, phase, 1000, splits[0].schema(), &state, metrics.clone()).unwrap().per_split();
        let mut ops: Vec<Box<dyn Operator>> = vec![Box::new(new(Phase::Partial)), Box::new(new(Phase::Final))];
        let mut out = Collected::default();
        let mut answers = Vec::new();
        for split in &splits {
            let mut chain = Chain::new(&mut ops, &mut out);
            chain.collect(split.clone()).unwrap();
            chain.end_of_split().unwrap();
            let batch = out.batches.drain(..).reduce(|a, b| a.vstack(&b).unwrap()).expect("answered at the split's end");
            answers.push(sorted(batch, &["k"]));
        }
        Chain::new(&mut ops, &mut out).finish().unwrap();
        assert!(out.batches.is_empty(), "nothing left at the end");
        assert_eq!(answers[0], df!("k" => [1i64, 2], "n" => [2i64, 1], "s" => [40i64, 20]).unwrap());
        assert_eq!(answers[1], df!("k" => [3i64], "n" => [2i64], "s" => [3i64]).unwrap());
    }
}
