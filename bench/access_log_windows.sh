#!/usr/bin/env bash
# Tail-mode throughput, measured on a finished file: an nginx-style access log of N lines
# (default 2,000,000, 200 per second of event time) -> regex parse -> STRPTIME -> watermark ->
# 1-minute tumbling count per status, with rivulet (release build) at -p 1 and -p 2, against
#   awk '{ split($4, t, ":"); c[$9 " " t[2] ":" t[3]]++ }'
# which counts the same thing from whitespace-split fields (no regex, no validation). Checks
# that both give the same counts.
#   bash bench/access_log_windows.sh [LINES]     (RUNS=N: median of N runs, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
LINES="${1:-2000000}"
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$HOME/.cache/rivulet-bench-target}"
RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build --profile bench-release --quiet
BIN="$CARGO_TARGET_DIR/bench-release/rivulet"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python3 - "$WORK/access.log" "$LINES" <<'PY'
import random, sys
random.seed(1)
statuses = [200] * 90 + [404] * 6 + [500] * 3 + [301]
paths = ["/", "/api/users", "/api/orders", "/static/app.js", "/login"]
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        s = i // 200
        f.write(f'10.0.{i % 256}.{i % 200} - - [24/Nov/2026:{10 + s // 3600:02d}:{(s // 60) % 60:02d}:{s % 60:02d} +0000] '
                f'"GET {random.choice(paths)} HTTP/1.1" {random.choice(statuses)} {random.randint(0, 5000)}\n')
PY
cat > "$WORK/p.toml" <<'TOML'
name = "access-per-minute"
[[source]]
name = "access"
format = "regex"
path = "access.log"
regex = '^(?P<ip>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+)[^"]*" (?P<status>\d{3}) (?P<bytes>\d+|-)$'
schema = { status = "int" }
split_bytes = 16000000
[[op]]
name = "timed"
input = "access"
with = { ts = "STRPTIME(time, '%d/%b/%Y:%H:%M:%S %z')" }
[[op]]
name = "stamped"
input = "timed"
watermark = { time = "ts", max_delay = "5s" }
[[op]]
name = "per_minute"
input = "stamped"
key_by = ["status"]
window = { size = "1m", time = "ts" }
aggregate = { requests = "count(*)" }
[[sink]]
input = "per_minute"
format = "csv"
single_file = true
path = "out.csv"
TOML
# Median wall seconds of RUNS runs (default 3) of a command: this shared machine varies by 10%.
secs() {
    local t=()
    for _ in $(seq "${RUNS:-3}"); do
        local s; s=$(date +%s.%N); "$@" >/dev/null; t+=("$(echo "$(date +%s.%N) - $s" | bc)")
    done
    printf "%s\n" "${t[@]}" | sort -n | sed -n "$(( (${#t[@]} + 1) / 2 ))p"
}
p1=$(secs "$BIN" run "$WORK/p.toml" -q -p 1)
p2=$(secs "$BIN" run "$WORK/p.toml" -q -p 2)
awk_s=$(secs awk '{ split($4, t, ":"); c[$9 " " t[2] ":" t[3]]++ } END { for (k in c) print k, c[k] > "'"$WORK"'/awk.out" }' "$WORK/access.log")
python3 - "$WORK" <<'PY'
import collections, csv, sys
w = sys.argv[1]
r = collections.Counter()
for row in csv.DictReader(open(f"{w}/out.csv")):
    r[(row["status"], row["window_start"][11:16])] += int(row["requests"])
a = collections.Counter()
for line in open(f"{w}/awk.out"):
    s, hm, n = line.split()
    a[(s, hm)] += int(n)
print("counts agree with awk" if r == a else "COUNTS DIFFER from awk")
PY
printf "%-12s %10s %14s\n" engine seconds "lines/s"
for row in "rivulet-p1 $p1" "rivulet-p2 $p2" "awk $awk_s"; do
    set -- $row
    printf "%-12s %10.3f %14.0f\n" "$1" "$2" "$(echo "$LINES / $2" | bc -l)"
done
