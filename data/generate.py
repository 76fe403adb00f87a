#!/usr/bin/env python3
"""Generate rivulet's bundled sample datasets.

Deterministic: every dataset uses its own fixed-seed random.Random, so running
this script twice produces byte-identical files (for a given polars version,
which is recorded in the parquet footer).

Usage (from any directory):
    python3 data/generate.py

Requires: Python 3.11+, polars (only for writing the parquet files).
"""

from __future__ import annotations

import json
import math
import random
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent
SEED = 20261101

# --------------------------------------------------------------------------
# access logs (CSV)
# --------------------------------------------------------------------------

ACCESS_DAYS = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]
ACCESS_ROWS_PER_DAY = 15_000

METHODS = ["GET", "POST", "PUT", "DELETE"]
METHOD_WEIGHTS = [80, 12, 5, 3]

# path -> (popularity weight, typical response size in bytes)
PATHS = {
    "/": (6, 5200),
    "/login": (5, 1800),
    "/logout": (1, 300),
    "/health": (10, 20),
    "/api/orders": (14, 3400),
    "/api/orders/search": (4, 7200),
    "/api/users": (8, 2100),
    "/api/products": (9, 4800),
    "/api/cart": (6, 1200),
    "/api/checkout": (3, 900),
    "/static/app.js": (9, 48000),
    "/static/style.css": (7, 12000),
}
PATH_NAMES = list(PATHS)
PATH_WEIGHTS = [PATHS[p][0] for p in PATH_NAMES]

STATUSES = [200, 201, 204, 301, 304, 400, 401, 404, 500, 502, 503]
# ~3% 5xx overall
STATUS_WEIGHTS = [780, 30, 20, 20, 60, 20, 20, 20, 18, 9, 10]


def _pick_status(rng: random.Random, method: str, path: str) -> int:
    if path == "/health":
        return 200 if rng.random() < 0.995 else 503
    status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
    # keep codes plausible for the method / path
    if status == 201 and method != "POST":
        status = 200
    if status == 204 and method not in ("PUT", "DELETE"):
        status = 200
    if status == 304 and (method != "GET" or not path.startswith("/static")):
        status = 200
    if status == 301 and path.startswith("/api"):
        status = 200
    if path == "/login" and method == "POST" and status == 200 and rng.random() < 0.15:
        status = 401
    return status


def _latency_ms(rng: random.Random, path: str, status: int) -> int:
    if path == "/health":
        mu, sigma = math.log(3), 0.5
    elif path.startswith("/static"):
        mu, sigma = math.log(8), 0.7
    elif path == "/api/orders/search":
        mu, sigma = math.log(180), 0.8
    else:
        mu, sigma = math.log(45), 0.9
    if status >= 500:
        mu += math.log(12)  # failing requests are much slower (timeouts)
    elif status in (301, 304):
        mu -= math.log(3)
    value = int(round(rng.lognormvariate(mu, sigma)))
    return max(1, min(3000, value))


def _bytes(rng: random.Random, path: str, status: int) -> int:
    if status in (204, 304):
        return 0
    if status == 301:
        return 178
    if status >= 400:
        return rng.randint(90, 420)
    typical = PATHS[path][1]
    return max(1, int(typical * rng.uniform(0.6, 1.4)))


