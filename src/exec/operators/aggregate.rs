//! Keyed aggregation in two phases: partial state per key before the hash exchange (so only one
//! row per key and subtask crosses it), merged and finalised after it. See [`super::reduce`]
//! for the operator that runs it.
use polars::prelude::*;

use super::stateless::SEQ_COLUMN;
use crate::plan::decimal;
use crate::plan::expr::AggFunc;

/// One named aggregate of an aggregate operator.
#[derive(Clone, Debug)]
pub struct AggSpec {
    /// Output column name.
    pub name: String,
    /// The function.
    pub func: AggFunc,
    /// The argument expression (None for `count(*)`).
    pub arg: Option<Expr>,
    /// A quantile's q.
    pub q: Option<f64>,
}

/// What an aggregate operator computes: group keys and named aggregates.
#[derive(Clone, Debug)]
pub struct AggregatePlan {
    /// Grouping columns; empty for one global group.
    pub keys: Vec<String>,
    /// The aggregates, in output order.
    pub aggs: Vec<AggSpec>,
    /// The input carries the sequence column: `collect_list` keeps input order.
    pub ordered: bool,
}

/// A mean's argument as the aggregate sums it: a decimal as it is (its sum is exact, and
/// divided in f64 at the end, as DuckDB does), anything else as f64.
pub fn mean_argument(arg: Expr, schema: &Schema) -> Expr {
    match arg.to_field(schema) {
        Ok(f) if matches!(f.dtype, DataType::Decimal(..)) => arg,
        _ => arg.cast(DataType::Float64),
    }
}

/// Every element of the lists of a group, nulls kept, empty lists contributing nothing.
fn flat(e: Expr) -> Expr {
    e.explode(ExplodeOptions { empty_as_null: false, keep_nulls: true })
}

/// Continuous quantile of a list column: linear interpolation between the two nearest ranks.
fn list_quantile(list: Expr, q: f64) -> Expr {
    let sorted = list.list().sort(SortOptions::default());
    let n = sorted.clone().list().len().cast(DataType::Float64);
    let pos = (n.clone() - lit(1.0)) * lit(q);
    let (lo, hi) = (pos.clone().floor(), pos.clone().ceil());
    let at = |i: Expr| sorted.clone().list().get(i.cast(DataType::Int64), true).cast(DataType::Float64);
    let value = at(lo.clone()) + (at(hi) - at(lo.clone())) * (pos - lo);
    when(n.eq(lit(0.0))).then(lit(NULL)).otherwise(value)
}

impl AggregatePlan {
    fn part(i: usize, what: &str) -> String {
        format!("__a{i}_{what}")
    }

    /// True for one global group (no `key_by`).
    pub fn keyless(&self) -> bool {
        self.keys.is_empty()
    }

    /// Expressions that reduce raw rows to partial state.
    fn partial_exprs(&self) -> Vec<Expr> {
        let mut out = Vec::new();
        for (i, a) in self.aggs.iter().enumerate() {
            let p = |w: &str| Self::part(i, w);
            let x = || a.arg.clone().unwrap_or_else(|| lit(1));
            let seq = || col(SEQ_COLUMN);
            match a.func {
                AggFunc::Count if a.arg.is_none() => out.push(len().cast(DataType::Int64).alias(p("v"))),
                AggFunc::Count => out.push(x().count().cast(DataType::Int64).alias(p("v"))),
                AggFunc::Sum => out.extend([x().sum().alias(p("v")), x().count().cast(DataType::Int64).alias(p("n"))]),
                // Decimals are summed exactly; the planner casts other arguments to f64 (see
                // `mean_argument`).
                AggFunc::Mean => out.extend([x().sum().alias(p("v")), x().count().cast(DataType::Int64).alias(p("n"))]),
                AggFunc::Min => out.push(x().min().alias(p("v"))),
                AggFunc::Max => out.push(x().max().alias(p("v"))),
                AggFunc::First => out.extend([x().sort_by([seq()], SortMultipleOptions::default()).first().alias(p("v")), seq().min().alias(p("q"))]),
                AggFunc::Last => out.extend([x().sort_by([seq()], SortMultipleOptions::default()).last().alias(p("v")), seq().max().alias(p("q"))]),
                AggFunc::CountDistinct => out.push(self.listed(x().drop_nulls().unique()).alias(p("v"))),
                // Exact answers need every value: the partial state is the list of them.
                AggFunc::Median | AggFunc::Quantile | AggFunc::Std | AggFunc::Var => out.push(self.listed(x().drop_nulls()).alias(p("v"))),
                AggFunc::CollectList if self.ordered => out.extend([self.listed(x()).alias(p("v")), self.listed(seq()).alias(p("q"))]),
                AggFunc::CollectList => out.push(self.listed(x()).alias(p("v"))),
            }
        }
        out
    }

