#!/usr/bin/env bash
# Joins on string keys over TPC-H SF1 Parquet: rivulet (release build, -p 1 and -p 2) vs DuckDB
# vs polars (2 threads each), medians of RUNS (default 5) in seconds, and a check that the
# answers agree.
#   small: lineitem (6 M rows) joined with a 7-row table on l_shipmode (broadcast), counted
#          and summed per code;
#   large: orders (1.5 M) with a customer name built from o_custkey ('Customer#000000042'),
#          joined with customer (150 K) on c_name (hash-partitioned), per market segment.
#   bash bench/string_join.sh [DATA_DIR]     (default /work/tpch-sf1; generated when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-/work/tpch-sf1}"
VENV="${BENCH_VENV:-$HOME/.cache/rivulet-bench-venv}"
[ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet duckdb polars tpchgen-cli; }
for t in lineitem orders customer; do
    [ -d "$DATA/parquet/$t" ] || "$VENV/bin/tpchgen-cli" parquet -s 1 --tables="$t" --parts=4 --output-dir="$DATA/parquet"
done
if [[ -z "${RIVULET_BIN:-}" ]]; then
    export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$HOME/.cache/rivulet-bench-target}"
    RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build --profile bench-release --quiet
    RIVULET_BIN="$CARGO_TARGET_DIR/bench-release/rivulet"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
P="$DATA/parquet"
printf 'mode,code\nAIR,1\nFOB,2\nMAIL,3\nRAIL,4\nREG AIR,5\nSHIP,6\nTRUCK,7\n' > "$WORK/modes.csv"
cat > "$WORK/small.toml" <<TOML
name = "string-join-small"
[[source]]
name = "lineitem"
format = "parquet"
path = "$P/lineitem/*.parquet"
[[source]]
name = "modes"
format = "csv"
path = "$WORK/modes.csv"
[[op]]
name = "j"
input = ["lineitem", "modes"]
join = "inner"
left_on = ["l_shipmode"]
right_on = ["mode"]
[[op]]
name = "agg"
input = "j"
key_by = ["code"]
aggregate = { n = "count(*)", s = "sum(l_quantity)" }
[[sink]]
input = "agg"
format = "stdout"
style = "csv"
TOML
cat > "$WORK/large.toml" <<TOML
name = "string-join-large"
[[source]]
name = "orders"
format = "parquet"
path = "$P/orders/*.parquet"
[[source]]
name = "customer"
format = "parquet"
path = "$P/customer/*.parquet"
[[op]]
name = "named"
input = "orders"
select = ["o_totalprice", "concat('Customer#', lpad(cast(o_custkey as string), 9, '0')) AS c_name"]
[[op]]
name = "j"
input = ["named", "customer"]
join = "inner"
left_on = ["c_name"]
right_on = ["c_name"]
[[op]]
name = "agg"
input = "j"
key_by = ["c_mktsegment"]
aggregate = { n = "count(*)", s = "sum(o_totalprice)" }
[[sink]]
input = "agg"
format = "stdout"
style = "csv"
TOML
"$VENV/bin/python" - "$RIVULET_BIN" "$WORK" "$P" "${RUNS:-5}" <<'PY'
import io, os, statistics, subprocess, sys, time
os.environ["POLARS_MAX_THREADS"] = "2"
import duckdb, polars as pl
rivulet, work, P, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
con = duckdb.connect(config={"threads": 2})
sql = {
    "small": f"select code, count(*) n, sum(l_quantity) s from read_parquet('{P}/lineitem/*.parquet') join read_csv('{work}/modes.csv') on l_shipmode = mode group by code",
    "large": f"""select c_mktsegment, count(*) n, sum(o_totalprice) s from (select o_totalprice,
                 concat('Customer#', lpad(cast(o_custkey as varchar), 9, '0')) c_name from read_parquet('{P}/orders/*.parquet'))
                 join read_parquet('{P}/customer/*.parquet') using (c_name) group by c_mktsegment""",
}
lazy = {
    "small": lambda: pl.scan_parquet(f"{P}/lineitem/*.parquet").join(pl.scan_csv(f"{work}/modes.csv"), left_on="l_shipmode", right_on="mode")
    .group_by("code").agg(n=pl.len(), s=pl.col("l_quantity").sum()),
    "large": lambda: pl.scan_parquet(f"{P}/orders/*.parquet")
    .select("o_totalprice", c_name=pl.lit("Customer#") + pl.col("o_custkey").cast(pl.String).str.zfill(9))
    .join(pl.scan_parquet(f"{P}/customer/*.parquet"), on="c_name").group_by("c_mktsegment").agg(n=pl.len(), s=pl.col("o_totalprice").sum()),
}
def timed(f):
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter(); out = f(); times.append(time.perf_counter() - t)
    return statistics.median(times), out
def canon(rows):
    return sorted((str(k), int(n), round(float(s), 2)) for k, n, s in rows)
def rv(q, p):
    out = subprocess.run([rivulet, "run", f"{work}/{q}.toml", "-q", "-p", p], capture_output=True, text=True, check=True).stdout
    return canon(pl.read_csv(io.StringIO(out)).rows())
print(f"{'query':6} {'rivulet -p 2':>12} {'rivulet -p 1':>12} {'DuckDB':>8} {'polars':>8} {'rivulet/fastest':>16}  answers")
for q in ["small", "large"]:
    r2, a = timed(lambda: rv(q, "2"))
    r1, _ = timed(lambda: rv(q, "1"))
    d, b = timed(lambda: canon(con.sql(sql[q]).fetchall()))
    p, c = timed(lambda: canon(lazy[q]().collect().rows()))
    agree = "agree" if a == b == c else f"DIFFER: {a} {b} {c}"
    print(f"{q:6} {r2:12.3f} {r1:12.3f} {d:8.3f} {p:8.3f} {r2 / min(d, p):16.2f}  {agree}")
PY
