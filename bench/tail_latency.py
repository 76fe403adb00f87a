"""Append-to-output latency of a tail-mode pipeline (driven by bench/tail_latency.sh).

  python3 tail_latency.py write FILE RATE SECONDS
      appends nginx-style lines to FILE at RATE lines/s for SECONDS, in bursts about every
      millisecond (the lines due by now, in one os.write). Every line of a burst carries the
      wall-clock time of that write in microseconds, as its request path `/r/<t_us>`. Prints a
      JSON summary (lines, rate achieved, writer lag, how many lines carry each t_us) on stdout.

  python3 tail_latency.py measure ENGINE FILE RATE SECONDS RESULTS -- CMD [ARGS...] [| CMD ...]
      starts CMD (a literal "|" argument chains commands as a pipe, without a shell), appends
      one warm-up line to FILE and waits until it comes out, then runs the writer and reads the
      pipeline's stdout in big chunks. For each chunk it takes the time once, right after the
      read, and for every `/r/<t_us>` in it records latency = now - t_us. When every line
      written has come out (or DRAIN_TIMEOUT seconds after the writer ends) it sends SIGINT to
      the first command, reads what is left, waits for the commands to exit, and appends one
      JSON line of results to RESULTS.

  python3 tail_latency.py report RESULTS
      prints the table and the checks.

Python standard library only. Writer and reader use the same clock (time.time_ns).
"""
import collections
import fcntl
import json
import os
import re
import select
import signal
import subprocess
import sys
import time

TIME_RE = re.compile(rb"/r/(\d+)")
TARGET_P99_MS = 50.0