def write_access(out_dir: Path) -> list[Path]:
    rng = random.Random(SEED + 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a fixed pool of clients with a skewed (zipf-ish) popularity
    clients = [f"10.0.{rng.randint(0, 15)}.{rng.randint(1, 254)}" for _ in range(300)]
    clients = list(dict.fromkeys(clients))
    client_weights = [1.0 / (i + 1) ** 0.9 for i in range(len(clients))]

    written = []
    for day in ACCESS_DAYS:
        path_out = out_dir / f"access-{day.isoformat()}.csv"
        # distinct seconds of the day -> strictly increasing timestamps
        seconds = sorted(rng.sample(range(86_400), ACCESS_ROWS_PER_DAY))
        midnight = datetime(day.year, day.month, day.day)
        lines = ["ts,method,path,status,latency_ms,bytes,client"]
        for sec in seconds:
            ts = midnight + timedelta(seconds=sec)
            method = rng.choices(METHODS, METHOD_WEIGHTS)[0]
            path = rng.choices(PATH_NAMES, PATH_WEIGHTS)[0]
            if path.startswith("/static") or path in ("/", "/health"):
                method = "GET"
            status = _pick_status(rng, method, path)
            latency = _latency_ms(rng, path, status)
            nbytes = _bytes(rng, path, status)
            client = rng.choices(clients, client_weights)[0]
            lines.append(
                f"{ts:%Y-%m-%d %H:%M:%S},{method},{path},{status},{latency},{nbytes},{client}"
            )
        path_out.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
        written.append(path_out)
    return written


# --------------------------------------------------------------------------
# orders (JSON lines)
# --------------------------------------------------------------------------

ORDER_FILES = 2
ORDERS_PER_FILE = 5_000
COUNTRIES = ["DE", "FR", "US", "GB", "NL", "ES", "IT", "PL"]
COUNTRY_WEIGHTS = [25, 15, 20, 12, 8, 8, 7, 5]
ORDER_STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled", "returned"]
ORDER_STATUS_WEIGHTS = [8, 12, 30, 40, 6, 4]


def write_orders(out_dir: Path) -> list[Path]:
    rng = random.Random(SEED + 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = date(2026, 10, 1)
    written = []
    order_id = 100_000
    for i in range(1, ORDER_FILES + 1):
        path_out = out_dir / f"orders-{i}.jsonl"
        lines = []
        for n in range(ORDERS_PER_FILE):
            order_id += 1
            quantity = rng.choices([1, 2, 3, 4, 5, 6, 8, 10], [40, 22, 14, 8, 6, 4, 3, 3])[0]
            unit = rng.lognormvariate(math.log(18), 0.8)
            amount = round(quantity * unit, 2)
            # ~5% missing amounts (never on the first line of a file, so schema
            # inference always sees a float there)
            if n > 0 and rng.random() < 0.05:
                amount = None
            # dates spread over Oct 2026 (orders-1) and Nov 2026 (orders-2), sorted-ish
            day_offset = (i - 1) * 31 + (n * 30) // ORDERS_PER_FILE
            record = {
                "order_id": order_id,
                "customer": f"c{rng.randint(1, 250):03d}",
                "country": rng.choices(COUNTRIES, COUNTRY_WEIGHTS)[0],
                "amount": amount,
                "quantity": quantity,
                "status": rng.choices(ORDER_STATUSES, ORDER_STATUS_WEIGHTS)[0],
                "ordered_at": (start + timedelta(days=day_offset)).isoformat(),
            }
            lines.append(json.dumps(record))
        path_out.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
        written.append(path_out)
    return written


# --------------------------------------------------------------------------
# sensors (parquet)
# --------------------------------------------------------------------------

SENSORS = [f"s{i:02d}" for i in range(1, 21)]
SITES = ["north", "south", "east", "west"]
SENSOR_SITE = {s: SITES[i // 5] for i, s in enumerate(SENSORS)}
SITE_BASE_TEMP = {"north": 14.0, "south": 24.0, "east": 19.0, "west": 17.5}
SENSOR_READINGS = 500  # per sensor per file -> 10,000 rows per file
SENSOR_INTERVAL = timedelta(minutes=5)


def write_sensors(out_dir: Path) -> list[Path]:
    rng = random.Random(SEED + 3)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 11, 1)
    offsets = {s: rng.uniform(-1.5, 1.5) for s in SENSORS}
    written = []
    for idx, name in enumerate(["a", "b"]):
        path_out = out_dir / f"sensors-{name}.parquet"
        cols: dict[str, list] = {k: [] for k in ("sensor", "site", "ts", "temperature", "humidity")}
        t0 = start + idx * SENSOR_READINGS * SENSOR_INTERVAL
        for r in range(SENSOR_READINGS):
            ts = t0 + r * SENSOR_INTERVAL
            hour = ts.hour + ts.minute / 60
            diurnal = 4.0 * math.sin((hour - 9) / 24 * 2 * math.pi)
            for s in SENSORS:
                site = SENSOR_SITE[s]
                # include a sub-second jitter so microsecond precision is exercised
                jitter = timedelta(microseconds=rng.randint(0, 999_999))
                temp = SITE_BASE_TEMP[site] + offsets[s] + diurnal + rng.gauss(0, 0.6)
                hum = 55 - 1.5 * diurnal + rng.gauss(0, 4)
                cols["sensor"].append(s)
                cols["site"].append(site)
                cols["ts"].append(ts + jitter)
                cols["temperature"].append(round(temp, 3))
                cols["humidity"].append(
                    None if rng.random() < 0.04 else round(min(100.0, max(0.0, hum)), 2)
                )
        df = pl.DataFrame(
            cols,
            schema={
                "sensor": pl.String,
                "site": pl.String,
                "ts": pl.Datetime("us"),
                "temperature": pl.Float64,
                "humidity": pl.Float64,
            },
        )
        df.write_parquet(path_out, compression="zstd", statistics=True, row_group_size=2000)
        written.append(path_out)
    return written


# --------------------------------------------------------------------------
# products (small dimension table, CSV)
# --------------------------------------------------------------------------

PRODUCT_CATALOG = {
    "books": ["Rust in Action", "Data Pipelines", "SQL Cookbook", "Stream Processing",
              "Systems Design", "The Parquet Book", "Query Engines", "Unix Tools"],
    "electronics": ["USB-C Cable", "Wireless Mouse", "Mechanical Keyboard", "27in Monitor",
                    "Webcam HD", "Noise Cancelling Headphones", "SSD 1TB", "Laptop Stand"],
    "garden": ["Watering Can", "Pruning Shears", "Seed Starter Kit", "Garden Hose 25m",
               "Compost Bin", "Plant Pot Set", "Bird Feeder", "Solar Lamp"],
    "kitchen": ["Chef Knife", "Cast Iron Pan", "Coffee Grinder", "French Press",
                "Cutting Board", "Spice Rack", "Kettle", "Measuring Cups"],
    "toys": ["Puzzle 1000pc", "Building Blocks", "Kite", "Board Game",
             "Plush Bear", "Toy Train", "Yo-yo", "Juggling Balls"],
}


def write_products(out_path: Path) -> Path:
    rng = random.Random(SEED + 4)
    lines = ["product_id,name,category,price"]
    pid = 1000
    for category, names in PRODUCT_CATALOG.items():
        for name in names:
            pid += 1
            price = max(2.99, round(rng.lognormvariate(math.log(25), 0.9), 2))
            lines.append(f"{pid},{name},{category},{price:.2f}")
    out_path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    return out_path


def main() -> None:
    files = []
    files += write_access(ROOT / "access")
    files += write_orders(ROOT / "orders")
    files += write_sensors(ROOT / "sensors")
    files.append(write_products(ROOT / "products.csv"))
    total = 0
    for f in files:
        size = f.stat().st_size
        total += size
        print(f"{size:>10,}  {f.relative_to(ROOT.parent)}")
    print(f"{total:>10,}  total")


if __name__ == "__main__":
    main()
