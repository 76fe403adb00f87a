//! Sort, limit and top-n (global or per key), and distinct rows: reductions that run in two
//! phases like aggregates (see [`super::reduce`]). Each phase applies the same step, which is
//! idempotent: sorting and cutting to `limit` a concatenation of sorted, cut parts gives the
//! answer for the whole input.
use polars::prelude::*;

use super::stateless::SEQ_COLUMN;

/// `sort` / `limit`, optionally per key.
#[derive(Clone, Debug)]
pub struct SortPlan {
    /// Sort expressions; empty for a plain `limit` (input order).
    pub by: Vec<Expr>,
    /// Descending, per expression.
    pub descending: Vec<bool>,
    /// Nulls last, per expression.
    pub nulls_last: Vec<bool>,
    /// Keep at most this many rows (per key with `keys`).
    pub limit: Option<usize>,
    /// Per-key top-n / limit; empty for a global order.
    pub keys: Vec<String>,
}

impl SortPlan {
    /// Sorts (stably) and cuts. Without sort expressions, input order is the hidden sequence
    /// column when present.
    pub fn apply(&self, lf: LazyFrame, schema: &Schema) -> LazyFrame {
        let (by, descending, nulls_last) = if self.by.is_empty() && schema.contains(SEQ_COLUMN) {
            (vec![col(SEQ_COLUMN)], vec![false], vec![false])
        } else {
            (self.by.clone(), self.descending.clone(), self.nulls_last.clone())
        };
        let lf = match (self.limit, by.first(), &descending[..]) {
            (Some(n), Some(Expr::Column(name)), [first_descending, ..]) if self.keys.is_empty() && n <= CANDIDATE_LIMIT => match schema.get(name) {
                Some(dtype)
                    if dtype.is_primitive_numeric()
                        || matches!(dtype, DataType::Date | DataType::Datetime(..) | DataType::Decimal(..))
                        || dtype.is_string() =>
                {
                    lf.filter(candidates(name, dtype.is_float(), n, *first_descending))
                }
                _ => lf,
            },
            _ => lf,
        };
        let options = SortMultipleOptions::default().with_order_descending_multi(descending).with_nulls_last_multi(nulls_last).with_maintain_order(true);
        let sorted = if by.is_empty() { lf } else { lf.sort_by_exprs(by, options) };
        match (self.limit, self.keys.is_empty()) {
            (Some(n), true) => sorted.limit(n as IdxSize),
            (Some(n), false) => {
                // `head` per group puts the keys first: restore the input's column order.
                let columns: Vec<Expr> = schema.iter_names().map(|n| col(n.clone())).collect();
                sorted.group_by_stable(self.keys.iter().map(|k| col(k.as_str())).collect::<Vec<_>>()).head(Some(n)).select(columns)
            }
            (None, _) => sorted,
        }
    }
}

/// Largest global `limit` whose rows are picked by their first sort column before the sort
/// (see [`candidates`]).
const CANDIDATE_LIMIT: usize = 1000;

/// The rows that can be among the first `n` of a sort whose first key is `column`: those at or
/// past the n-th value of it (descending: the n-th largest), ties included, and those whose
/// value is null or NaN (which sort first or last by the options: the sort decides). The sort
/// on all keys of every row (row-encoded, on polars' pool) came at the end of the run: a top 20
/// of 19 K rows by two keys (a subtask's share in TPC-H Q10) took 2.6 ms, and 0.85 ms cut
/// first.
fn candidates(column: &str, float: bool, n: usize, descending: bool) -> Expr {
    let c = col(column);
    let (mut values, mut keep) = (c.clone().drop_nulls(), c.clone().is_null());
    if float {
        values = values.drop_nans();
        keep = keep.or(c.clone().is_nan());
    }
    let k = lit(n as u64);
    let bound = if descending { values.top_k(k).min() } else { values.bottom_k(k).max() };
    keep.or(if descending { c.gt_eq(bound) } else { c.lt_eq(bound) })
}

/// Which row of a group of duplicates `distinct` keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The first in input order.
    First,
    /// The last in input order.
    Last,
    /// Any one (cheapest).
    Any,
}

/// `distinct`: one row per distinct value of `columns` (all columns when None).
#[derive(Clone, Debug)]
pub struct DistinctPlan {
    /// Columns that define duplicates.
    pub columns: Option<Vec<String>>,
    /// Which duplicate survives.
    pub keep: Keep,
}

impl DistinctPlan {
    /// Columns that define duplicates, for an input of `schema`.
    pub fn key_columns(&self, schema: &Schema) -> Vec<String> {
        match &self.columns {
            Some(c) => c.clone(),
            None => schema.iter_names().filter(|n| n.as_str() != SEQ_COLUMN).map(|n| n.to_string()).collect(),
        }
    }