    /// Expressions that combine several partial states of the same key into one.
    fn merge_exprs(&self) -> Vec<Expr> {
        let mut out = Vec::new();
        for (i, a) in self.aggs.iter().enumerate() {
            let c = |w: &str| col(Self::part(i, w));
            let p = |w: &str| Self::part(i, w);
            match a.func {
                AggFunc::Count => out.push(c("v").sum().alias(p("v"))),
                AggFunc::Sum | AggFunc::Mean => out.extend([c("v").sum().alias(p("v")), c("n").sum().alias(p("n"))]),
                AggFunc::Min => out.push(c("v").min().alias(p("v"))),
                AggFunc::Max => out.push(c("v").max().alias(p("v"))),
                AggFunc::First => out.extend([c("v").sort_by([c("q")], SortMultipleOptions::default()).first().alias(p("v")), c("q").min().alias(p("q"))]),
                AggFunc::Last => out.extend([c("v").sort_by([c("q")], SortMultipleOptions::default()).last().alias(p("v")), c("q").max().alias(p("q"))]),
                AggFunc::CountDistinct => {
                    out.push(self.listed(c("v").explode(ExplodeOptions { empty_as_null: true, keep_nulls: true }).drop_nulls().unique()).alias(p("v")))
                }
                AggFunc::Median | AggFunc::Quantile | AggFunc::Std | AggFunc::Var => out.push(self.listed(flat(c("v"))).alias(p("v"))),
                AggFunc::CollectList if self.ordered => out.extend([
                    self.listed(flat(c("v")).sort_by([flat(c("q"))], SortMultipleOptions::default())).alias(p("v")),
                    self.listed(flat(c("q")).sort(SortOptions::default())).alias(p("q")),
                ]),
                AggFunc::CollectList => out.push(self.listed(flat(c("v"))).alias(p("v"))),
            }
        }
        out
    }

    /// Expressions that turn merged state into the output columns.
    fn final_exprs(&self) -> Vec<Expr> {
        let mut out: Vec<Expr> = self.keys.iter().map(|k| col(k.as_str())).collect();
        for (i, a) in self.aggs.iter().enumerate() {
            let c = |w: &str| col(Self::part(i, w));
            let e = match a.func {
                AggFunc::Count | AggFunc::Min | AggFunc::Max | AggFunc::First | AggFunc::Last => c("v"),
                AggFunc::Sum => when(c("n").eq(lit(0))).then(lit(NULL)).otherwise(c("v")),
                AggFunc::Mean => when(c("n").eq(lit(0))).then(lit(NULL)).otherwise(c("v").cast(DataType::Float64) / c("n").cast(DataType::Float64)),
                AggFunc::CountDistinct => c("v").list().len().cast(DataType::Int64),
                AggFunc::Median => c("v").list().median(),
                AggFunc::Std => c("v").list().std(1),
                AggFunc::Var => c("v").list().var(1),
                AggFunc::Quantile => list_quantile(c("v"), a.q.unwrap_or(0.5)),
                AggFunc::CollectList => c("v"),
            };
            out.push(e.alias(a.name.as_str()));
        }
        out
    }

    /// Without keys there is one group, computed with `select`, where a per-group list must be
    /// made explicit.
    fn listed(&self, e: Expr) -> Expr {
        if self.keyless() { e.implode(false) } else { e }
    }

    fn reduce(&self, lf: LazyFrame, exprs: Vec<Expr>) -> LazyFrame {
        if self.keyless() {
            // polars 0.55's common-subexpression elimination breaks a select that repeats an
            // aggregate (`max(d)` twice): it panics on a shape mismatch.
            let flags = lf.get_current_optimizations() & !OptFlags::COMM_SUBEXPR_ELIM;
            lf.with_optimizations(flags).select(exprs)
        } else {
            let keys: Vec<Expr> = self.keys.iter().map(|k| col(k.as_str())).collect();
            lf.group_by(keys).agg(exprs)
        }
    }

    /// Raw rows -> partial state. Row-wise parts that several arguments share are computed
    /// once first (see [`AggregatePlan::shared_parts`]).
    pub fn partial(&self, lf: LazyFrame) -> LazyFrame {
        let (shared, args) = self.shared_parts();
        if shared.is_empty() {
            return self.reduce(lf, self.partial_exprs());
        }
        let lf = shared.into_iter().fold(lf, |lf, (name, e)| lf.with_column(e.alias(name.as_str())));
        let aggs = self.aggs.iter().zip(args).map(|(a, arg)| AggSpec { arg, ..a.clone() }).collect();
        let plan = AggregatePlan { aggs, ..self.clone() };
        plan.reduce(lf, plan.partial_exprs())
    }

