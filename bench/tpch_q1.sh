#!/usr/bin/env bash
# TPC-H Q1 at SF1: rivulet (release build, x86-64-v3) vs DuckDB vs polars, in one run.
#   bash bench/tpch_q1.sh [DATA_DIR]     (default /work/tpch-sf1; generated when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-/work/tpch-sf1}"
VENV="${BENCH_VENV:-$HOME/.cache/rivulet-bench-venv}"
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$HOME/.cache/rivulet-bench-target}"
[ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet duckdb polars tpchgen-cli; }
if [ ! -d "$DATA/csv/lineitem" ]; then
    "$VENV/bin/tpchgen-cli" csv -s 1 --tables=lineitem --parts=4 --output-dir="$DATA/csv"
    "$VENV/bin/tpchgen-cli" parquet -s 1 --tables=lineitem --parts=4 --output-dir="$DATA/parquet"
fi
RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build --profile bench-release --quiet
"$VENV/bin/python" bench/tpch_q1.py --data "$DATA" --rivulet "$CARGO_TARGET_DIR/bench-release/rivulet" --runs "${RUNS:-3}"
