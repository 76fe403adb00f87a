//! Exact decimal arithmetic: `+`, `-` and `*` of decimals (and integers) with SQL's result
//! scales, on the 128-bit integers underneath.
//!
//! polars gives `a * b` the larger of the two scales and rounds each product, so TPC-H Q1's
//! `sum(price * (1 - discount))` came out rounded. Widening one factor first made the answer
//! exact, but polars then multiplies and divides by a power of ten on every row, with an
//! overflow check through an `Option` per value: the arithmetic was a quarter of Q1 on
//! Parquet. Here a product is one integer multiplication (its scale is the sum of the scales,
//! as in SQL), and a sum or difference rescales to the larger scale. A result beyond 38
//! digits is an error, as in DuckDB.
use std::sync::OnceLock;

use polars::prelude::arity::{binary_elementwise_values, unary_elementwise_values};
use polars::prelude::*;

/// An exact decimal operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    /// `a + b`, at the larger scale.
    Add,
    /// `a - b`, at the larger scale.
    Sub,
    /// `a * b`, at the sum of the scales.
    Mul,
}

impl Arith {
    fn name(self) -> &'static str {
        match self {
            Arith::Add => "decimal_add",
            Arith::Sub => "decimal_sub",
            Arith::Mul => "decimal_mul",
        }
    }

    /// The result's scale for operands of scales `l` and `r`.
    fn scale(self, l: usize, r: usize) -> usize {
        match self {
            Arith::Mul => (l + r).min(38),
            Arith::Add | Arith::Sub => l.max(r),
        }
    }
}

/// The scale of an operand: a decimal's, 0 for an integer; None for anything else.
pub fn operand_scale(dtype: &DataType) -> Option<usize> {
    match dtype {
        DataType::Decimal(_, s) => Some(*s),
        d if d.is_integer() => Some(0),
        _ => None,
    }
}

const POW10: [i128; 39] = {
    let mut p = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        p[i] = p[i - 1] * 10;
        i += 1;
    }
    p
};

/// An operand as 128-bit integers at its own scale (a literal stays one row long).
fn unscaled(c: &Column) -> PolarsResult<Int128Chunked> {
    let s = c.as_materialized_series().to_physical_repr().cast(&DataType::Int128)?;
    Ok(s.i128()?.clone())
}

/// True (non-zero) for a value beyond 64 bits: its high word is not its low word's sign.
#[inline(always)]
fn beyond_64(v: i128) -> u64 {
    ((v >> 64) as u64) ^ (((v as u64 as i64) >> 63) as u64)
}

/// `f` of every pair of rows in one pass, when every operand value fits in 64 bits and every
/// result in 38 digits; None otherwise (a result may then have wrapped). `f` is given the
/// operands as i64s and returns an i128: with operands and factors within 64 bits, no result
/// passes 127 bits. Whether one passes 38 digits is told by an OR of the results' magnitudes
/// (a bound at most twice the largest). Before, the largest operand values were found first,
/// in a pass over each operand: three passes over memory instead of one, the largest part of
/// this module's time in TPC-H Q1.
fn narrow_pass(a: &Int128Chunked, b: &Int128Chunked, f: impl Fn(i64, i64) -> i128) -> Option<Int128Chunked> {
    let (mut wide, mut lo, mut hi) = (0u64, 0u64, 0u64);
    let out = combine(a, b, |x, y| {
        wide |= beyond_64(x) | beyond_64(y);
        let r = f(x as i64, y as i64);
        // One's complement: |r| for r >= 0, |r| - 1 for r < 0.
        let m = r ^ (r >> 127);
        lo |= m as u64;
        hi |= (m >> 64) as u64;
        r
    });
    let bound = 1u128 << (128 - ((u128::from(hi) << 64) | u128::from(lo)).leading_zeros());
    (wide == 0 && bound < POW10[38] as u128).then_some(out)
}

/// `f` of every pair of rows of `a` and `b`, where either may be a literal (one row).
fn combine(a: &Int128Chunked, b: &Int128Chunked, mut f: impl FnMut(i128, i128) -> i128) -> Int128Chunked {
    match (a.len(), b.len()) {
        (1, n) if n != 1 => match a.get(0) {
            Some(x) => unary_elementwise_values(b, |y| f(x, y)),
            None => Int128Chunked::full_null(a.name().clone(), n),
        },
        (n, 1) if n != 1 => match b.get(0) {
            Some(y) => unary_elementwise_values(a, |x| f(x, y)),
            None => Int128Chunked::full_null(a.name().clone(), n),
        },
        _ => binary_elementwise_values(a, b, f),
    }
}

