//! TPC-H Q1, Q3, Q5, Q6, Q10 and Q18 as rivulet pipelines (`pipelines/tpch/`) over scale factor
//! 0.01, generated here with tpchgen-cli, each compared with DuckDB at parallelism 1 and 4.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{copy_dir, csv_diff, csv_diff_ordered, duckdb_csv_in, python, root, run_in, stderr, stdout};

/// tpchgen-cli on PATH, or installed next to the python that has DuckDB.
fn tpchgen() -> PathBuf {
    let on_path = Command::new("tpchgen-cli").arg("--help").output().is_ok_and(|o| o.status.success());
    if on_path {
        return PathBuf::from("tpchgen-cli");
    }
    let out = Command::new(python()).args(["-c", "import sys, os; print(os.path.join(os.path.dirname(sys.executable), 'tpchgen-cli'))"]).output().unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn generate(dir: &Path) {
    let out = Command::new(tpchgen())
        .args(["csv", "-s", "0.01", "--tables=lineitem,orders,customer,supplier,nation,region", "--parts=2", "--output-dir"])
        .arg(dir.join("data"))
        .output()
        .expect("tpchgen-cli runs (pip install tpchgen-cli; scripts/test.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

const QUERIES: [(&str, bool, &str); 6] = [
    (
        "q1",
        false,
        "select l_returnflag, l_linestatus, sum(l_quantity) sum_qty, sum(l_extendedprice) sum_base_price,
           sum(l_extendedprice*(1-l_discount)) sum_disc_price, sum(l_extendedprice*(1-l_discount)*(1+l_tax)) sum_charge,
           avg(l_quantity) avg_qty, avg(l_extendedprice) avg_price, avg(l_discount) avg_disc, count(*) count_order
         from read_csv('data/lineitem/*.csv') where l_shipdate <= date '1998-09-02' group by all",
    ),
    (
        "q3",
        true,
        "select l_orderkey, sum(l_extendedprice*(1-l_discount)) revenue, o_orderdate, o_shippriority
         from read_csv('data/customer/*.csv') c join read_csv('data/orders/*.csv') o on c_custkey = o_custkey
           join read_csv('data/lineitem/*.csv') l on l_orderkey = o_orderkey
         where c_mktsegment = 'BUILDING' and o_orderdate < date '1995-03-15' and l_shipdate > date '1995-03-15'
         group by l_orderkey, o_orderdate, o_shippriority order by revenue desc, o_orderdate limit 10",
    ),
    (
        "q5",
        true,
        "select n_name, sum(l_extendedprice * (1 - l_discount)) as revenue
         from read_csv('data/customer/*.csv'), read_csv('data/orders/*.csv'), read_csv('data/lineitem/*.csv'),
              read_csv('data/supplier/*.csv'), read_csv('data/nation/*.csv'), read_csv('data/region/*.csv')
         where c_custkey = o_custkey and l_orderkey = o_orderkey and l_suppkey = s_suppkey and c_nationkey = s_nationkey
           and s_nationkey = n_nationkey and n_regionkey = r_regionkey and r_name = 'ASIA'
           and o_orderdate >= date '1994-01-01' and o_orderdate < date '1995-01-01'
         group by n_name order by revenue desc",
    ),
    (
        "q6",
        false,
        "select sum(l_extendedprice*l_discount) revenue from read_csv('data/lineitem/*.csv')
         where l_shipdate >= date '1994-01-01' and l_shipdate < date '1995-01-01' and l_discount between 0.05 and 0.07 and l_quantity < 24",
    ),
    (
        "q10",
        true,
        "select c_custkey, c_name, sum(l_extendedprice * (1 - l_discount)) as revenue, c_acctbal, n_name, c_address, c_phone, c_comment
         from read_csv('data/customer/*.csv'), read_csv('data/orders/*.csv'), read_csv('data/lineitem/*.csv'), read_csv('data/nation/*.csv')
         where c_custkey = o_custkey and l_orderkey = o_orderkey and o_orderdate >= date '1993-10-01' and o_orderdate < date '1994-01-01'
           and l_returnflag = 'R' and c_nationkey = n_nationkey
         group by c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment order by revenue desc, c_custkey limit 20",
    ),
    (
        "q18",
        true,
        "select c_name, c_custkey as o_custkey, o_orderkey as l_orderkey, o_orderdate, o_totalprice, sum(l_quantity) as sum_qty
         from read_csv('data/customer/*.csv'), read_csv('data/orders/*.csv'), read_csv('data/lineitem/*.csv')
         where o_orderkey in (select l_orderkey from read_csv('data/lineitem/*.csv') group by l_orderkey having sum(l_quantity) > 300)
           and c_custkey = o_custkey and o_orderkey = l_orderkey
         group by c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice order by o_totalprice desc, o_orderdate, o_orderkey limit 100",
    ),
];

#[test]
fn tpch_queries_match_duckdb_at_sf_0_01() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tpch");
    copy_dir(&root().join("pipelines/tpch"), &dir);
    generate(&dir);
    let failures = compare_with_duckdb(&dir, |sql| sql.to_string());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs every query in `dir` at parallelism 1 and 4 and compares each answer with DuckDB's
/// answer to its SQL (as `sql_for` rewrites it); returns the differences.
fn compare_with_duckdb(dir: &Path, sql_for: impl Fn(&str) -> String) -> Vec<String> {
    let mut failures = Vec::new();
    for (q, ordered, sql) in QUERIES {
        let expected = duckdb_csv_in(dir, &sql_for(sql));
        for p in ["1", "4"] {
            let out = run_in(dir, &["run", &format!("{q}.toml"), "-q", "-p", p]);
            if !out.status.success() {
                failures.push(format!("{q} -p {p}: {}", stderr(&out)));
                continue;
            }
            let diff = if ordered { csv_diff_ordered(&stdout(&out), &expected) } else { csv_diff(&stdout(&out), &expected) };
            if let Some(d) = diff {
                failures.push(format!("{q} -p {p}: {d}"));
            }
        }
    }
    failures
}

/// The same queries over Parquet files (several row groups each), where the readers filter
/// while decoding and Q18 reads lineitem a second time for its last join instead of holding it;
/// compared with DuckDB over the same files.
#[test]
fn tpch_queries_on_parquet_match_duckdb_at_sf_0_01() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tpch");
    copy_dir(&root().join("pipelines/tpch"), &dir);
    let out = Command::new(tpchgen())
        .args(["parquet", "-s", "0.01", "--tables=lineitem,orders,customer,supplier,nation,region", "--parts=2", "--row-group-bytes=200KB", "--output-dir"])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (q, _, _) in QUERIES {
        let file = dir.join(format!("{q}.toml"));
        let text = std::fs::read_to_string(&file).unwrap().replace("format = \"csv\"\npath", "format = \"parquet\"\npath").replace("*.csv\"", "*.parquet\"");
        std::fs::write(&file, text).unwrap();
    }
    let failures = compare_with_duckdb(&dir, |sql| sql.replace("read_csv(", "read_parquet(").replace(".csv')", ".parquet')"));
    let explain = stdout(&run_in(&dir, &["explain", "q18.toml", "--graph", "job"]));
    assert!(explain.contains("lineitem/reread"), "{explain}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// On Parquet, prices are decimals: Q1's sums of products then equal DuckDB's digit for digit
/// (sum_disc_price has scale 4, sum_charge 6; polars alone rounds each product to scale 2).
#[test]
fn tpch_q1_decimal_sums_on_parquet_equal_duckdbs_digit_for_digit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_dir(&root().join("pipelines/tpch"), dir);
    let out = Command::new(tpchgen()).args(["parquet", "-s", "0.01", "--tables=lineitem", "--parts=2", "--output-dir"]).arg(dir.join("data")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = duckdb_csv_in(
        dir,
        "select l_returnflag, l_linestatus, sum(l_quantity), sum(l_extendedprice), sum(l_extendedprice*(1-l_discount)),
           sum(l_extendedprice*(1-l_discount)*(1+l_tax)) from read_parquet('data/lineitem/*.parquet')
         where l_shipdate <= date '1998-09-02' group by all",
    );
    assert!(expected.contains(".") && exact_sums(&expected).len() == 4, "{expected}");
    for p in ["1", "4"] {
        let args = ["run", "q1.toml", "-q", "-p", p, "--set", "source.lineitem.format=parquet", "--set", "source.lineitem.path=data/lineitem/*.parquet"];
        let out = run_in(dir, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(exact_sums(&stdout(&out)), exact_sums(&expected), "-p {p}");
    }
}

/// Q1's group keys and decimal sums as text, sorted: decimal arithmetic is exact, so they equal
/// DuckDB's digit for digit (sum_disc_price has scale 4, sum_charge 6).
fn exact_sums(csv: &str) -> Vec<String> {
    let mut rows: Vec<String> = csv.lines().skip(1).map(|l| l.split(',').take(6).collect::<Vec<_>>().join(",")).collect();
    rows.sort();
    rows
}
