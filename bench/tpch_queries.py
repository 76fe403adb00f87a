"""The six TPC-H queries of pipelines/tpch/ as DuckDB SQL and polars lazy queries.

Shared by tpch.py (answer check, warm timing) and q_duckdb.py / q_polars.py (one query in a fresh
process, timed like the baselines in ../shared/bench/).
"""
from datetime import date
import polars as pl

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