fn apply(op: Arith, columns: &mut [Column]) -> PolarsResult<Column> {
    let (l, r) = (&columns[0], &columns[1]);
    let ls = operand_scale(l.dtype()).ok_or_else(|| polars_err!(InvalidOperation: "{} of {}", op.name(), l.dtype()))?;
    let rs = operand_scale(r.dtype()).ok_or_else(|| polars_err!(InvalidOperation: "{} of {}", op.name(), r.dtype()))?;
    let scale = op.scale(ls, rs);
    let (a, b) = (unscaled(l)?, unscaled(r)?);
    let (fa, fb) = (POW10[scale - ls.min(scale)], POW10[scale - rs.min(scale)]);
    // Without a check per row when every operand value fits in 64 bits and no result passes
    // 38 digits (a product of products has 47 digits on paper, and far fewer in practice). The
    // values are looked at, not the declared precision, which a file may not keep to. Factors
    // past 63 bits (scales 19 or more apart) go to the checked pass.
    let (ia, ib) = (i64::try_from(fa).ok(), i64::try_from(fb).ok());
    let narrow = match (op, ia, ib) {
        (Arith::Mul, _, _) => narrow_pass(&a, &b, |x, y| i128::from(x) * i128::from(y)),
        (Arith::Add, Some(1), Some(1)) => narrow_pass(&a, &b, |x, y| i128::from(x) + i128::from(y)),
        (Arith::Sub, Some(1), Some(1)) => narrow_pass(&a, &b, |x, y| i128::from(x) - i128::from(y)),
        (Arith::Add, Some(fa), Some(fb)) => narrow_pass(&a, &b, |x, y| i128::from(x) * i128::from(fa) + i128::from(y) * i128::from(fb)),
        (Arith::Sub, Some(fa), Some(fb)) => narrow_pass(&a, &b, |x, y| i128::from(x) * i128::from(fa) - i128::from(y) * i128::from(fb)),
        _ => None,
    };
    let out: Int128Chunked = if let Some(out) = narrow {
        out
    } else {
        let len = a.len().max(b.len());
        let full = |c: Int128Chunked| if c.len() == 1 && len != 1 { c.new_from_index(0, len) } else { c };
        let (a, b) = (full(a), full(b));
        // Overflow is checked on every row, null or not (the values under a null are usually
        // 0); a hit is looked at again, row by row, before it becomes an error.
        let mut overflow = false;
        let out = binary_elementwise_values(&a, &b, |x: i128, y: i128| {
            exact(op, x, y, fa, fb).unwrap_or_else(|| {
                overflow = true;
                0
            })
        });
        if overflow && a.iter().zip(b.iter()).any(|(x, y)| x.zip(y).is_some_and(|(x, y)| exact(op, x, y, fa, fb).is_none())) {
            polars_bail!(ComputeError: "decimal overflow: {} of {} and {} needs more than 38 digits", op.name(), l.dtype(), r.dtype());
        }
        out
    };
    Ok(out.with_name(l.name().clone()).into_decimal_unchecked(38, scale).into_column())
}

/// Runs the operation of an [`arith`] node, by its name, on its evaluated operands.
pub fn apply_named(name: &str, columns: &mut [Column]) -> PolarsResult<Column> {
    let op = [Arith::Add, Arith::Sub, Arith::Mul]
        .into_iter()
        .find(|op| op.name() == name)
        .ok_or_else(|| polars_err!(ComputeError: "no decimal operation {name}"))?;
    apply(op, columns)
}

/// `x op y` for unscaled values, the operands first rescaled by `fa` and `fb`; None beyond
/// 38 digits.
#[inline]
fn exact(op: Arith, x: i128, y: i128, fa: i128, fb: i128) -> Option<i128> {
    let v = match op {
        Arith::Mul => x.checked_mul(y),
        Arith::Add => x.checked_mul(fa)?.checked_add(y.checked_mul(fb)?),
        Arith::Sub => x.checked_mul(fa)?.checked_sub(y.checked_mul(fb)?),
    }?;
    (v.unsigned_abs() < POW10[38] as u128).then_some(v)
}

