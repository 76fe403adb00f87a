//! Evaluates simple row-wise expressions on a batch without planning a polars query.
//!
//! An aggregate's arguments (`price * (1 - discount)`) were computed by a lazy `select` per
//! batch, and planning that query costs about half a millisecond whatever the batch size. After
//! a selective join the batches are small (a thousand rows), and planning was most of TPC-H
//! Q10's aggregate; a filter planned the same way per batch cost as much. The expressions here
//! are columns, number literals, typed constants (`DATE '1994-01-01'`), casts, exact decimal
//! arithmetic, `+ - *` of f64 operands, comparisons and `AND` / `OR`; anything else goes
//! through polars.
use polars::prelude::*;
use polars_plan::plans::DynLiteralValue;

use crate::plan::decimal;

/// A literal (number, string, date) as a one-row column, if the expression is one.
fn literal(e: &Expr) -> Option<Column> {
    let Expr::Literal(value) = e else { return None };
    let scalar_or_dyn =
        matches!(value, LiteralValue::Scalar(_) | LiteralValue::Dyn(DynLiteralValue::Int(_) | DynLiteralValue::Float(_) | DynLiteralValue::Str(_)));
    let av = scalar_or_dyn.then(|| value.to_any_value()).flatten()?;
    let dtype = av.dtype();
    let taken = dtype.is_primitive_numeric() || dtype.is_decimal() || dtype.is_temporal() || dtype == DataType::String;
    taken.then(|| Column::new_scalar("literal".into(), Scalar::new(dtype, av.into_static()), 1))
}

/// A typed constant such as `DATE '1994-01-01'` or a decimal literal (a string literal cast to
/// a date, datetime or decimal type), as a one-row column.
fn typed_constant(e: &Expr) -> Option<Column> {
    let Expr::Cast { expr, dtype: DataTypeExpr::Literal(dtype), options } = e else { return None };
    let Expr::Literal(value @ (LiteralValue::Dyn(DynLiteralValue::Str(_)) | LiteralValue::Scalar(_))) = &**expr else { return None };
    if !matches!(dtype, DataType::Date | DataType::Datetime(..) | DataType::Decimal(..)) {
        return None;
    }
    let av = value.to_any_value()?.into_static();
    let c = Column::new_scalar("literal".into(), Scalar::new(av.dtype(), av), 1);
    let cast = c.cast_with_options(dtype, *options).ok()?;
    // A constant that does not convert is left to polars (and its error).
    (cast.null_count() == 0).then_some(cast)
}

/// True for a comparison operator.
fn comparison(op: &Operator) -> bool {
    matches!(op, Operator::Eq | Operator::NotEq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq)
}

/// The type of `e` over `schema`, when the evaluator takes it; None otherwise.
fn supported_type(e: &Expr, schema: &Schema) -> Option<DataType> {
    let dtype = e.to_field(schema).ok()?.dtype;
    let ok = match e {
        Expr::Column(_) => true,
        Expr::Alias(inner, _) => supported_type(inner, schema).is_some(),
        Expr::Literal(_) => literal(e).is_some(),
        Expr::Cast { .. } if typed_constant(e).is_some() => true,
        Expr::Cast { expr, dtype: DataTypeExpr::Literal(_), .. } => supported_type(expr, schema).is_some(),
        // Comparisons of a column (or computed value) with one of the same type, or a number
        // column with a number literal; `AND` / `OR` of such.
        Expr::BinaryExpr { left, op, right } if comparison(op) => {
            let side = |x: &Expr| if literal(x).is_some() || typed_constant(x).is_some() { None } else { supported_type(x, schema) };
            let constant = |x: &Expr| literal(x).or_else(|| typed_constant(x)).map(|c| c.dtype().clone());
            match (side(left), side(right)) {
                (Some(l), Some(r)) => l == r && (l.is_primitive_numeric() || l.is_decimal() || l.is_temporal() || l == DataType::String),
                (Some(t), None) | (None, Some(t)) => {
                    let c = constant(if side(left).is_some() { right } else { left });
                    match c {
                        Some(c) if c == t => true,
                        Some(c) if c.is_decimal() && t.is_decimal() => true,
                        Some(c) => (t.is_primitive_numeric() || t.is_decimal()) && c.is_primitive_numeric() && !(t.is_integer() && c.is_float()),
                        None => false,
                    }
                }
                (None, None) => false,
            }
        }
        Expr::BinaryExpr { left, op: Operator::And | Operator::LogicalAnd | Operator::Or | Operator::LogicalOr, right } => {
            supported_type(left, schema) == Some(DataType::Boolean) && supported_type(right, schema) == Some(DataType::Boolean)
        }
        // NOT of a condition (`a <> b` is written as NOT (a = b)), IS [NOT] NULL of a column.
        Expr::Function { input, function: FunctionExpr::Boolean(BooleanFunction::Not) } => {
            input.len() == 1 && supported_type(&input[0], schema) == Some(DataType::Boolean)
        }
        Expr::Function { input, function: FunctionExpr::Boolean(BooleanFunction::IsNull | BooleanFunction::IsNotNull) } => {
            input.len() == 1 && supported_type(&input[0], schema).is_some() && literal(&input[0]).is_none()
        }
        Expr::AnonymousFunction { input, .. } if decimal::is_arith(e) => input.iter().all(|i| supported_type(i, schema).is_some()),
        // f64 arithmetic, a number literal taking the f64 type as polars gives it.
        Expr::BinaryExpr { left, op: Operator::Plus | Operator::Minus | Operator::Multiply, right } => {
            let f64_or_literal =
                |x: &Expr| literal(x).is_some_and(|c| c.dtype().is_primitive_numeric()) || supported_type(x, schema) == Some(DataType::Float64);
            dtype == DataType::Float64 && f64_or_literal(left) && f64_or_literal(right) && !(literal(left).is_some() && literal(right).is_some())
        }
        _ => false,
    };
    ok.then_some(dtype)
}

