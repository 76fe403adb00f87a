#!/usr/bin/env bash
# A group-by with 10 M distinct keys over 50 M rows (Parquet, 4 files of 1 M-row row groups):
# count and sum per key, written to a Parquet file. rivulet (release build) at -p 1 and -p 2,
# DuckDB and polars (2 threads each) in the same run; seconds and peak RSS (from
# /usr/bin/time -v) for each, and a check that the three answers agree (rows, sum of counts,
# sum of sums).
#   bash bench/groupby_10m.sh [DATA_DIR]     (default /work/bigagg; generated when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-/work/bigagg}"
VENV="${BENCH_VENV:-$HOME/.cache/rivulet-bench-venv}"
[ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet duckdb polars tpchgen-cli; }
if [[ -z "${RIVULET_BIN:-}" ]]; then
    export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$HOME/.cache/rivulet-bench-target}"
    RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build --profile bench-release --quiet
    RIVULET_BIN="$CARGO_TARGET_DIR/bench-release/rivulet"
fi
mkdir -p "$DATA"
if [ ! -f "$DATA/part-3.parquet" ]; then
    "$VENV/bin/python" - "$DATA" <<'PY'
import sys, polars as pl
n, out = 50_000_000, sys.argv[1]
for part in range(4):
    m = n // 4
    df = pl.select(i=pl.int_range(part * m, (part + 1) * m, dtype=pl.Int64)).with_columns(
        # i -> k is a bijection on each run of 10 M (4435761 is coprime with 10^7): 10 M keys, 5 rows each.
        k=(pl.col("i") * 2654435761 % 10_000_000), v=(pl.col("i") % 1000).cast(pl.Float64))
    df.select("k", "v").write_parquet(f"{out}/part-{part}.parquet", row_group_size=1_000_000)
PY
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/p.toml" <<TOML
name = "groupby-10m"
[[source]]
name = "rows"
format = "parquet"
path = "$DATA/*.parquet"
[[op]]
name = "per_key"
input = "rows"
key_by = ["k"]
aggregate = { n = "count(*)", total = "sum(v)" }
[[sink]]
input = "per_key"
format = "parquet"
single_file = true
path = "$WORK/out.parquet"
TOML
cat > "$WORK/duck.py" <<PY
import duckdb
con = duckdb.connect(config={"threads": 2})
con.sql("copy (select k, count(*) n, sum(v) total from read_parquet('$DATA/*.parquet') group by k) to '$WORK/duck.parquet' (format parquet)")
PY
cat > "$WORK/pl.py" <<PY
import os
os.environ["POLARS_MAX_THREADS"] = "2"
import polars as pl
pl.scan_parquet("$DATA/*.parquet").group_by("k").agg(n=pl.len(), total=pl.col("v").sum()).sink_parquet("$WORK/pl.parquet")
PY
# Prints "seconds peak_MB" of a command.
measure() {
    /usr/bin/time -v "$@" 2>"$WORK/time.txt" >/dev/null
    local secs kb
    secs=$(grep "Elapsed (wall clock)" "$WORK/time.txt" | awk -F': ' '{ n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }')
    kb=$(grep "Maximum resident set size" "$WORK/time.txt" | awk -F': ' '{ print $2 }')
    echo "$secs $((kb / 1024))"
}
printf "%-12s %9s %10s\n" engine seconds "peak MB"
for p in 1 2; do
    read -r s m < <(measure "$RIVULET_BIN" run "$WORK/p.toml" -q -p "$p")
    printf "%-12s %9.2f %10s\n" "rivulet-p$p" "$s" "$m"
done
read -r s m < <(measure "$VENV/bin/python" "$WORK/duck.py"); printf "%-12s %9.2f %10s\n" duckdb "$s" "$m"
read -r s m < <(measure "$VENV/bin/python" "$WORK/pl.py"); printf "%-12s %9.2f %10s\n" polars "$s" "$m"
"$VENV/bin/python" - "$WORK" <<'PY'
import sys, polars as pl
w = sys.argv[1]
def summary(f):
    return pl.read_parquet(f).select(pl.len().alias("rows"), pl.col("n").sum(), pl.col("total").sum()).row(0)
answers = {e: summary(f"{w}/{f}") for e, f in [("rivulet", "out.parquet"), ("duckdb", "duck.parquet"), ("polars", "pl.parquet")]}
print("answers agree:", answers["rivulet"], "(rows, sum of counts, sum of sums)" if len(set(answers.values())) == 1 else f"ANSWERS DIFFER: {answers}")
PY
