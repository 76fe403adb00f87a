//! SQL expression strings of the pipeline file compiled to polars expressions, with the error's
//! column inside the string when the SQL parser can tell it.
use polars::prelude::*;
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use super::decimal;
use crate::pipeline::{Located, Origin};

/// A compile error: where in the file, and what is wrong.
pub type ExprError = (Origin, String);

/// Compiles a SQL expression (optionally `expr AS alias`).
pub fn compile(text: &Located<String>) -> Result<Expr, ExprError> {
    syntax_check(text)?;
    polars::sql::sql_expr(&text.value).map_err(|e| (text.origin.clone(), format!("invalid expression {:?}: {}", text.value, clean(&e))))
}

/// Parses with sqlparser alone to find the line and column of a syntax error.
fn syntax_check(text: &Located<String>) -> Result<(), ExprError> {
    let result = Parser::new(&GenericDialect).try_with_sql(&text.value).and_then(|mut p| {
        p.parse_select_item()?;
        p.expect_token(&sqlparser::tokenizer::Token::EOF)
    });
    let Err(e) = result else { return Ok(()) };
    let msg = e.to_string();
    // sqlparser ends its messages with " at Line: L, Column: C" (1-based).
    let (what, origin) = match msg.rsplit_once(" at Line: ") {
        Some((what, pos)) => {
            let mut nums = pos.split(", Column: ").map(|n| n.trim().parse::<usize>().unwrap_or(1));
            let (line, col) = (nums.next().unwrap_or(1), nums.next().unwrap_or(1));
            (what.to_string(), text.origin.shifted(line - 1, col - 1))
        }
        None => (msg.clone(), text.origin.clone()),
    };
    let what = what.trim_start_matches("sql parser error: ");
    Err((origin, format!("invalid expression {:?}: {what}", text.value)))
}

/// A polars error as one readable line.
pub fn clean(e: &PolarsError) -> String {
    let s = e.to_string();
    let s = s.split("\n\nResolved plan until failure").next().unwrap_or(&s);
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The input columns an expression reads.
pub fn columns_of(e: &Expr) -> Vec<String> {
    polars_plan::utils::expr_to_leaf_column_names(e).into_iter().map(|s| s.to_string()).collect()
}

/// polars' optimizations to run a query on a few rows with: type coercion and checks only.
/// Planning's runs on empty frames and the row-group statistics' bounds gain nothing from the
/// other passes, which cost more than the query (a third of planning).
pub const TYPE_CHECKS_ONLY: OptFlags = OptFlags::TYPE_COERCION.union(OptFlags::TYPE_CHECK);

/// True when part of `e` looks at more than its own row: an aggregate such as `max(x)` or
/// `count(*)`, or a window function. A filter, projection or sort key runs on each batch, so
/// such a part would give answers that change with the batch size and the parallelism. (An
/// aggregate of literals, as in `x IN (1, 2)`, is a constant.)
pub fn looks_beyond_its_row(e: &Expr) -> bool {
    e.into_iter().any(|part| match part {
        Expr::Agg(_) => !columns_of(part).is_empty(),
        Expr::Len | Expr::Over { .. } => true,
        _ => false,
    })
}

/// Aggregate functions of `aggregate = { out = "func(arg)" }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFunc {
    /// Rows (`count(*)`) or non-null values (`count(x)`).
    Count,
    /// Sum of non-null values (null when there are none).
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Arithmetic mean of non-null values.
    Mean,
    /// Value of the first row in input order (file order, then line order).
    First,
    /// Value of the last row in input order.
    Last,
    /// Number of distinct non-null values.
    CountDistinct,
    /// Middle value of the non-null values (mean of the two middle ones for an even count).
    Median,
    /// Continuous quantile (linear interpolation) of the non-null values; q in the call.
    Quantile,
    /// Sample standard deviation of the non-null values.
    Std,
    /// Sample variance of the non-null values.
    Var,
    /// All values (nulls included) as a list, in input order.
    CollectList,
}