    /// Row-wise subexpressions that the arguments share, such as `price * (1 - discount)` in
    /// `sum(price * (1 - discount))` and `sum(price * (1 - discount) * (1 + tax))`: hidden
    /// columns to compute first (in order; later ones may read earlier ones), and the arguments
    /// rewritten to read them. polars' own common-subexpression elimination is off (its feature
    /// costs a rebuild, and it broke repeated global aggregates), and on decimals these products
    /// are the costly part of an aggregate.
    pub(super) fn shared_parts(&self) -> (Vec<(String, Expr)>, Vec<Option<Expr>>) {
        // Only arithmetic, casts and conditionals over columns and constants: safe to compute
        // per row before grouping.
        let operation = |n: &Expr| matches!(n, Expr::BinaryExpr { .. } | Expr::Cast { .. } | Expr::Ternary { .. }) || decimal::is_arith(n);
        let row_wise = |e: &Expr| e.into_iter().all(|n| operation(n) || matches!(n, Expr::Column(_) | Expr::Literal(_)));
        let computed = |e: &Expr| operation(e) && row_wise(e);
        let mut counts: Vec<(Expr, usize)> = Vec::new();
        for arg in self.aggs.iter().filter_map(|a| a.arg.as_ref()) {
            for sub in arg.into_iter().filter(|e| computed(e)) {
                match counts.iter_mut().find(|(e, _)| e == sub) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((sub.clone(), 1)),
                }
            }
        }
        let size = |e: &Expr| e.into_iter().count();
        // Shared, and not only ever inside a larger shared part (which covers it).
        let shared: Vec<&(Expr, usize)> = counts.iter().filter(|(_, n)| *n >= 2).collect();
        let mut parts: Vec<Expr> = shared
            .iter()
            .filter(|(e, n)| !shared.iter().any(|(t, m)| m == n && t != e && t.into_iter().any(|x| x == e)))
            .map(|(e, _)| e.clone())
            .collect();
        parts.sort_by_key(|e| size(e));
        let mut table: Vec<(Expr, String)> = Vec::new();
        let replace = |e: Expr, table: &[(Expr, String)]| e.map_expr(|n| table.iter().find(|(t, _)| *t == n).map_or(n, |(_, name)| col(name.as_str())));
        let mut columns = Vec::new();
        for (k, part) in parts.into_iter().enumerate() {
            let rewritten = replace(part, &table);
            let name = format!("__shared{k}");
            columns.push((name.clone(), rewritten.clone()));
            table.push((rewritten, name));
        }
        let args = self.aggs.iter().map(|a| a.arg.clone().map(|arg| replace(arg, &table))).collect();
        (columns, args)
    }

    /// Partial states -> one merged state per key.
    pub fn merge(&self, lf: LazyFrame) -> LazyFrame {
        self.reduce(lf, self.merge_exprs())
    }

    /// Merged state -> output rows.
    pub fn finalize(&self, lf: LazyFrame) -> LazyFrame {
        lf.select(self.final_exprs())
    }

    /// The whole computation in one go, on a frame holding all rows (for schemas and tests).
    pub fn single_phase(&self, lf: LazyFrame) -> LazyFrame {
        self.finalize(self.merge(self.partial(lf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::expr::AggFunc::*;

    fn plan(keys: &[&str]) -> AggregatePlan {
        let agg = |name: &str, func, arg: Option<Expr>| AggSpec { name: name.into(), func, arg, q: None };
        AggregatePlan {
            ordered: true,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            aggs: vec![
                agg("n", Count, None),
                agg("s", Sum, Some(col("x"))),
                agg("m", Mean, Some(col("x"))),
                agg("lo", Min, Some(col("x"))),
                agg("f", First, Some(col("x"))),
                agg("l", Last, Some(col("x"))),
                agg("d", CountDistinct, Some(col("x"))),
            ],
        }
    }

    #[test]
    fn shared_row_wise_parts_are_computed_once_and_give_the_same_answer() {
        let price = || col("p");
        let disc = || price() * (lit(1) - col("d"));
        let agg = |name: &str, func, arg: Option<Expr>| AggSpec { name: name.into(), func, arg, q: None };
        let plan = AggregatePlan {
            ordered: false,
            keys: vec!["k".into()],
            aggs: vec![
                agg("a", Sum, Some(disc())),
                agg("b", Sum, Some(disc() * (lit(1) + col("t")))),
                agg("c", Mean, Some(disc())),
                agg("n", Count, None),
                agg("q", Sum, Some(col("p"))),
            ],
        };
        let (shared, args) = plan.shared_parts();
        assert_eq!(shared.len(), 1, "price * (1 - d) only, not its inner (1 - d): {:?}", shared.iter().map(|s| format!("{:?}", s.1)).collect::<Vec<_>>());
        assert_eq!(args[0], Some(col("__shared0")));
        assert_eq!(args[1], Some(col("__shared0") * (lit(1) + col("t"))));
        assert_eq!(args[4], Some(col("p")));
        let df = df!("k" => ["x", "y", "x"], "p" => [10.0, 20.0, 30.0], "d" => [0.1, 0.2, 0.0], "t" => [0.5, 0.0, 1.0]).unwrap();
        let got = plan.single_phase(df.clone().lazy()).sort(["k"], SortMultipleOptions::default()).collect().unwrap();
        let want = df
            .lazy()
            .group_by([col("k")])
            .agg([disc().sum().alias("a"), (disc() * (lit(1) + col("t"))).sum().alias("b"), disc().mean().alias("c"), len().cast(DataType::Int64).alias("n"), col("p").sum().alias("q")])
            .sort(["k"], SortMultipleOptions::default())
            .collect()
            .unwrap();
        assert_eq!(got, want);
    }

    fn data() -> DataFrame {
        df!(
            "k" => ["a", "b", "a", "a", "b", "c"],
            "x" => [Some(1i64), Some(2), None, Some(1), Some(5), None],
            SEQ_COLUMN => [0u64, 1, 2, 3, 4, 5],
        )
        .unwrap()
    }

    fn sorted(df: DataFrame) -> DataFrame {
        df.sort(["k"], SortMultipleOptions::default()).unwrap()
    }

    #[test]
    fn two_phases_equal_one_phase() {
        let p = plan(&["k"]);
        let one = sorted(p.single_phase(data().lazy()).collect().unwrap());
        // Split the rows over two partial aggregates, as two subtasks would.
        let a = p.partial(data().slice(0, 3).lazy()).collect().unwrap();
        let b = p.partial(data().slice(3, 3).lazy()).collect().unwrap();
        let merged = p.merge(concat([a.lazy(), b.lazy()], UnionArgs::default()).unwrap());
        let two = sorted(p.finalize(merged).collect().unwrap());
        assert_eq!(one, two);
        let expected = df!(
            "k" => ["a", "b", "c"],
            "n" => [3i64, 2, 1],
            "s" => [Some(2i64), Some(7), None],
            "m" => [Some(1.0), Some(3.5), None],
            "lo" => [Some(1i64), Some(2), None],
            "f" => [Some(1i64), Some(2), None],
            "l" => [Some(1i64), Some(5), None],
            "d" => [1i64, 2, 0],
        )
        .unwrap();
        assert_eq!(two, expected);
    }

    #[test]
    fn collect_list_and_median_merge_across_subtasks_in_input_order() {
        let spec = |name: &str, func, q| AggSpec { name: name.into(), func, arg: Some(col("x")), q };
        let p = AggregatePlan {
            keys: vec!["k".into()],
            aggs: vec![spec("all", CollectList, None), spec("med", Median, None), spec("q", Quantile, Some(0.25))],
            ordered: true,
        };
        // Subtask 1 saw the later rows: the merge must still list values in input order.
        let a = p.partial(data().slice(3, 3).lazy()).collect().unwrap();
        let b = p.partial(data().slice(0, 3).lazy()).collect().unwrap();
        let out = sorted(p.finalize(p.merge(concat([a.lazy(), b.lazy()], UnionArgs::default()).unwrap())).collect().unwrap());
        let lists: Vec<String> = out.column("all").unwrap().as_materialized_series().iter().map(|v| v.to_string()).collect();
        assert_eq!(lists, ["[1, null, 1]", "[2, 5]", "[null]"]);
        assert_eq!(out.column("med").unwrap().f64().unwrap().get(1), Some(3.5));
        assert_eq!(out.column("q").unwrap().f64().unwrap().get(1), Some(2.75));
        assert_eq!(out.column("med").unwrap().f64().unwrap().get(2), None);
    }

    #[test]
    fn a_repeated_global_aggregate_does_not_trip_polars() {
        let spec = |name: &str| AggSpec { name: name.into(), func: Max, arg: Some(col("x")), q: None };
        let p = AggregatePlan { keys: vec![], aggs: vec![spec("a"), spec("b")], ordered: false };
        let out = p.single_phase(data().lazy()).collect().unwrap();
        assert_eq!(out.column("b").unwrap().i64().unwrap().get(0), Some(5));
    }

    #[test]
    fn keyless_aggregate_gives_one_row() {
        let p = plan(&[]);
        let out = p.single_phase(data().lazy()).collect().unwrap();
        assert_eq!(out.height(), 1);
        assert_eq!(out.column("n").unwrap().i64().unwrap().get(0), Some(6));
        assert_eq!(out.column("d").unwrap().i64().unwrap().get(0), Some(3));
        let empty = p.single_phase(data().clear().lazy()).collect().unwrap();
        assert_eq!(empty.column("n").unwrap().i64().unwrap().get(0), Some(0));
        assert_eq!(empty.column("s").unwrap().i64().unwrap().get(0), None);
    }
}