/// True when [`eval`] computes `e` over rows of `schema` (with the same result as polars).
pub fn supported(e: &Expr, schema: &Schema) -> bool {
    supported_type(e, schema).is_some()
}

/// `e` over `batch` with one value per row: a result of one row (literals only) is repeated to
/// the batch's length.
pub fn eval_rows(e: &Expr, batch: &DataFrame) -> PolarsResult<Column> {
    let rows = batch.height();
    let c = eval(e, batch)?;
    Ok(if c.len() == 1 && rows != 1 { c.new_from_index(0, rows) } else { c })
}

/// The condition `e` over `batch`, one value per row.
pub fn eval_condition(e: &Expr, batch: &DataFrame) -> PolarsResult<BooleanChunked> {
    Ok(eval_rows(e, batch)?.bool()?.clone())
}

/// The rows where `condition` is true (not false, not null), as a bitmap.
pub fn true_rows(condition: &BooleanChunked) -> polars_arrow::bitmap::Bitmap {
    let condition = condition.rechunk();
    let array = condition.downcast_as_array();
    match array.validity() {
        Some(valid) => array.values() & valid,
        None => array.values().clone(),
    }
}

/// `e` over `batch` (which must have the schema [`supported`] was asked about).
pub fn eval(e: &Expr, batch: &DataFrame) -> PolarsResult<Column> {
    match e {
        Expr::Column(name) => batch.column(name).cloned(),
        Expr::Alias(inner, name) => Ok(eval(inner, batch)?.with_name(name.clone())),
        Expr::Literal(_) => literal(e).ok_or_else(|| polars_err!(ComputeError: "unsupported literal {e:?}")),
        Expr::Cast { .. } if let Some(c) = typed_constant(e) => Ok(c),
        Expr::Cast { expr, dtype: DataTypeExpr::Literal(dtype), options } => eval(expr, batch)?.cast_with_options(dtype, *options),
        Expr::BinaryExpr { left, op, right } if comparison(op) => {
            let (l, r) = (eval(left, batch)?, eval(right, batch)?);
            let (l, r) = (l.as_materialized_series(), r.as_materialized_series());
            let mask = match op {
                Operator::Eq => l.equal(r),
                Operator::NotEq => l.not_equal(r),
                Operator::Lt => l.lt(r),
                Operator::LtEq => l.lt_eq(r),
                Operator::Gt => l.gt(r),
                _ => l.gt_eq(r),
            }?;
            Ok(mask.into_column())
        }
        Expr::Function { input, function: FunctionExpr::Boolean(f) } => {
            let c = eval(&input[0], batch)?;
            Ok(match f {
                BooleanFunction::Not => !c.bool()?,
                BooleanFunction::IsNull => c.is_null(),
                BooleanFunction::IsNotNull => c.is_not_null(),
                _ => polars_bail!(ComputeError: "unsupported function {f:?}"),
            }
            .into_column())
        }
        Expr::BinaryExpr { left, op: op @ (Operator::And | Operator::LogicalAnd | Operator::Or | Operator::LogicalOr), right } => {
            let (l, r) = (eval(left, batch)?, eval(right, batch)?);
            let (l, r) = (l.bool()?, r.bool()?);
            Ok(if matches!(op, Operator::And | Operator::LogicalAnd) { l & r } else { l | r }.into_column())
        }
        Expr::AnonymousFunction { input, fmt_str, .. } if decimal::is_arith(e) => {
            let mut columns = input.iter().map(|i| eval(i, batch)).collect::<PolarsResult<Vec<_>>>()?;
            decimal::apply_named(fmt_str, &mut columns)
        }
        Expr::BinaryExpr { left, op, right } => {
            let operand = |x: &Expr| -> PolarsResult<Column> {
                let c = eval(x, batch)?;
                if c.dtype() == &DataType::Float64 { Ok(c) } else { c.cast(&DataType::Float64) }
            };
            let (l, r) = (operand(left)?, operand(right)?);
            // A literal on the left keeps the column's length and name (as polars does).
            let out = match op {
                Operator::Plus => &l + &r,
                Operator::Minus => &l - &r,
                Operator::Multiply => &l * &r,
                _ => polars_bail!(ComputeError: "unsupported operator {op:?}"),
            }?;
            Ok(if l.len() == 1 && r.len() != 1 { out.with_name(r.name().clone()) } else { out })
        }
        _ => polars_bail!(ComputeError: "unsupported expression {e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::decimal::{Arith, arith};

    #[test]
    fn predicates_as_the_planner_writes_them_equal_polars_with_nulls() {
        let days = Int32Chunked::from_iter_options("d".into(), [Some(8766), Some(8765), None, Some(9131)].into_iter()).into_date();
        let disc = Int128Chunked::from_iter_options("disc".into(), [Some(5i128), Some(7), Some(8), None].into_iter()).into_decimal_unchecked(15, 2);
        let df = df!(
            "d" => days.into_series(),
            "disc" => disc.into_series(),
            "q" => [Some(23i64), Some(24), None, Some(1)],
            "f" => [Some(0.5), Some(30.0), Some(2.0), None],
            "flag" => [Some("R"), Some("A"), None, Some("R")],
        )
        .unwrap();
        let schema = df.schema().clone();
        for text in [
            "d >= DATE '1994-01-01' AND d < DATE '1995-01-01'",
            "disc >= 0.05 AND disc <= 0.07 AND q < 24",
            "flag = 'R' OR q > 20",
            "f > 1 AND flag <> 'A'",
            "q = q AND d = d",
            "NOT (q > 1) OR q IS NULL",
            "flag IS NOT NULL AND disc <> 0.07",
            "disc < 0.065 OR f >= 2",
            "d <> d OR disc >= 0.070",
        ] {
            let e = crate::plan::expr::exact_decimals(polars::sql::sql_expr(text).unwrap(), &schema);
            assert!(supported(&e, &schema), "{text}: {e:?}");
            let got = eval(&e, &df).unwrap();
            let want = df.clone().lazy().select([e.clone()]).collect().unwrap().columns()[0].clone();
            assert_eq!(got.bool().unwrap().iter().collect::<Vec<_>>(), want.bool().unwrap().iter().collect::<Vec<_>>(), "{text}");
        }
    }

    #[test]
    fn equals_polars_on_what_it_takes_and_declines_the_rest() {
        let price = Int128Chunked::from_iter_options("price".into(), [Some(1050i128), None, Some(7)].into_iter()).into_decimal_unchecked(15, 2);
        let df = df!("f" => [1.5, 2.0, -0.25], "g" => [Some(2.0), None, Some(4.0)], "i" => [1i64, 2, 3], "price" => price.into_series(), "s" => [Some("R"), None, Some("A")]).unwrap();
        let taken = [
            col("f"),
            col("f") * (lit(1) - col("g")),
            (col("f") + lit(0.5)) * col("g"),
            col("i").cast(DataType::Float64),
            arith(Arith::Mul, col("price"), arith(Arith::Sub, lit(1), col("price"))).cast(DataType::Float64),
            arith(Arith::Add, col("price"), col("i")).alias("named"),
        ];
        for e in taken {
            assert!(supported(&e, df.schema()), "{e:?}");
            let got = eval(&e, &df).unwrap();
            let want = df.clone().lazy().select([e.clone()]).collect().unwrap().columns()[0].clone();
            assert_eq!(got.as_materialized_series(), want.as_materialized_series(), "{e:?}");
        }
        for e in [
            col("i") * lit(2),
            col("f") / col("g"),
            col("f").abs(),
            when(col("f").gt(lit(0))).then(col("f")).otherwise(lit(0.0)),
            lit(1.0) + lit(2.0),
            col("i").lt(lit(2.5)),
            col("s") + lit("x"),
        ] {
            assert!(!supported(&e, df.schema()), "{e:?} is left to polars");
        }
    }
}