/// Names accepted in aggregate calls, for error messages.
pub const AGG_NAMES: &str = "count, sum, min, max, mean (avg), first, last, count_distinct (count(distinct x)), median, quantile(x, q), std, var, collect_list";

/// One parsed aggregate call.
#[derive(Clone, Debug)]
pub struct AggCall {
    /// The function.
    pub func: AggFunc,
    /// Its argument; None for `count(*)`.
    pub arg: Option<Expr>,
    /// The quantile's q, in [0, 1].
    pub q: Option<f64>,
}

/// Makes decimal arithmetic exact, as in SQL:
/// - polars gives `a * b` the larger of the two scales and rounds (12.25 * 0.05 = 0.61), where
///   DuckDB keeps the sum of the scales (0.6125): `+`, `-` and `*` with a decimal operand (the
///   other a decimal or an integer) become [`decimal::arith`], exact at SQL's scales;
/// - a decimal compared with a number literal that the decimal's scale holds exactly
///   (`discount >= 0.05` on a `decimal(15,2)`) compares with a decimal literal, not through
///   floats, which lose digits beyond 2^53 and converted every row (8% of TPC-H Q6).
pub fn exact_decimals(e: Expr, schema: &Schema) -> Expr {
    let scale = |x: &Expr| match x.to_field(schema).map(|f| f.dtype) {
        Ok(DataType::Decimal(_, s)) => Some(s),
        _ => None,
    };
    e.map_expr(|e| match e {
        // Decimal arithmetic with SQL's scales (see `decimal`): at least one decimal operand,
        // the other a decimal or an integer.
        Expr::BinaryExpr { left, op: op @ (Operator::Plus | Operator::Minus | Operator::Multiply), right } => {
            let kind = |x: &Expr| x.to_field(schema).ok().map(|f| (matches!(f.dtype, DataType::Decimal(..)), decimal::operand_scale(&f.dtype).is_some()));
            match (kind(&left), kind(&right)) {
                (Some((ld, true)), Some((rd, true))) if ld || rd => {
                    let arith = match op {
                        Operator::Plus => decimal::Arith::Add,
                        Operator::Minus => decimal::Arith::Sub,
                        _ => decimal::Arith::Mul,
                    };
                    decimal::arith(arith, Arc::unwrap_or_clone(left), Arc::unwrap_or_clone(right))
                }
                _ => Expr::BinaryExpr { left, op, right },
            }
        }
        Expr::BinaryExpr { mut left, op, mut right }
            if matches!(op, Operator::Eq | Operator::NotEq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq) =>
        {
            if let Some(l) = scale(&left).and_then(|s| decimal_literal(&right, s)) {
                right = Arc::new(l);
            } else if let Some(r) = scale(&right).and_then(|s| decimal_literal(&left, s)) {
                left = Arc::new(r);
            }
            Expr::BinaryExpr { left, op, right }
        }
        other => other,
    })
}

/// A float literal as a decimal literal of `scale`, when that scale holds it exactly and it
/// fits in 38 digits.
fn decimal_literal(e: &Expr, scale: usize) -> Option<Expr> {
    // polars does not export the dynamic literal's type; its debug text names it. (Asking a
    // dynamic list literal for its value would panic, so only floats get that far.)
    let Expr::Literal(value @ LiteralValue::Dyn(_)) = e else { return None };
    if !format!("{value:?}").starts_with("dyn float") {
        return None;
    }
    let Some(AnyValue::Float64(f)) = value.to_any_value() else { return None };
    let text = format!("{f:.scale$}");
    // Exact when the digits at this scale read back as the same float.
    let exact = f.is_finite() && f.abs() < 10f64.powi(37 - scale as i32) && text.parse::<f64>().ok() == Some(f);
    exact.then(|| lit(text).cast(DataType::Decimal(38, scale)))
}

