#!/usr/bin/env bash
# TPC-H Q1, Q3, Q5, Q6, Q10, Q18 at SF1: rivulet (release build, x86-64-v3) vs DuckDB vs polars.
#   bash bench/tpch.sh [DATA_DIR] [extra tpch.py options, e.g. --warm --queries q1,q6]
# DATA_DIR defaults to /work/tpch-sf1; the tables are generated there when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-/work/tpch-sf1}"; shift || true
VENV="${BENCH_VENV:-$HOME/.cache/rivulet-bench-venv}"
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$HOME/.cache/rivulet-bench-target}"
[ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet duckdb polars tpchgen-cli; }
for fmt in csv parquet; do
    for t in lineitem orders customer supplier nation region; do
        [ -d "$DATA/$fmt/$t" ] || "$VENV/bin/tpchgen-cli" "$fmt" -s 1 --tables="$t" --parts=4 --output-dir="$DATA/$fmt"
    done
done
RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build --profile bench-release --quiet
"$VENV/bin/python" bench/tpch.py --data "$DATA" --rivulet "$CARGO_TARGET_DIR/bench-release/rivulet" --runs "${RUNS:-3}" "$@"