def write(path, rate, seconds):
    rate, seconds = int(rate), float(seconds)
    total = int(rate * seconds)
    # Realistic, varied fields; what changes per burst (time stamp, t_us) goes in the middle.
    statuses = [b"200"] * 90 + [b"404"] * 6 + [b"500"] * 3 + [b"301"]
    k = 997
    pre = [f"10.0.{i % 256}.{i % 200} - - [".encode() for i in range(k)]
    post = [b" HTTP/1.1\" " + statuses[i % len(statuses)] + b" " + str((i * 7919) % 5000).encode() + b"\n" for i in range(k)]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    counts = collections.Counter()
    written = 0
    max_lag_ns = 0
    start = time.monotonic_ns()
    last_write = start
    while written < total:
        now = time.monotonic_ns()
        due = min(total, (now - start) * rate // 1_000_000_000)
        n = due - written
        if n > 0:
            # lag: how late the oldest line of this burst is against its schedule
            max_lag_ns = max(max_lag_ns, now - (start + written * 1_000_000_000 // rate))
            t_ns = time.time_ns()
            mid = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t_ns / 1e9)).encode() + b'] "GET /r/' + str(t_ns // 1000).encode()
            data = b"".join([pre[j % k] + mid + post[j % k] for j in range(written, due)])
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            last_write = time.monotonic_ns()
            counts[t_ns // 1000] += n
            written = due
        time.sleep(0.001)
    os.close(fd)
    elapsed = (last_write - start) / 1e9
    json.dump({"lines": written, "seconds": elapsed, "rate": written / elapsed if elapsed > 0 else 0.0,
               "max_lag_ms": max_lag_ns / 1e6, "bursts": len(counts),
               "counts": {str(t): c for t, c in counts.items()}}, sys.stdout)


def measure(engine, path, rate, seconds, results, cmd):
    drain_timeout = float(os.environ.get("DRAIN_TIMEOUT", "10"))
    start_timeout = float(os.environ.get("START_TIMEOUT", "30"))
    cmds, cur = [], []
    for a in cmd:
        if a == "|":
            cmds.append(cur)
            cur = []
        else:
            cur.append(a)
    cmds.append(cur)
    err_path = os.path.join(os.path.dirname(os.path.abspath(path)), f"{engine}.stderr")
    err = open(err_path, "wb")
    procs = []
    stdin = subprocess.DEVNULL
    for c in cmds:
        p = subprocess.Popen(c, stdin=stdin, stdout=subprocess.PIPE, stderr=err)
        if procs:
            procs[-1].stdout.close()  # only the next command holds the pipe
        procs.append(p)
        stdin = p.stdout
    fd = procs[-1].stdout.fileno()
    try:  # a 1 MiB pipe, so a batch of rows goes across in a few reads rather than many 64 KiB ones
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (AttributeError, OSError):
        pass

    latencies = collections.Counter()  # latency in us -> rows
    got = collections.Counter()  # t_us -> rows
    rows = 0
    busy_ns = 0
    rest = b""
    eof = False

    def consume(chunk, now_us):
        nonlocal rest, rows
        buf = rest + chunk
        cut = buf.rfind(b"\n") + 1
        rest = buf[cut:]
        stamps = collections.Counter(TIME_RE.findall(buf, 0, cut))
        for t, c in stamps.items():
            t = int(t)
            got[t] += c
            latencies[now_us - t] += c
            rows += c

    def read_some(timeout):
        nonlocal eof, busy_ns
        if eof:
            return b""
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            return None
        chunk = os.read(fd, 1 << 20)
        t0 = time.time_ns()
        if not chunk:
            eof = True
            return b""
        consume(chunk, t0 // 1000)
        busy_ns += time.time_ns() - t0
        return chunk

    def stop():
        first = procs[0]
        if first.poll() is None:
            first.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while not eof and time.monotonic() < deadline:
            read_some(0.2)
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(f"killed (no exit 30 s after SIGINT)")
        return codes

    def fail(msg):
        codes = stop()
        err.close()
        print(f"{engine}: {msg}; exit codes {codes}; stderr:", file=sys.stderr)
        sys.stderr.write(open(err_path, errors="replace").read()[-4000:])
        sys.exit(1)

    # Warm-up: one line, not counted, so the engine's start-up is not in the figures.
    warm = b'10.0.0.1 - - [' + time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()).encode() + b'] "GET /warmup HTTP/1.1" 200 0\n'
    wfd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(wfd, warm)
    os.close(wfd)
    seen = b""
    deadline = time.monotonic() + start_timeout
    while b"/warmup" not in seen:
        if time.monotonic() > deadline:
            fail(f"warm-up line not out after {start_timeout} s")
        chunk = read_some(0.1)
        if chunk == b"" or any(p.poll() is not None for p in procs):
            fail("exited before the warm-up line came out")
        if chunk:
            seen = (seen + chunk)[-4096:]

    writer = subprocess.Popen([sys.executable, os.path.abspath(__file__), "write", path, str(rate), str(seconds)],
                              stdout=subprocess.PIPE)
    out = []
    wfd = writer.stdout.fileno()
    while True:  # read the engine while the writer runs; collect the writer's summary too
        r, _, _ = select.select([fd, wfd], [], [], 0.5)
        if fd in r:
            read_some(0)
            if eof:
                break
        if wfd in r:
            b = os.read(wfd, 1 << 20)
            if not b:
                break
            out.append(b)
    writer.wait()
    w = json.loads(b"".join(out) + writer.stdout.read())
    written = w["lines"]
    deadline = time.monotonic() + drain_timeout
    while rows < written and not eof and time.monotonic() < deadline:
        read_some(0.1)
    rows_before_stop = rows
    codes = stop()
    err.close()

    expected = collections.Counter({int(t): c for t, c in w["counts"].items()})
    lat = sorted(latencies.items())

    def pct(q):
        need = q * rows
        acc = 0
        for v, c in lat:
            acc += c
            if acc >= need:
                return v / 1000
        return float("nan")

    res = {"engine": engine, "written": written, "rows": rows, "rows_before_stop": rows_before_stop,
           "same_stamps": got == expected, "rate": w["rate"], "writer_max_lag_ms": w["max_lag_ms"],
           "reader_busy": busy_ns / 1e9 / max(w["seconds"], 1e-9),
           "exit_codes": codes, "stderr": err_path}
    if rows:
        res.update({"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": lat[-1][0] / 1000})
    with open(results, "a") as f:
        f.write(json.dumps(res) + "\n")


def report(results):
    rs = [json.loads(line) for line in open(results)]
    print(f"{'engine':<10} {'rows':>10} {'lines/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for r in rs:
        p = [f"{r[k]:8.1f}" if k in r else f"{'-':>8}" for k in ("p50", "p90", "p99", "max")]
        print(f"{r['engine']:<10} {r['rows']:>10} {r['rate']:>10.0f} {' '.join(p)}")
    print()
    for r in rs:
        e = r["engine"]
        if r["rows"] != r["written"]:
            print(f"!!!!! {e}: ROW COUNT MISMATCH: wrote {r['written']} lines, got {r['rows']} rows !!!!!")
        elif not r["same_stamps"]:
            print(f"!!!!! {e}: ROWS DIFFER: as many rows as lines, but not the same lines (lost and duplicated) !!!!!")
        else:
            print(f"{e}: all {r['written']} lines came out once")
        if r["rows_before_stop"] != r["rows"]:
            print(f"!!!!! {e}: {r['rows'] - r['rows_before_stop']} rows came out only after SIGINT !!!!!")
        if r["writer_max_lag_ms"] > 10:
            print(f"! {e}: the writer fell {r['writer_max_lag_ms']:.1f} ms behind its schedule at worst (machine busy?)")
        if r["reader_busy"] > 0.5:
            print(f"! {e}: the reader was busy {100 * r['reader_busy']:.0f}% of the time: it may be the bottleneck")
        ok = [c for c in r["exit_codes"] if c not in (0, 130, -2, -13)]
        if ok:
            print(f"! {e}: exit codes {r['exit_codes']} (stderr in {r['stderr']})")
        if "p99" in r:
            verdict = "meets" if r["p99"] <= TARGET_P99_MS else "MISSES"
            print(f"{e}: p99 {r['p99']:.1f} ms {verdict} the target p99 <= {TARGET_P99_MS:.0f} ms "
                  f"(writer lag at worst {r['writer_max_lag_ms']:.1f} ms, reader busy {100 * r['reader_busy']:.0f}%)")


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "write":
        write(a[1], a[2], a[3])
    elif a[0] == "measure":
        sep = a.index("--")
        measure(*a[1:6], a[sep + 1:])
    elif a[0] == "report":
        report(a[1])
    else:
        sys.exit(__doc__)