/// One function value per operation, so that two applications to equal operands are equal
/// expressions (polars compares functions by pointer), which finds shared subexpressions.
fn template(op: Arith) -> &'static Expr {
    static TEMPLATES: OnceLock<[Expr; 3]> = OnceLock::new();
    let all = TEMPLATES.get_or_init(|| {
        [Arith::Add, Arith::Sub, Arith::Mul].map(|op| {
            lit(0).map_many(
                move |c: &mut [Column]| apply(op, c),
                &[lit(0)],
                move |_: &Schema, fields: &[Field]| {
                    let scale = |f: &Field| operand_scale(f.dtype()).unwrap_or(0);
                    Ok(Field::new(fields[0].name().clone(), DataType::Decimal(38, op.scale(scale(&fields[0]), scale(&fields[1])))))
                },
            )
        })
    });
    &all[op as usize]
}

/// `left op right`, exactly.
pub fn arith(op: Arith, left: Expr, right: Expr) -> Expr {
    let Expr::AnonymousFunction { function, options, .. } = template(op).clone() else { unreachable!("templates are functions") };
    Expr::AnonymousFunction { input: vec![left, right], function, options, fmt_str: Box::new(op.name().into()) }
}

/// True for an expression node made by [`arith`] (row-wise, like the operators it replaces).
pub fn is_arith(e: &Expr) -> bool {
    matches!(e, Expr::AnonymousFunction { fmt_str, .. } if fmt_str.starts_with("decimal_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(name: &str, values: &[Option<i128>], scale: usize) -> Column {
        Int128Chunked::from_iter_options(name.into(), values.iter().copied()).into_decimal_unchecked(15, scale).into_column()
    }

    fn run(e: Expr, df: DataFrame) -> Column {
        df.lazy().select([e.alias("out")]).collect().unwrap().column("out").unwrap().clone()
    }

    #[test]
    fn products_keep_both_scales_and_sums_rescale_to_the_larger() {
        // price 10.50, 0.99, null; discount 0.05, 0.10, 0.07; tax 0.080, 0.000, 0.010 (scale 3)
        let df = DataFrame::new(
            3,
            vec![dec("price", &[Some(1050), Some(99), None], 2), dec("disc", &[Some(5), Some(10), Some(7)], 2), dec("tax", &[Some(80), Some(0), Some(10)], 3)],
        )
        .unwrap();
        let disc_price = arith(Arith::Mul, col("price"), arith(Arith::Sub, lit(1), col("disc")));
        let out = run(disc_price.clone(), df.clone());
        assert_eq!(out.dtype(), &DataType::Decimal(38, 4));
        // 10.50 * 0.95 = 9.9750; 0.99 * 0.90 = 0.8910
        assert_eq!(out.as_materialized_series().to_physical_repr().i128().unwrap().iter().collect::<Vec<_>>(), [Some(99750), Some(8910), None]);
        let charge = run(arith(Arith::Mul, disc_price, arith(Arith::Add, lit(1), col("tax"))), df.clone());
        assert_eq!(charge.dtype(), &DataType::Decimal(38, 7));
        // 9.9750 * 1.080 = 10.7730000
        assert_eq!(charge.as_materialized_series().to_physical_repr().i128().unwrap().get(0), Some(107730000));
        let mixed = run(arith(Arith::Add, col("disc"), col("tax")), df);
        assert_eq!(mixed.dtype(), &DataType::Decimal(38, 3));
        assert_eq!(mixed.as_materialized_series().to_physical_repr().i128().unwrap().iter().collect::<Vec<_>>(), [Some(130), Some(100), Some(80)]);
    }

    #[test]
    fn a_value_beyond_64_bits_is_told_by_its_high_word() {
        for v in [0, -1, 5, i64::MAX as i128, i64::MIN as i128] {
            assert_eq!(beyond_64(v), 0, "{v}");
        }
        for v in [i64::MAX as i128 + 1, i64::MIN as i128 - 1, 1 << 100, -(1 << 100), i128::MAX, i128::MIN] {
            assert_ne!(beyond_64(v), 0, "{v}");
        }
    }

    #[test]
    fn equal_operations_are_equal_expressions() {
        assert_eq!(arith(Arith::Mul, col("a"), col("b")), arith(Arith::Mul, col("a"), col("b")));
        assert_ne!(arith(Arith::Mul, col("a"), col("b")), arith(Arith::Add, col("a"), col("b")));
        assert!(is_arith(&arith(Arith::Sub, col("a"), lit(1))));
    }

    #[test]
    fn fast_and_checked_paths_agree_with_exact_arithmetic() {
        // Small values (one 64-bit multiplication), a value past 64 bits (128-bit products),
        // a batch whose largest values could overflow together (checked per row; no row
        // does), literals on either side, a null literal, and sums at different scales.
        let batches: [Vec<Option<i128>>; 4] = [
            vec![Some(12345), Some(-99), None, Some(0), Some(7)],
            vec![Some(i64::MAX as i128 + 1), Some(-3), None, Some(2), Some(9)],
            vec![Some(1 << 70), Some(-(1 << 65)), Some(3), None, Some(5)],
            vec![Some(10i128.pow(18)), Some(-(10i128.pow(18) + 7)), Some(5), Some(1), None],
        ];
        let ops = [Arith::Add, Arith::Sub, Arith::Mul];
        for values in &batches {
            let df = DataFrame::new(5, vec![dec("a", values, 2), dec("b", &values.iter().rev().copied().collect::<Vec<_>>(), 4)]).unwrap();
            let a: Vec<Option<i128>> = values.clone();
            let b: Vec<Option<i128>> = values.iter().rev().copied().collect();
            for op in ops {
                let (fa, fb) = match op {
                    Arith::Mul => (1, 1),
                    _ => (100, 1),
                };
                let want = |x: Option<i128>, y: Option<i128>| x.zip(y).map(|(x, y)| exact(op, x, y, fa, fb).expect("fits"));
                let got = |e: Expr| run(e, df.clone()).as_materialized_series().to_physical_repr().i128().unwrap().iter().collect::<Vec<_>>();
                assert_eq!(got(arith(op, col("a"), col("b"))), a.iter().zip(&b).map(|(&x, &y)| want(x, y)).collect::<Vec<_>>(), "{op:?} of {values:?}");
                let seven = lit(7).cast(DataType::Decimal(38, 4));
                // a op 7.0000 and 7.0000 op b, against the same with the literal as a column.
                let sevens = dec("s", &[Some(70000); 5], 4);
                let mut with_sevens = df.clone();
                with_sevens.with_column(sevens).unwrap();
                let as_column = |e: Expr| run(e, with_sevens.clone());
                assert_eq!(run(arith(op, col("a"), seven.clone()), with_sevens.clone()), as_column(arith(op, col("a"), col("s"))), "{op:?} a, literal");
                assert_eq!(run(arith(op, seven.clone(), col("b")), with_sevens.clone()), as_column(arith(op, col("s"), col("b"))), "{op:?} literal, b");
                let null = lit(NULL).cast(DataType::Decimal(38, 4));
                assert_eq!(run(arith(op, col("a"), null), df.clone()).null_count(), 5, "{op:?} with a null literal");
            }
        }
    }

    #[test]
    fn more_than_38_digits_is_an_error_and_nulls_stay_null() {
        let big = 10i128.pow(30);
        let df = DataFrame::new(2, vec![dec("a", &[Some(big), None], 2), dec("b", &[Some(1), Some(big)], 2)]).unwrap();
        let out = run(arith(Arith::Mul, col("a"), col("b")), df.clone());
        assert_eq!(out.as_materialized_series().to_physical_repr().i128().unwrap().iter().collect::<Vec<_>>(), [Some(big), None], "10^30 * 1 fits");
        let err = df.clone().lazy().select([arith(Arith::Mul, col("b"), col("b"))]).collect().unwrap_err();
        assert!(err.to_string().contains("decimal overflow"), "{err}");
        let err = df.lazy().select([arith(Arith::Add, col("a"), lit(1).cast(DataType::Decimal(38, 12)))]).collect().unwrap_err();
        assert!(err.to_string().contains("decimal overflow"), "rescaling to scale 12 overflows: {err}");
    }

    #[test]
    fn literals_over_no_rows_and_one_row() {
        for rows in [0usize, 1, 3] {
            let values: Vec<Option<i128>> = (0..rows as i128).map(|i| Some(5 + i)).collect();
            let df = DataFrame::new(rows, vec![dec("d", &values, 2)]).unwrap();
            for (e, want) in [
                (arith(Arith::Sub, lit(1), col("d")), (|v: i128| 100 - v) as fn(i128) -> i128),
                (arith(Arith::Add, col("d"), lit(1)), |v: i128| v + 100),
                (arith(Arith::Mul, col("d"), col("d")), |v: i128| v * v),
            ] {
                let out = run(e, df.clone());
                let got: Vec<Option<i128>> = out.as_materialized_series().to_physical_repr().i128().unwrap().iter().collect();
                assert_eq!(got, values.iter().map(|v| v.map(want)).collect::<Vec<_>>(), "{rows} rows");
            }
        }
    }
}
