//! A join's right side as a hash table built once, probed by every left batch.
//!
//! polars joins two frames at a time: joining each left batch with the right side rebuilt the
//! hash table of the right side for every batch (half of TPC-H Q5's time), and batches were
//! gathered to amortize that. Here the table is built once and each batch is probed as it
//! arrives. The keys are read as one or two integer columns (see [`JoinKeys`]: strings as codes
//! of a dictionary of the right side's, floats as their bits, three or more columns folded into
//! two); decimals and nested types use polars' join.
use polars::polars_utils::aliases::PlHashMap;
use polars::prelude::*;

use super::join::How;
use super::join_keys::JoinKeys;
use super::stateless::SEQ_COLUMN;

/// End of a chain of right rows with equal keys.
const END: IdxSize = IdxSize::MAX;

/// Key columns as one value per row: `None` for a row with a null key, which matches nothing.
trait Key: Copy + Eq + std::hash::Hash {
    /// The key as one integer, for a table addressed by it (None: keys of two columns).
    fn single(self) -> Option<i64>;

    /// Calls `f` with each row's index and key, in order.
    fn each(df: &DataFrame, on: &[String], f: impl FnMut(usize, Option<Self>)) -> PolarsResult<()>;

    /// Calls `f` with each row's index and key, last row first.
    fn each_backwards(df: &DataFrame, on: &[String], mut f: impl FnMut(usize, Option<Self>)) -> PolarsResult<()> {
        let mut keys = Vec::with_capacity(df.height());
        Self::each(df, on, |_, k| keys.push(k))?;
        keys.into_iter().enumerate().rev().for_each(|(i, k)| f(i, k));
        Ok(())
    }
}

/// A key column as i64 values (dates and narrower integers widened; an i64 column as it is).
pub(crate) fn as_i64(df: &DataFrame, name: &str) -> PolarsResult<Int64Chunked> {
    Ok(as_i64_chunks(df, name)?.rechunk().into_owned())
}

/// [`as_i64`] in the column's chunks, as they are.
pub(crate) fn as_i64_chunks(df: &DataFrame, name: &str) -> PolarsResult<Int64Chunked> {
    let s = df.column(name)?.as_materialized_series().to_physical_repr();
    Ok(s.cast(&DataType::Int64)?.i64()?.clone())
}

impl Key for i64 {
    fn single(self) -> Option<i64> {
        Some(self)
    }

    fn each(df: &DataFrame, on: &[String], mut f: impl FnMut(usize, Option<i64>)) -> PolarsResult<()> {
        let ca = as_i64(df, &on[0])?;
        match ca.cont_slice() {
            // Without nulls the values are read straight from the buffer (no Option per row).
            Ok(values) => values.iter().enumerate().for_each(|(i, &v)| f(i, Some(v))),
            Err(_) => ca.iter().enumerate().for_each(|(i, v)| f(i, v)),
        }
        Ok(())
    }

    fn each_backwards(df: &DataFrame, on: &[String], mut f: impl FnMut(usize, Option<i64>)) -> PolarsResult<()> {
        let ca = as_i64(df, &on[0])?;
        match ca.cont_slice() {
            // Without nulls, from the buffer itself: no copy of the keys (fresh memory).
            Ok(values) => values.iter().enumerate().rev().for_each(|(i, &v)| f(i, Some(v))),
            Err(_) => ca.iter().collect::<Vec<_>>().into_iter().enumerate().rev().for_each(|(i, v)| f(i, v)),
        }
        Ok(())
    }
}

impl Key for (i64, i64) {
    fn single(self) -> Option<i64> {
        None
    }

    fn each(df: &DataFrame, on: &[String], mut f: impl FnMut(usize, Option<(i64, i64)>)) -> PolarsResult<()> {
        let (a, b) = (as_i64(df, &on[0])?, as_i64(df, &on[1])?);
        match (a.cont_slice(), b.cont_slice()) {
            (Ok(a), Ok(b)) => a.iter().zip(b).enumerate().for_each(|(i, (&a, &b))| f(i, Some((a, b)))),
            _ => a.iter().zip(b.iter()).enumerate().for_each(|(i, (a, b))| f(i, a.zip(b))),
        }
        Ok(())
    }
}