    /// Removes duplicates, keeping the first / last in input order (the sequence column).
    pub fn apply(&self, lf: LazyFrame, schema: &Schema) -> LazyFrame {
        let subset = Some(by_name(self.key_columns(schema), true, false));
        let ordered = schema.contains(SEQ_COLUMN);
        match self.keep {
            Keep::Any => lf.unique(subset, UniqueKeepStrategy::Any),
            Keep::First if ordered => lf.sort([SEQ_COLUMN], SortMultipleOptions::default()).unique_stable(subset, UniqueKeepStrategy::First),
            Keep::Last if ordered => lf.sort([SEQ_COLUMN], SortMultipleOptions::default()).unique_stable(subset, UniqueKeepStrategy::Last),
            Keep::First => lf.unique_stable(subset, UniqueKeepStrategy::First),
            Keep::Last => lf.unique_stable(subset, UniqueKeepStrategy::Last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_per_key_and_global() {
        let df = df!("k" => ["a", "a", "a", "b", "b"], "v" => [3, 1, 2, 5, 4], SEQ_COLUMN => [0u64, 1, 2, 3, 4]).unwrap();
        let schema = df.schema().clone();
        let plan = SortPlan { by: vec![col("v")], descending: vec![true], nulls_last: vec![true], limit: Some(2), keys: vec!["k".into()] };
        let out = plan.apply(df.clone().lazy(), &schema).collect().unwrap().sort(["k", "v"], SortMultipleOptions::default()).unwrap();
        assert_eq!(out.column("v").unwrap().i32().unwrap().into_no_null_iter().collect::<Vec<_>>(), [2, 3, 4, 5]);
        let global = SortPlan { keys: vec![], ..plan };
        let out = global.apply(df.lazy(), &schema).collect().unwrap();
        assert_eq!(out.column("v").unwrap().i32().unwrap().into_no_null_iter().collect::<Vec<_>>(), [5, 4]);
    }

    #[test]
    fn a_top_n_cut_first_by_its_first_key_is_the_sort_cut() {
        // Ties, nulls and NaN in the first key (floats, integers, strings, decimals), both
        // directions and null placements, limits below and above the rows: the same rows in the
        // same order as sorting all and cutting.
        let mut next = crate::testing::below(0x5eed_1234_abcd_9876u64);
        for case in 0..300 {
            let rows = next(40);
            let pick = |next: &mut dyn FnMut(u64) -> u64, n: u64| (0..rows).map(|_| next(n)).collect::<Vec<_>>();
            let a: Vec<Option<f64>> = pick(&mut next, 9)
                .into_iter()
                .map(|v| match v {
                    0 => None,
                    1 => Some(f64::NAN),
                    v => Some(v as f64 / 2.0),
                })
                .collect();
            let i: Vec<Option<i64>> = pick(&mut next, 6).into_iter().map(|v| (v > 0).then_some(v as i64 - 3)).collect();
            let t: Vec<Option<String>> =
                pick(&mut next, 7).into_iter().map(|v| (v > 0).then(|| ["b", "ab", "a", "", "B", "ba"][v as usize - 1].to_string())).collect();
            let b: Vec<i64> = pick(&mut next, 4).into_iter().map(|v| v as i64).collect();
            let seq: Vec<u64> = (0..rows).collect();
            let mut df = df!("a" => a, "i" => i, "t" => t, "b" => b, SEQ_COLUMN => seq).unwrap();
            let d = df.column("i").unwrap().cast(&DataType::Float64).unwrap().cast(&DataType::Decimal(38, 4)).unwrap().with_name("d".into());
            df.with_column(d).unwrap();
            let schema = df.schema().clone();
            let first = ["a", "i", "t", "d"][case % 4];
            let (descending, nulls_last) = (vec![next(2) == 1, next(2) == 1], vec![next(2) == 1, next(2) == 1]);
            let limit = next(12) as usize;
            let plan =
                SortPlan { by: vec![col(first), col("b")], descending: descending.clone(), nulls_last: nulls_last.clone(), limit: Some(limit), keys: vec![] };
            let got = plan.apply(df.clone().lazy(), &schema).collect().unwrap();
            let options = SortMultipleOptions::default().with_order_descending_multi(descending).with_nulls_last_multi(nulls_last).with_maintain_order(true);
            let want = df.sort([first, "b"], options).unwrap().head(Some(limit));
            assert!(got.equals_missing(&want), "case {case}: {first} limit {limit}\n{got}\n{want}");
        }
    }

    #[test]
    fn distinct_keeps_first_or_last_in_input_order() {
        let df = df!("k" => ["a", "b", "a"], "v" => [1, 2, 3], SEQ_COLUMN => [2u64, 0, 1]).unwrap();
        let schema = df.schema().clone();
        let first = DistinctPlan { columns: Some(vec!["k".into()]), keep: Keep::First };
        let out = first.apply(df.clone().lazy(), &schema).collect().unwrap().sort(["k"], SortMultipleOptions::default()).unwrap();
        assert_eq!(out.column("v").unwrap().i32().unwrap().into_no_null_iter().collect::<Vec<_>>(), [3, 2]);
        let last = DistinctPlan { keep: Keep::Last, ..first };
        let out = last.apply(df.lazy(), &schema).collect().unwrap().sort(["k"], SortMultipleOptions::default()).unwrap();
        assert_eq!(out.column("v").unwrap().i32().unwrap().into_no_null_iter().collect::<Vec<_>>(), [1, 2]);
    }
}
