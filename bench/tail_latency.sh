#!/usr/bin/env bash
# Tail-mode append-to-output latency: a writer appends nginx-style access-log lines to a file at
# RATE lines/s (default 100,000) for SECONDS (default 10), about every millisecond, each line
# carrying its write time in microseconds as its path (/r/<t_us>). The engine follows the file and
# prints one line per row; a reader takes the time as each chunk of output arrives and records
# now - t_us per row. Engines:
#   rivulet  `rivulet tail p.toml -q -p P`: a regex source (ip, time, method, path, status, bytes)
#            -> a stdout sink with style = "csv", printed as each batch comes out
#   awk      `tail -F -n +1 access.log | awk '{ print $7; fflush() }'` (the path field)
# Prints rows, write rate achieved, p50 / p90 / p99 / max latency in ms, checks that every line
# written came out exactly once, and compares p99 with the target (<= 50 ms at 100 K lines/s).
#   bash bench/tail_latency.sh [SECONDS]
# Environment: DURATION (seconds, when no argument is given), RATE (lines/s, default 100000),
# P (rivulet's parallelism, default 1), LINGER_MS / BATCH_ROWS (the source's linger_ms / the
# pipeline's batch_rows; rivulet's defaults when unset), ENGINES (default "rivulet awk"),
# DRAIN_TIMEOUT (seconds to wait for the last rows after the writer ends, default 10),
# RIVULET_BIN (default: the bench-release build, built as bench/access_log_windows.sh does when
# missing).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-${DURATION:-10}}"
RATE="${RATE:-100000}"
P="${P:-1}"
ENGINES="${ENGINES:-rivulet awk}"
HERE="$PWD/bench"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [[ " $ENGINES " == *" rivulet "* ]]; then
    if [[ -z "${RIVULET_BIN:-}" ]]; then
        export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$HOME/.cache/rivulet-bench-target}"
        RIVULET_BIN="$CARGO_TARGET_DIR/bench-release/rivulet"
        if [[ ! -x "$RIVULET_BIN" ]]; then
            RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build --profile bench-release --quiet
        fi
    fi
    mkdir "$WORK/rivulet"
    : > "$WORK/rivulet/access.log"
    # The file starts empty, so reading it from the beginning reads exactly what is appended.
    cat > "$WORK/rivulet/p.toml" <<TOML
name = "tail-latency"
${BATCH_ROWS:+batch_rows = $BATCH_ROWS}
[[source]]
name = "access"
format = "regex"
path = "access.log"
regex = '^(?P<ip>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+)[^"]*" (?P<status>\d{3}) (?P<bytes>\d+|-)\$'
schema = { status = "int" }
start_at = "beginning"
${LINGER_MS:+linger_ms = $LINGER_MS}
[[sink]]
input = "access"
format = "stdout"
style = "csv"
TOML
    "$RIVULET_BIN" validate "$WORK/rivulet/p.toml" >/dev/null
    python3 "$HERE/tail_latency.py" measure rivulet "$WORK/rivulet/access.log" "$RATE" "$SECS" "$WORK/results.jsonl" \
        -- "$RIVULET_BIN" tail "$WORK/rivulet/p.toml" -q -p "$P"
fi

if [[ " $ENGINES " == *" awk "* ]]; then
    mkdir "$WORK/awk"
    : > "$WORK/awk/access.log"
    # awk must flush after every line: without fflush() it block-buffers its output into a pipe
    # (4 KB and more) and the latency measured is that of the buffer. mawk (Debian's awk) also
    # block-buffers its input from a pipe: it waits for a full buffer before it splits lines, so
    # it needs -W interactive (line-buffered reads); gawk splits what it has read.
    AWK=(awk)
    if awk -W version 2>&1 | grep -q mawk; then AWK=(awk -W interactive); fi
    python3 "$HERE/tail_latency.py" measure awk "$WORK/awk/access.log" "$RATE" "$SECS" "$WORK/results.jsonl" \
        -- tail -F -n +1 "$WORK/awk/access.log" "|" "${AWK[@]}" '{ print $7; fflush() }'
fi

echo "rate target $RATE lines/s for $SECS s; rivulet at -p $P${LINGER_MS:+, linger_ms = $LINGER_MS}${BATCH_ROWS:+, batch_rows = $BATCH_ROWS}"
python3 "$HERE/tail_latency.py" report "$WORK/results.jsonl"