/// True when a key column of this type fits in an i64 without loss.
pub(crate) fn fits_i64(dtype: &DataType) -> bool {
    use DataType::*;
    matches!(dtype, Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | Date)
}

/// A table addressed by key holds at most this many slots per right row (4 bytes each; a hash
/// map takes about as much per key).
const DENSE_SLOTS_PER_ROW: u64 = 8;

/// The first right row of each key.
enum Heads<K> {
    Hashed(PlHashMap<K, IdxSize>),
    /// Slot `key - min` (one integer key column whose values lie close together, as the codes
    /// of string keys and the ids of a dimension table do): no hashing, one memory access.
    Dense {
        min: i64,
        slots: Vec<IdxSize>,
    },
}

impl<K: Key> Heads<K> {
    /// Addressed by key when `right` has one key column whose values are at most
    /// [`DENSE_SLOTS_PER_ROW`] slots per row apart. Its range comes from polars' min and max,
    /// so that the column is read as i64s only once, by the build.
    fn for_keys(right: &DataFrame, on: &[String]) -> PolarsResult<Self> {
        let range = match on {
            [key] => {
                let values = right.column(key)?.as_materialized_series().to_physical_repr();
                values.min::<i64>()?.zip(values.max::<i64>()?)
            }
            _ => None,
        };
        let slots = range.and_then(|(min, max)| u64::try_from(i128::from(max) - i128::from(min) + 1).ok().map(|n| (min, n)));
        Ok(match slots {
            Some((min, n)) if n <= DENSE_SLOTS_PER_ROW * right.height() as u64 => Heads::Dense { min, slots: vec![END; n as usize] },
            _ => Heads::Hashed(PlHashMap::with_capacity(right.height())),
        })
    }

    /// Makes `row` the head of `key`'s chain: the head before it (END for none).
    fn push(&mut self, key: K, row: IdxSize) -> IdxSize {
        match self {
            Heads::Hashed(map) => map.insert(key, row).unwrap_or(END),
            Heads::Dense { min, slots } => {
                let slot = key.single().expect("a dense table has single keys").wrapping_sub(*min) as usize;
                std::mem::replace(&mut slots[slot], row)
            }
        }
    }

    #[inline]
    fn get(&self, key: K) -> Option<IdxSize> {
        match self {
            Heads::Hashed(map) => map.get(&key).copied(),
            // A key below `min` has no slot (its offset does not fit a usize).
            Heads::Dense { min, slots } => {
                let slot = key.single()?.checked_sub(*min).and_then(|d| usize::try_from(d).ok())?;
                slots.get(slot).copied().filter(|&h| h != END)
            }
        }
    }
}

/// Rows of the right side by key: the first row of each key, and each row's next one.
struct Table<K> {
    heads: Heads<K>,
    next: Vec<IdxSize>,
}

impl<K: Key> Table<K> {
    fn build(right: &DataFrame, on: &[String]) -> PolarsResult<Self> {
        let mut heads = Heads::for_keys(right, on)?;
        let mut next = vec![END; right.height()];
        // Backwards, so that a chain lists its rows in the right side's order.
        K::each_backwards(right, on, |i, key| {
            if let Some(k) = key {
                next[i] = heads.push(k, i as IdxSize);
            }
        })?;
        Ok(Table { heads, next })
    }

    /// Row pairs of the join: left row, and right row (`END`: a left row without a match,
    /// kept by a left join). Semi and anti joins leave the right rows empty.
    fn probe(&self, left: &DataFrame, on: &[String], how: How) -> PolarsResult<(Vec<IdxSize>, Vec<IdxSize>)> {
        // Room for one match per left row (a fact table's rows joined with a dimension each
        // find one): growing the pairs copied them into fresh memory.
        let rows = left.height();
        let (mut l, mut r) = (Vec::with_capacity(rows), Vec::with_capacity(if matches!(how, How::Semi | How::Anti) { 0 } else { rows }));
        K::each(left, on, |i, key| {
            let head = key.and_then(|k| self.heads.get(k));
            match how {
                How::Semi if head.is_some() => l.push(i as IdxSize),
                How::Anti if head.is_none() => l.push(i as IdxSize),
                How::Semi | How::Anti => {}
                _ => {
                    let Some(mut j) = head else {
                        if how == How::Left {
                            l.push(i as IdxSize);
                            r.push(END);
                        }
                        return;
                    };
                    while j != END {
                        l.push(i as IdxSize);
                        r.push(j);
                        j = self.next[j as usize];
                    }
                }
            }
        })?;
        Ok((l, r))
    }
}

