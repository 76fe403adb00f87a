"""TPC-H Q1, Q3, Q5, Q6, Q10, Q18: rivulet vs DuckDB vs polars in one run, with answers checked.

    python bench/tpch.py --data /work/tpch-sf1 --rivulet PATH/TO/rivulet [--runs 3]
                         [--formats csv,parquet] [--queries q1,q6] [--warm]
Needs duckdb and polars in the python running it (2 threads each). rivulet is timed as a whole
process at -p 2 (and -p 1 for the scaling column). DuckDB and polars run each query in a fresh
process (q_duckdb.py, q_polars.py, as ../shared/bench/ does) and time the query alone, without
the interpreter's start-up and imports. --warm adds columns for the same queries repeated inside
this one process, where the engines reuse memory their earlier queries already touched.
"""
import argparse, csv, io, os, re, statistics, subprocess, sys, time
import duckdb
os.environ.setdefault("POLARS_MAX_THREADS", "2")
import polars as pl
from tpch_queries import SQL, polars_query

HERE = os.path.dirname(os.path.abspath(__file__))
PIPES = os.path.join(HERE, "..", "pipelines", "tpch")
TABLES = ["lineitem", "orders", "customer", "supplier", "nation", "region"]

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

def fresh(script, fmt, q, data):
    """The seconds the engine's script reports for the query (one fresh process)."""
    return float(timed([sys.executable, os.path.join(HERE, script), fmt, q, data])[1].split()[-1])

def interleaved(a, q, fmt):
    """Medians of rivulet -p 2, rivulet -p 1, DuckDB and polars. The engines take turns, and
    the order turns one step each round, so that whatever a run leaves behind (page cache,
    memory in 4 KiB pieces that huge pages must be compacted from) falls on every engine alike:
    rivulet, which asks for huge pages, pays most for following another engine."""
    engines = {
        "riv": lambda: timed(rivulet_cmd(a.rivulet, q, fmt, a.data, 2))[0],
        "riv1": lambda: timed(rivulet_cmd(a.rivulet, q, fmt, a.data, 1))[0],
        "duck": lambda: fresh("q_duckdb.py", fmt, q, a.data),
        "pol": lambda: fresh("q_polars.py", fmt, q, a.data),
    }
    order = list(engines)
    runs = {k: [] for k in order}
    for r in range(a.runs):
        for k in order[r % len(order):] + order[:r % len(order)]:
            runs[k].append(engines[k]())
    return [statistics.median(runs[k]) for k in ("riv", "riv1", "duck", "pol")]

def warm(f, runs):
    times = []
    for _ in range(runs):
        t = time.time(); f(); times.append(time.time() - t)
    return statistics.median(times)

def close(a, b):
    try:
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    except ValueError:
        return a == b

def agrees(q, out, expected):
    rows = list(csv.reader(io.StringIO(out)))[1:]
    if q == "q1":  # no ORDER BY in the pipeline's output to rely on across engines' tie order
        rows.sort()
    return len(rows) == len(expected) and all(all(close(x, str(y)) for x, y in zip(r, e)) for r, e in zip(rows, expected))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/tpch-sf1"); ap.add_argument("--rivulet", required=True)
    ap.add_argument("--runs", type=int, default=1); ap.add_argument("--formats", default="csv,parquet")
    ap.add_argument("--queries", default=",".join(SQL)); ap.add_argument("--warm", action="store_true")
    a = ap.parse_args()
    con = duckdb.connect(config={"threads": 2})
    print(f"TPC-H, data {a.data}, median of {a.runs} run(s); DuckDB and polars on 2 threads, one fresh process per query; rivulet -p 2 (and -p 1); engines take turns, the order rotating each round")
    head = f"{'query':6} {'format':8} {'rivulet':>8} {'-p 1':>8} {'duckdb':>8} {'polars':>8} {'rivulet/fastest':>16} {'p1/p2':>6}"
    print(head + (f" {'duckdb warm':>12} {'polars warm':>12} {'vs warm':>8}" if a.warm else ""))
    for fmt in a.formats.split(","):
        read = (lambda t: f"read_csv('{a.data}/csv/{t}/*.csv')") if fmt == "csv" else (lambda t: f"read_parquet('{a.data}/parquet/{t}/*.parquet')")
        src = (lambda t: pl.scan_csv(f"{a.data}/csv/{t}/*.csv", try_parse_dates=True)) if fmt == "csv" else (lambda t: pl.scan_parquet(f"{a.data}/parquet/{t}/*.parquet"))
        for q in a.queries.split(","):
            sql = SQL[q].format(**{t: read(t) for t in TABLES})
            riv, riv1, duck, pol = interleaved(a, q, fmt)
            ok = agrees(q, timed(rivulet_cmd(a.rivulet, q, fmt, a.data, 2))[1], con.sql(sql).fetchall())
            line = f"{q:6} {fmt:8} {riv:8.3f} {riv1:8.3f} {duck:8.3f} {pol:8.3f} {riv / min(duck, pol):16.2f} {riv1 / riv:6.2f}"
            if a.warm:
                wd = warm(lambda: con.sql(sql).fetchall(), a.runs)
                wp = warm(lambda: polars_query(q, src).collect(engine="streaming"), a.runs)
                line += f" {wd:12.3f} {wp:12.3f} {riv / min(wd, wp):8.2f}"
            print(f"{line}  {'answer agrees' if ok else 'ANSWER DIFFERS'}", flush=True)

if __name__ == "__main__":
    main()
