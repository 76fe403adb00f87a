"""TPC-H Q1, Q3, Q5, Q6, Q10, Q18: rivulet vs DuckDB vs polars in one run, with answers checked.

    python bench/tpch.py --data /work/tpch-sf1 --rivulet PATH/TO/rivulet [--runs 1] [--formats csv,parquet]
Needs duckdb and polars in the python running it (2 threads each). rivulet is timed as a whole
process at -p 2 (and -p 1 for the scaling column).
"""
import argparse, csv, io, os, re, statistics, subprocess, sys, time
from datetime import date
import duckdb
os.environ.setdefault("POLARS_MAX_THREADS", "2")
import polars as pl

HERE = os.path.dirname(os.path.abspath(__file__))
PIPES = os.path.join(HERE, "..", "pipelines", "tpch")
c = pl.col

SQL = {
 "q1": """select l_returnflag, l_linestatus, sum(l_quantity), sum(l_extendedprice), sum(l_extendedprice*(1-l_discount)),
   sum(l_extendedprice*(1-l_discount)*(1+l_tax)), avg(l_quantity), avg(l_extendedprice), avg(l_discount), count(*)
   from {lineitem} where l_shipdate <= date '1998-09-02' group by all order by all""",
 "q3": """select l_orderkey, sum(l_extendedprice*(1-l_discount)) revenue, o_orderdate, o_shippriority
   from {customer} join {orders} on c_custkey = o_custkey join {lineitem} on l_orderkey = o_orderkey
   where c_mktsegment = 'BUILDING' and o_orderdate < date '1995-03-15' and l_shipdate > date '1995-03-15'
   group by l_orderkey, o_orderdate, o_shippriority order by revenue desc, o_orderdate limit 10""",
 "q5": """select n_name, sum(l_extendedprice * (1 - l_discount)) as revenue from {customer}, {orders}, {lineitem}, {supplier}, {nation}, {region}
   where c_custkey = o_custkey and l_orderkey = o_orderkey and l_suppkey = s_suppkey and c_nationkey = s_nationkey
   and s_nationkey = n_nationkey and n_regionkey = r_regionkey and r_name = 'ASIA' and o_orderdate >= date '1994-01-01'
   and o_orderdate < date '1995-01-01' group by n_name order by revenue desc""",
 "q6": """select sum(l_extendedprice*l_discount) from {lineitem} where l_shipdate >= date '1994-01-01' and l_shipdate < date '1995-01-01'
   and l_discount between 0.05 and 0.07 and l_quantity < 24""",
 "q10": """select c_custkey, c_name, sum(l_extendedprice * (1 - l_discount)) as revenue, c_acctbal, n_name, c_address, c_phone, c_comment
   from {customer}, {orders}, {lineitem}, {nation} where c_custkey = o_custkey and l_orderkey = o_orderkey and o_orderdate >= date '1993-10-01'
   and o_orderdate < date '1994-01-01' and l_returnflag = 'R' and c_nationkey = n_nationkey
   group by c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment order by revenue desc, c_custkey limit 20""",
 "q18": """select c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice, sum(l_quantity) from {customer}, {orders}, {lineitem}
   where o_orderkey in (select l_orderkey from {lineitem} group by l_orderkey having sum(l_quantity) > 300)
   and c_custkey = o_custkey and o_orderkey = l_orderkey group by c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice
   order by o_totalprice desc, o_orderdate, o_orderkey limit 100""",
}

def polars_query(q, src):
    l, o, cu = src("lineitem"), src("orders"), src("customer")
    rev = (c("l_extendedprice") * (1 - c("l_discount"))).sum().alias("revenue")
    if q == "q1":
        return (l.filter(c("l_shipdate") <= date(1998, 9, 2)).group_by("l_returnflag", "l_linestatus").agg(
            c("l_quantity").sum(), c("l_extendedprice").sum(), (c("l_extendedprice") * (1 - c("l_discount"))).sum().alias("a"),
            (c("l_extendedprice") * (1 - c("l_discount")) * (1 + c("l_tax"))).sum().alias("b"), c("l_quantity").mean().alias("c"),
            c("l_extendedprice").mean().alias("d"), c("l_discount").mean().alias("e"), pl.len()).sort("l_returnflag", "l_linestatus"))
    if q == "q6":
        return l.filter((c("l_shipdate") >= date(1994, 1, 1)) & (c("l_shipdate") < date(1995, 1, 1)) & c("l_discount").is_between(0.05, 0.07) & (c("l_quantity") < 24)).select((c("l_extendedprice") * c("l_discount")).sum())
    if q == "q3":
        return (cu.filter(c("c_mktsegment") == "BUILDING").join(o, left_on="c_custkey", right_on="o_custkey").join(l, left_on="o_orderkey", right_on="l_orderkey")
            .filter((c("o_orderdate") < date(1995, 3, 15)) & (c("l_shipdate") > date(1995, 3, 15)))
            .group_by("o_orderkey", "o_orderdate", "o_shippriority").agg(rev).sort(["revenue", "o_orderdate"], descending=[True, False]).head(10))
    if q == "q5":
        s, n, r = src("supplier"), src("nation"), src("region")
        return (r.filter(c("r_name") == "ASIA").join(n, left_on="r_regionkey", right_on="n_regionkey").join(cu, left_on="n_nationkey", right_on="c_nationkey")
            .join(o.filter((c("o_orderdate") >= date(1994, 1, 1)) & (c("o_orderdate") < date(1995, 1, 1))), left_on="c_custkey", right_on="o_custkey")
            .join(l, left_on="o_orderkey", right_on="l_orderkey").join(s, left_on=["l_suppkey", "n_nationkey"], right_on=["s_suppkey", "s_nationkey"])
            .group_by("n_name").agg(rev).sort("revenue", descending=True))
    if q == "q10":
        n = src("nation")
        return (l.filter(c("l_returnflag") == "R").join(o.filter((c("o_orderdate") >= date(1993, 10, 1)) & (c("o_orderdate") < date(1994, 1, 1))), left_on="l_orderkey", right_on="o_orderkey")
            .join(cu, left_on="o_custkey", right_on="c_custkey").join(n, left_on="c_nationkey", right_on="n_nationkey")
            .group_by("o_custkey", "c_name", "c_acctbal", "c_phone", "n_name", "c_address", "c_comment").agg(rev)
            .sort(["revenue", "o_custkey"], descending=[True, False]).head(20))
    if q == "q18":
        big = l.group_by("l_orderkey").agg(c("l_quantity").sum().alias("q")).filter(c("q") > 300).select("l_orderkey")
        return (o.join(big, left_on="o_orderkey", right_on="l_orderkey", how="semi").join(cu, left_on="o_custkey", right_on="c_custkey")
            .join(l, left_on="o_orderkey", right_on="l_orderkey").group_by("c_name", "o_custkey", "o_orderkey", "o_orderdate", "o_totalprice")
            .agg(c("l_quantity").sum()).sort(["o_totalprice", "o_orderdate", "o_orderkey"], descending=[True, False, False]).head(100))