enum Tables {
    One(Table<i64>),
    Two(Table<(i64, i64)>),
}

/// The complete right side of a join, indexed by its keys.
pub struct HashIndex {
    tables: Tables,
    /// How a left batch is probed: a right join as an inner one and a full join as a left one;
    /// their right rows that never matched are added at the end (see [`HashIndex::join`]).
    how: How,
    left_on: Vec<String>,
    /// Reads the key columns as the tables hold them.
    keys: JoinKeys,
    /// The right side's columns that the output carries (keys are the left's), renamed with
    /// the suffix where a left column has the same name.
    payload: DataFrame,
}

impl HashIndex {
    /// Indexes `right` for joins with left frames of `left_schema`; `None` when the join type
    /// or the key types need polars' join.
    pub fn build(how: How, left_on: &[String], right_on: &[String], suffix: &str, left_schema: &Schema, right: &DataFrame) -> PolarsResult<Option<Self>> {
        fn types<'a>(schema: &'a Schema, on: &[String]) -> Option<Vec<&'a DataType>> {
            on.iter().map(|c| schema.get(c)).collect()
        }
        let (Some(left_types), Some(right_types)) = (types(left_schema, left_on), types(right.schema(), right_on)) else { return Ok(None) };
        let Some(mut keys) = JoinKeys::new(&left_types, &right_types) else { return Ok(None) };
        // Coded keys are frames of the key columns, which cannot name one twice.
        let repeats = |names: &[String]| names.iter().enumerate().any(|(i, n)| names[..i].contains(n));
        if left_on.is_empty() || (!keys.plain() && (repeats(left_on) || repeats(right_on))) {
            return Ok(None);
        }
        let coded = keys.code_right(right, right_on)?;
        let on = keys.names(right_on);
        let tables = if on.len() == 1 { Tables::One(Table::build(&coded, on)?) } else { Tables::Two(Table::build(&coded, on)?) };
        let mut payload = right.drop_many(right_on.iter().map(String::as_str).chain([SEQ_COLUMN]));
        if matches!(how, How::Semi | How::Anti) {
            payload = DataFrame::empty();
        }
        let clashes: Vec<String> = payload.get_column_names().iter().filter(|n| left_schema.contains(n)).map(|n| n.to_string()).collect();
        for name in clashes {
            payload.rename(&name, format!("{name}{suffix}").into())?;
        }
        let how = match how {
            How::Right => How::Inner,
            How::Full => How::Left,
            how => how,
        };
        Ok(Some(HashIndex { tables, how, left_on: left_on.to_vec(), keys, payload }))
    }

    /// Joins one left batch: output rows in the left batch's order, each left row's matches
    /// in the right side's order, and how many left rows gave none (the join filtered them).
    /// `matched` (one flag per right row, for right and full joins) gets the right rows this
    /// batch matched.
    pub fn join(&self, left: &DataFrame, matched: Option<&mut [bool]>) -> PolarsResult<(DataFrame, usize)> {
        let keys = self.keys.code_left(left, &self.left_on)?;
        let on = self.keys.names(&self.left_on);
        let (l, r) = match &self.tables {
            Tables::One(t) => t.probe(&keys, on, self.how)?,
            Tables::Two(t) => t.probe(&keys, on, self.how)?,
        };
        if let Some(matched) = matched {
            r.iter().filter(|&&j| j != END).for_each(|&j| matched[j as usize] = true);
        }
        // The pairs list the left rows in order, a row once for each of its matches.
        debug_assert!(l.is_sorted());
        let dropped = left.height() - l.chunk_by(|a, b| a == b).count();
        // Every left row once, in order (each found one match, or a left join kept it): the
        // batch as it is, not a gathered copy.
        let whole = l.len() == left.height() && l.iter().enumerate().all(|(i, &j)| j as usize == i);
        // SAFETY: every index comes from enumerating the left batch or the right side's rows.
        // Gathered on this thread: polars would spread the columns over its own pool.
        let mut out = if whole { left.clone() } else { unsafe { left.take_unchecked_impl(&IdxCa::from_vec("".into(), l), false) } };
        if self.payload.width() > 0 {
            let right_rows: IdxCa = match self.how {
                How::Left if r.contains(&END) => r.into_iter().map(|j| (j != END).then_some(j)).collect(),
                _ => IdxCa::from_vec("".into(), r),
            };
            let right = unsafe { self.payload.take_unchecked_impl(&right_rows, false) };
            out.hstack_mut(right.columns())?;
        }
        Ok((out, dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::operators::join::{JoinPlan, Strategy};

    fn join_plan(how: How, left: &DataFrame, right: &DataFrame, left_on: &[&str], right_on: &[&str]) -> JoinPlan {
        let plan = JoinPlan {
            how,
            left_on: left_on.iter().map(|s| s.to_string()).collect(),
            right_on: right_on.iter().map(|s| s.to_string()).collect(),
            suffix: "_right".into(),
            strategy: Strategy::Hash,
            layout: vec![],
            build_first: true,
            filter_key: None,
        };
        JoinPlan { layout: plan.layout_for(left.schema(), right.schema()).unwrap(), ..plan }
    }

    /// The same join through polars (JoinPlan::apply), for comparison.
    fn polars_join(how: How, left: &DataFrame, right: &DataFrame, left_on: &[&str], right_on: &[&str]) -> DataFrame {
        join_plan(how, left, right, left_on, right_on).apply(left.clone().lazy(), right.clone().lazy()).collect().unwrap()
    }

    /// The join through an index of `right`: the left frame probed as one batch, then for right
    /// and full joins the right rows it did not match.
    fn index_join(how: How, left: &DataFrame, right: &DataFrame, left_on: &[&str], right_on: &[&str]) -> DataFrame {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let index = HashIndex::build(how, &owned(left_on), &owned(right_on), "_right", left.schema(), right).unwrap().expect("these keys are indexed");
        let mut matched = vec![false; right.height()];
        let mut out = index.join(left, how.keeps_unmatched_right().then_some(matched.as_mut_slice())).unwrap().0;
        if how.keeps_unmatched_right() {
            let unmatched = right.filter(&matched.iter().map(|m| !m).collect()).unwrap();
            out.vstack_mut_owned(join_plan(how, left, right, left_on, right_on).right_only(left.schema(), unmatched).unwrap()).unwrap();
        }
        out
    }

    const EVERY_HOW: [How; 6] = [How::Inner, How::Left, How::Right, How::Full, How::Semi, How::Anti];

    fn sorted(df: DataFrame) -> DataFrame {
        let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
        df.sort(names, SortMultipleOptions::default().with_nulls_last(true)).unwrap()
    }

    #[test]
    fn matches_polars_for_every_join_type_with_nulls_duplicates_and_clashing_names() {
        let left = df!("k" => [Some(1i64), Some(2), None, Some(4), Some(2)], "k2" => [1i32, 1, 1, 2, 2], "v" => ["a", "b", "c", "d", "e"]).unwrap();
        let right = df!("id" => [Some(2i64), Some(2), Some(4), None, Some(5)], "id2" => [1i32, 1, 3, 1, 1], "v" => ["x", "y", "z", "n", "w"]).unwrap();
        for how in EVERY_HOW {
            for (lo, ro) in [(vec!["k"], vec!["id"]), (vec!["k", "k2"], vec!["id", "id2"])] {
                let got = index_join(how, &left, &right, &lo, &ro);
                let want = polars_join(how, &left, &right, &lo, &ro);
                assert_eq!(got.get_column_names(), want.get_column_names(), "{how:?} {lo:?}");
                assert!(sorted(got.clone()).equals_missing(&sorted(want.clone())), "{how:?} {lo:?}\n{got}\n{want}");
            }
        }
    }

    #[test]
    fn keys_close_together_are_addressed_and_far_apart_hashed_alike() {
        let top = i64::MAX;
        let left = df!("k" => [Some(i64::MIN), Some(-5), Some(0), Some(1_000_000_007), Some(top), None, Some(top - 2), Some(-5)]).unwrap();
        for (keys, dense) in [
            (vec![Some(i64::MIN), Some(-5), Some(1_000_000_007), None, Some(-5)], false),
            (vec![Some(top - 3), Some(top), None, Some(top - 2), Some(top)], true),
            (vec![Some(-5), Some(0), Some(3), Some(-5)], true),
        ] {
            let right = df!("k" => keys.clone(), "r" => (0..keys.len() as i32).collect::<Vec<_>>()).unwrap();
            for how in EVERY_HOW {
                let index = HashIndex::build(how, &["k".into()], &["k".into()], "_right", left.schema(), &right).unwrap().unwrap();
                let Tables::One(table) = &index.tables else { unreachable!("one key column") };
                assert_eq!(matches!(table.heads, Heads::Dense { .. }), dense, "{keys:?}");
                let (got, want) = (index_join(how, &left, &right, &["k"], &["k"]), polars_join(how, &left, &right, &["k"], &["k"]));
                assert!(sorted(got.clone()).equals_missing(&sorted(want.clone())), "{how:?} {keys:?}\n{got}\n{want}");
            }
        }
    }

    #[test]
    fn a_batch_whose_rows_each_match_once_keeps_its_columns() {
        let left = df!("k" => [2i64, 1, 3, 1], "v" => ["a", "b", "c", "d"]).unwrap();
        let right = df!("k" => [1i64, 2, 3], "r" => [10, 20, 30]).unwrap();
        for how in [How::Inner, How::Left, How::Semi] {
            let index = HashIndex::build(how, &["k".into()], &["k".into()], "_r", left.schema(), &right).unwrap().unwrap();
            let out = index.join(&left, None).unwrap().0;
            assert!(out.select(["k", "v"]).unwrap().equals(&left), "{how:?}\n{out}");
            if how != How::Semi {
                assert_eq!(out.column("r").unwrap().i32().unwrap().into_no_null_iter().collect::<Vec<_>>(), [20, 10, 30, 10]);
            }
        }
    }

    #[test]
    fn left_order_is_kept_and_matches_follow_the_right_sides_order() {
        let left = df!("k" => [3i32, 1, 3]).unwrap();
        let right = df!("k" => [3i32, 1, 3], "r" => [10, 20, 30]).unwrap();
        let index = HashIndex::build(How::Inner, &["k".into()], &["k".into()], "_r", left.schema(), &right).unwrap().unwrap();
        let out = index.join(&left, None).unwrap().0;
        assert_eq!(out.column("r").unwrap().i32().unwrap().into_no_null_iter().collect::<Vec<_>>(), [10, 30, 20, 10, 30]);
    }

    #[test]
    fn string_keys_match_polars_for_every_join_type() {
        // Short and long strings, an empty one, nulls, duplicates on both sides, strings only
        // one side has; alone and with an integer key.
        let long = "a string longer than twelve bytes";
        let left = df!(
            "k" => [Some("b"), Some(long), None, Some(""), Some("x"), Some("b"), Some("a")],
            "n" => [1i32, 1, 1, 2, 2, 3, 1],
            "v" => [1i64, 2, 3, 4, 5, 6, 7]
        )
        .unwrap();
        let right = df!(
            "id" => [Some("a"), Some("b"), Some("b"), None, Some(long), Some(""), Some("y")],
            "n" => [1i32, 1, 3, 1, 1, 2, 2],
            "v" => ["r0", "r1", "r2", "r3", "r4", "r5", "r6"]
        )
        .unwrap();
        for how in EVERY_HOW {
            for (lo, ro) in [(vec!["k"], vec!["id"]), (vec!["k", "n"], vec!["id", "n"]), (vec!["n", "k"], vec!["n", "id"])] {
                let got = index_join(how, &left, &right, &lo, &ro);
                let want = polars_join(how, &left, &right, &lo, &ro);
                assert_eq!(got.get_column_names(), want.get_column_names(), "{how:?} {lo:?}");
                assert!(sorted(got.clone()).equals_missing(&sorted(want.clone())), "{how:?} {lo:?}\n{got}\n{want}");
            }
        }
    }

    #[test]
    fn float_keys_and_three_columns_match_polars_for_every_join_type() {
        let left = df!(
            "f" => [Some(0.0f64), Some(-0.0), Some(f64::NAN), Some(1.5), None, Some(2.5), Some(1.5)],
            "a" => [1i64, 1, 1, 2, 2, 2, 1],
            "s" => [Some("x"), Some("y"), Some("x"), Some("x"), Some("y"), Some("x"), None],
            "v" => [1i32, 2, 3, 4, 5, 6, 7]
        )
        .unwrap();
        let right = df!(
            "g" => [Some(-0.0f64), Some(f64::NAN), Some(1.5), Some(1.5), None, Some(9.0), Some(0.0)],
            "a" => [1i64, 1, 2, 1, 2, 2, 1],
            "s" => [Some("x"), Some("x"), Some("x"), Some("x"), Some("y"), Some("y"), Some("x")],
            "w" => [10i32, 11, 12, 13, 14, 15, 16]
        )
        .unwrap();
        for how in EVERY_HOW {
            for (lo, ro) in [(vec!["f"], vec!["g"]), (vec!["f", "a", "s"], vec!["g", "a", "s"]), (vec!["s", "a", "f"], vec!["s", "a", "g"])] {
                // As text, where NaN equals NaN; -0.0 as 0.0, since equal keys may come from
                // either side (a right join's from the right side in polars).
                let text_of = |c: &Column| match c.dtype() {
                    DataType::Float64 => c.f64().unwrap().apply_values(|v| if v == 0.0 { 0.0 } else { v }).into_column().cast(&DataType::String).unwrap(),
                    _ => c.cast(&DataType::String).unwrap(),
                };
                let text = |df: DataFrame| sorted(DataFrame::new(df.height(), df.columns().iter().map(text_of).collect()).unwrap());
                let got = text(index_join(how, &left, &right, &lo, &ro));
                let want = text(polars_join(how, &left, &right, &lo, &ro));
                assert_eq!(got.get_column_names(), want.get_column_names(), "{how:?} {lo:?}");
                assert!(got.equals_missing(&want), "{how:?} {lo:?}\n{got}\n{want}");
            }
        }
    }

    #[test]
    fn keys_of_other_or_differing_types_are_left_to_polars() {
        let build = |how, left: &DataFrame, right: &DataFrame| HashIndex::build(how, &["k".into()], &["k".into()], "_r", left.schema(), right).unwrap();
        let ints = df!("k" => [1i64]).unwrap();
        let strings = df!("k" => ["1"]).unwrap();
        let floats = df!("k" => [1.0f64]).unwrap();
        let decimals = df!("k" => [1i64]).unwrap().lazy().select([col("k").cast(DataType::Decimal(10, 2))]).collect().unwrap();
        assert!(build(How::Full, &ints, &ints).is_some());
        assert!(build(How::Right, &strings, &strings).is_some());
        assert!(build(How::Inner, &floats, &floats).is_some());
        assert!(build(How::Inner, &strings, &ints).is_none());
        assert!(build(How::Inner, &ints, &strings).is_none());
        assert!(build(How::Inner, &floats, &ints).is_none());
        assert!(build(How::Full, &decimals, &decimals).is_none());
        let twice = |left: &DataFrame, right: &DataFrame| {
            HashIndex::build(How::Inner, &["k".into(), "k".into()], &["k".into(), "j".into()], "_r", left.schema(), right).unwrap()
        };
        assert!(twice(&strings, &df!("k" => ["1"], "j" => ["1"]).unwrap()).is_none(), "a string key column named twice");
        assert!(twice(&ints, &df!("k" => [1i64], "j" => [1i64]).unwrap()).is_some());
    }
}
