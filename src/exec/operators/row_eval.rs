//! Evaluates simple row-wise expressions on a batch without planning a polars query.
//!
//! An aggregate's arguments (`price * (1 - discount)`) were computed by a lazy `select` per
//! batch, and planning that query costs about half a millisecond whatever the batch size. After
//! a selective join the batches are small (a thousand rows), and planning was most of TPC-H
//! Q10's aggregate. The expressions here are columns, number literals, casts, exact decimal
//! arithmetic, and `+ - *` of f64 operands; anything else goes through polars.
use polars::prelude::*;
use polars_plan::plans::DynLiteralValue;

use crate::plan::decimal;

/// A literal number as a one-row column, if the expression is one.
fn literal(e: &Expr) -> Option<Column> {
    let Expr::Literal(value) = e else { return None };
    let scalar_or_int = matches!(value, LiteralValue::Scalar(_) | LiteralValue::Dyn(DynLiteralValue::Int(_) | DynLiteralValue::Float(_)));
    let av = scalar_or_int.then(|| value.to_any_value()).flatten()?;
    let dtype = av.dtype();
    (dtype.is_primitive_numeric() || dtype.is_decimal()).then(|| Column::new_scalar("literal".into(), Scalar::new(dtype, av.into_static()), 1))
}

/// The type of `e` over `schema`, when the evaluator takes it; None otherwise.
fn supported_type(e: &Expr, schema: &Schema) -> Option<DataType> {
    let dtype = e.to_field(schema).ok()?.dtype;
    let ok = match e {
        Expr::Column(_) => true,
        Expr::Alias(inner, _) => supported_type(inner, schema).is_some(),
        Expr::Literal(_) => literal(e).is_some(),
        Expr::Cast { expr, dtype: DataTypeExpr::Literal(_), .. } => supported_type(expr, schema).is_some(),
        Expr::AnonymousFunction { input, .. } if decimal::is_arith(e) => input.iter().all(|i| supported_type(i, schema).is_some()),
        // f64 arithmetic, a number literal taking the f64 type as polars gives it.
        Expr::BinaryExpr { left, op: Operator::Plus | Operator::Minus | Operator::Multiply, right } => {
            let f64_or_literal = |x: &Expr| literal(x).is_some() || supported_type(x, schema) == Some(DataType::Float64);
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

/// `e` over `batch` (which must have the schema [`supported`] was asked about).
pub fn eval(e: &Expr, batch: &DataFrame) -> PolarsResult<Column> {
    match e {
        Expr::Column(name) => batch.column(name).cloned(),
        Expr::Alias(inner, name) => Ok(eval(inner, batch)?.with_name(name.clone())),
        Expr::Literal(_) => literal(e).ok_or_else(|| polars_err!(ComputeError: "unsupported literal {e:?}")),
        Expr::Cast { expr, dtype: DataTypeExpr::Literal(dtype), options } => eval(expr, batch)?.cast_with_options(dtype, *options),
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
    fn equals_polars_on_what_it_takes_and_declines_the_rest() {
        let price = Int128Chunked::from_iter_options("price".into(), [Some(1050i128), None, Some(7)].into_iter()).into_decimal_unchecked(15, 2);
        let df = df!("f" => [1.5, 2.0, -0.25], "g" => [Some(2.0), None, Some(4.0)], "i" => [1i64, 2, 3], "price" => price.into_series()).unwrap();
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
        for e in [col("i") * lit(2), col("f") / col("g"), col("f").abs(), when(col("f").gt(lit(0))).then(col("f")).otherwise(lit(0.0)), lit(1.0) + lit(2.0)] {
            assert!(!supported(&e, df.schema()), "{e:?} is left to polars");
        }
    }
}