def sources(q):
    return re.findall(r'\[\[source\]\]\nname = "(\w+)"', open(os.path.join(PIPES, f"{q}.toml")).read())

def rivulet_cmd(binary, q, fmt, data, p):
    cmd = [binary, "run", os.path.join(PIPES, f"{q}.toml"), "-q", "-p", str(p)]
    for s in sources(q):
        cmd += ["--set", f"source.{s}.format={fmt}", "--set", f"source.{s}.path={data}/{fmt}/{s}/*.{fmt}"]
    return cmd

def timed(cmd):
    t = time.time(); out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return time.time() - t, out.stdout

def close(a, b):
    try:
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    except ValueError:
        return a == b

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/tpch-sf1"); ap.add_argument("--rivulet", required=True)
    ap.add_argument("--runs", type=int, default=1); ap.add_argument("--formats", default="csv,parquet")
    a = ap.parse_args()
    con = duckdb.connect(config={"threads": 2})
    print(f"TPC-H, data {a.data}, median of {a.runs} run(s); DuckDB and polars on 2 threads, rivulet -p 2 (and -p 1)")
    print(f"{'query':6} {'format':8} {'rivulet':>8} {'duckdb':>8} {'polars':>8} {'rivulet/fastest':>16} {'p1/p2':>6}")
    for fmt in a.formats.split(","):
        read = (lambda t: f"read_csv('{a.data}/csv/{t}/*.csv')") if fmt == "csv" else (lambda t: f"read_parquet('{a.data}/parquet/{t}/*.parquet')")
        src = (lambda t: pl.scan_csv(f"{a.data}/csv/{t}/*.csv", try_parse_dates=True)) if fmt == "csv" else (lambda t: pl.scan_parquet(f"{a.data}/parquet/{t}/*.parquet"))
        for q in SQL:
            sql = SQL[q].format(**{t: read(t) for t in ["lineitem", "orders", "customer", "supplier", "nation", "region"]})
            riv = statistics.median(timed(rivulet_cmd(a.rivulet, q, fmt, a.data, 2))[0] for _ in range(a.runs))
            riv1 = statistics.median(timed(rivulet_cmd(a.rivulet, q, fmt, a.data, 1))[0] for _ in range(a.runs))
            _, out = timed(rivulet_cmd(a.rivulet, q, fmt, a.data, 2))
            duck_t = []
            for _ in range(a.runs):
                t = time.time(); expected = con.sql(sql).fetchall(); duck_t.append(time.time() - t)
            pol_t = []
            for _ in range(a.runs):
                t = time.time(); polars_query(q, src).collect(engine="streaming"); pol_t.append(time.time() - t)
            rows = list(csv.reader(io.StringIO(out)))[1:]
            ok = len(rows) == len(expected)
            if ok and q not in ("q1",):
                ok = all(all(close(x, y) for x, y in zip(r, e)) for r, e in zip(rows, [[str(v) for v in e] for e in expected]))
            if q == "q1":
                rows.sort()
                ok = ok and all(all(close(x, y) for x, y in zip(r, [str(v) for v in e])) for r, e in zip(rows, expected))
            duck, pol = statistics.median(duck_t), statistics.median(pol_t)
            print(f"{q:6} {fmt:8} {riv:8.3f} {duck:8.3f} {pol:8.3f} {riv / min(duck, pol):16.2f} {riv1 / riv:6.2f}  {'answer agrees' if ok else 'ANSWER DIFFERS'}", flush=True)

if __name__ == "__main__":
    main()
