#!/usr/bin/env bash
# Runs the whole test suite, installing what the tests use first: DuckDB (Python, the oracle
# for aggregates and TPC-H), tpchgen-cli (TPC-H data), Graphviz (renders `explain --format dot`),
# nginx (tests/nginx.rs tails a real nginx's access log) and Mermaid's parser (checks
# `explain --format mermaid`; needs node and npm).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rivulet-target}"
python3 -c 'import duckdb' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check duckdb
# TPC-H data for tests/tpch.rs is generated at test time (scale factor 0.01).
command -v tpchgen-cli >/dev/null || [ -x "$(dirname "$(python3 -c 'import sys; print(sys.executable)')")/tpchgen-cli" ] \
    || python3 -m pip install --quiet --disable-pip-version-check tpchgen-cli
if ! command -v dot >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
fi
if [ ! -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
fi
# The real Mermaid parser (mermaid + jsdom, no browser) checks `explain --format mermaid`.
[ -d scripts/mermaid-check/node_modules/mermaid ] || npm ci --prefix scripts/mermaid-check --no-audit --no-fund --loglevel=error
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
cargo nextest run --no-fail-fast "$@"
