"""TPC-H Q1 with rivulet, DuckDB and polars in one run: seconds (median of N) and ratios.

Usage (see bench/README.md):
    python bench/tpch_q1.py --data /work/tpch-sf1 --rivulet PATH/TO/rivulet [--runs 3]
Needs duckdb and polars installed in the python running it.
"""
import argparse, csv, io, os, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(cmd, env=None):
    t = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.time() - t
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return elapsed, out


def engine_seconds(script, fmt, data, runs):
    times = []
    for _ in range(runs):
        _, out = timed([sys.executable, os.path.join(HERE, script), fmt, "q1", data])
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def rivulet_cmd(rivulet, fmt, data, p):
    glob = f"{data}/{fmt}/lineitem/*.{fmt}"
    return [rivulet, "run", os.path.join(HERE, "../pipelines/tpch/q1.toml"), "-q", "-p", str(p),
            "--set", f"source.lineitem.format={fmt}", "--set", f"source.lineitem.path={glob}"]


def check_answer(csv_text, fmt, data):
    import duckdb
    con = duckdb.connect()
    src = f"read_csv('{data}/csv/lineitem/*.csv')" if fmt == "csv" else f"read_parquet('{data}/parquet/lineitem/*.parquet')"
    expected = con.sql(f"""select l_returnflag, l_linestatus, sum(l_quantity), sum(l_extendedprice),
        sum(l_extendedprice*(1-l_discount)), sum(l_extendedprice*(1-l_discount)*(1+l_tax)),
        avg(l_quantity), avg(l_extendedprice), avg(l_discount), count(*)
        from {src} where l_shipdate <= date '1998-09-02' group by all order by all""").fetchall()
    rows = sorted(csv.reader(io.StringIO(csv_text)))[:-1]  # header sorts last (lower case)
    assert len(rows) == len(expected), (rows, expected)
    for got, want in zip(rows, expected):
        for g, w in zip(got, want):
            if isinstance(w, str):
                assert g == w, (got, want)
            else:
                assert abs(float(g) - float(w)) <= 1e-9 * max(1.0, abs(float(w))), (got, want)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/tpch-sf1")
    ap.add_argument("--rivulet", required=True)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    print(f"TPC-H Q1, data {a.data}, median of {a.runs} runs, 2 threads for DuckDB and polars")
    print(f"{'format':8} {'rivulet p=1':>12} {'rivulet p=2':>12} {'duckdb':>8} {'polars':>8}  {'rivulet(p=2)/fastest':>20}  {'p1/p2':>6}")
    for fmt in ["csv", "parquet"]:
        _, out = timed(rivulet_cmd(a.rivulet, fmt, a.data, 2))
        check_answer(out.stdout, fmt, a.data)
        riv = {p: statistics.median(timed(rivulet_cmd(a.rivulet, fmt, a.data, p))[0] for _ in range(a.runs)) for p in (1, 2)}
        duck = engine_seconds("q_duckdb.py", fmt, a.data, a.runs)
        pol = engine_seconds("q_polars.py", fmt, a.data, a.runs)
        fastest = min(duck, pol)
        print(f"{fmt:8} {riv[1]:12.3f} {riv[2]:12.3f} {duck:8.3f} {pol:8.3f}  {riv[2] / fastest:20.2f}  {riv[1] / riv[2]:6.2f}")
    print("rivulet answers agree with DuckDB (relative tolerance 1e-9)")


if __name__ == "__main__":
    main()