/// Parses `func(arg)`; the argument is any SQL expression (`sum(price * qty)`).
pub fn parse_aggregate(text: &Located<String>) -> Result<AggCall, ExprError> {
    let s = text.value.trim();
    let bad = |msg: String| (text.origin.clone(), msg);
    let open = s.find('(').filter(|_| s.ends_with(')')).ok_or_else(|| bad(format!("expected an aggregate call like sum(x), found {s:?}")))?;
    let name = s[..open].trim().to_ascii_lowercase();
    let mut inner = s[open + 1..s.len() - 1].trim();
    let mut func = match name.as_str() {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "mean" | "avg" => AggFunc::Mean,
        "first" => AggFunc::First,
        "last" => AggFunc::Last,
        "count_distinct" | "n_unique" => AggFunc::CountDistinct,
        "median" => AggFunc::Median,
        "quantile" | "quantile_cont" | "percentile_cont" => AggFunc::Quantile,
        "std" | "stddev" | "stddev_samp" => AggFunc::Std,
        "var" | "variance" | "var_samp" => AggFunc::Var,
        "collect_list" | "list" | "array_agg" => AggFunc::CollectList,
        other => {
            let names = ["count", "sum", "min", "max", "mean", "avg", "first", "last", "count_distinct", "median", "quantile", "std", "var", "collect_list"];
            let hint = crate::pipeline::did_you_mean(other, names).map(|h| format!(" (did you mean {h}?)")).unwrap_or_default();
            return Err(bad(format!("unknown aggregate {other:?}{hint}; expected one of: {AGG_NAMES}")));
        }
    };
    if func == AggFunc::Count && inner.len() > 9 && inner[..9].eq_ignore_ascii_case("distinct ") {
        func = AggFunc::CountDistinct;
        inner = inner[9..].trim();
    }
    if inner == "*" {
        return if func == AggFunc::Count { Ok(AggCall { func, arg: None, q: None }) } else { Err(bad(format!("{name}(*) is not defined; name a column"))) };
    }
    let mut q = None;
    if func == AggFunc::Quantile {
        // The last top-level comma separates q from the expression.
        let mut depth = 0i32;
        let comma = inner
            .char_indices()
            .filter(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                c == ',' && depth == 0
            })
            .map(|(i, _)| i)
            .last();
        let Some(comma) = comma else {
            return Err(bad(format!("{name}(x, q) needs q, a number from 0 to 1")));
        };
        match inner[comma + 1..].trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => q = Some(v),
            _ => {
                return Err(bad(format!("{name}(x, q): q must be a number from 0 to 1, found {:?}", inner[comma + 1..].trim())));
            }
        }
        inner = inner[..comma].trim();
    }
    if inner.is_empty() {
        return Err(bad(format!("{name}() needs an argument")));
    }
    let offset = text.value.find(inner).unwrap_or(0);
    let arg = compile(&Located::new(inner.to_string(), text.origin.shifted(0, offset)))?;
    Ok(AggCall { func, arg: Some(arg), q })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_beyond_the_row_are_found() {
        let part = |text: &str| looks_beyond_its_row(&compile(&Located::new(text.to_string(), Origin::at(1, 1))).unwrap());
        for row in [
            "x IN (1, 2)",
            "x NOT IN ('a')",
            "x BETWEEN 1 AND 2",
            "CASE WHEN x > 1 THEN 'a' ELSE 'b' END",
            "coalesce(x, 0) + 1",
            "s LIKE 'a%'",
            "d >= DATE '2020-01-01'",
            "CAST(x AS int) * 2",
            "greatest(x, y)",
            "upper(s) = 'A'",
        ] {
            assert!(!part(row), "{row}");
        }
        for other in
            ["x > max(x)", "count(*) > 1", "x > avg(x)", "sum(x) / 10", "row_number() OVER (ORDER BY x)", "first(x)", "x - min(x) OVER (PARTITION BY y)"]
        {
            assert!(part(other), "{other}");
        }
    }

    #[test]
    fn decimal_products_keep_both_scales() {
        let df = df!("p" => ["12.25", "0.03"], "d" => ["0.05", "0.07"], "i" => [2i64, 3]).unwrap();
        let dec = |name: &str| col(name).cast(DataType::Decimal(15, 2));
        let df = df.lazy().select([dec("p").alias("p"), dec("d").alias("d"), col("i")]).collect().unwrap();
        let schema = df.schema().clone();
        let product = |text: &str| {
            let e = exact_decimals(compile(&Located::new(text.to_string(), Origin::at(1, 1))).unwrap(), &schema);
            df.clone()
                .lazy()
                .select([e.alias("x")])
                .collect()
                .unwrap()
                .column("x")
                .unwrap()
                .cast(&DataType::String)
                .unwrap()
                .str()
                .unwrap()
                .iter()
                .map(|v| v.unwrap().to_string())
                .collect::<Vec<_>>()
        };
        // 12.25 * 0.05 = 0.6125 (polars alone gives 0.61); 0.03 * 0.07 = 0.0021 (polars: 0.00).
        assert_eq!(product("p * d"), ["0.6125", "0.0021"]);
        assert_eq!(product("p * (1 - d) * (1 + d)"), ["12.219375", "0.029853"]);
        // An integer factor keeps the decimal's scale.
        assert_eq!(product("p * i"), ["24.50", "0.09"]);
        // Comparisons with float literals the scale holds become decimal comparisons; others
        // (0.125 at scale 2) stay float comparisons. Both give the same answer.
        for (text, want) in [
            ("p >= 0.03", ["true", "true"]),
            ("d BETWEEN 0.05 AND 0.06", ["true", "false"]),
            ("d < 0.065", ["true", "false"]),
            ("p = 12.25", ["true", "false"]),
        ] {
            let e = compile(&Located::new(text.to_string(), Origin::at(1, 1))).unwrap();
            let rewritten = format!("{:?}", exact_decimals(e, &schema));
            assert_eq!(rewritten.contains("dyn float"), text.contains("0.065"), "{text}: {rewritten}");
            assert_eq!(product(text), want, "{text}");
        }
    }

    fn loc(s: &str) -> Located<String> {
        Located::new(s.to_string(), Origin::at(3, 10))
    }

    #[test]
    fn syntax_error_points_at_the_token() {
        let (origin, msg) = compile(&loc("status >= = 500")).unwrap_err();
        assert_eq!(origin, Origin::at(3, 20), "{msg}");
        assert!(msg.contains("invalid expression"), "{msg}");
    }

    #[test]
    fn aggregates_parse() {
        assert_eq!(parse_aggregate(&loc("count(*)")).unwrap().func, AggFunc::Count);
        assert_eq!(parse_aggregate(&loc("COUNT(DISTINCT path)")).unwrap().func, AggFunc::CountDistinct);
        assert_eq!(parse_aggregate(&loc("avg(a * b)")).unwrap().func, AggFunc::Mean);
        assert!(parse_aggregate(&loc("sum(*)")).is_err());
        let q = parse_aggregate(&loc("quantile(round(a, 1), 0.95)")).unwrap();
        assert_eq!((q.func, q.q), (AggFunc::Quantile, Some(0.95)));
        assert!(parse_aggregate(&loc("quantile(a, 2)")).is_err());
        let (_, msg) = parse_aggregate(&loc("summ(x)")).unwrap_err();
        assert!(msg.contains("did you mean sum?"), "{msg}");
    }

    #[test]
    fn columns_of_expression() {
        let e = compile(&loc("a + b * 2 > c")).unwrap();
        let mut cols = columns_of(&e);
        cols.sort();
        assert_eq!(cols, ["a", "b", "c"]);
    }
}
