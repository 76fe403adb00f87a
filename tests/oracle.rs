//! Aggregates over the bundled data agree with DuckDB, at parallelism 1 and 4.
use crate::common::{csv_diff, duckdb_csv, root, run, stderr, stdout};

fn rivulet_csv(pipeline: &str, parallelism: &str) -> String {
    let path = root().join(pipeline);
    let out = run(&["run", path.to_str().unwrap(), "-q", "-p", parallelism, "--set", "sink.out.style=csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

fn check(pipeline: &str, sql: &str) {
    let expected = duckdb_csv(sql);
    for p in ["1", "4"] {
        let actual = rivulet_csv(pipeline, p);
        assert_eq!(csv_diff(&actual, &expected), None, "{pipeline} at -p {p}");
    }
}

#[test]
fn errors_by_path_matches_duckdb() {
    check(
        "pipelines/errors_by_path.toml",
        "select path, count(*) as hits, avg(latency_ms) as avg_ms, max(latency_ms) as worst_ms
         from read_csv('data/access/*.csv') where status >= 500 group by path",
    );
}

#[test]
fn orders_by_country_matches_duckdb() {
    check(
        "pipelines/orders_by_country.toml",
        "select country, status, count(*) as orders, count(amount) as priced, sum(amount) as revenue,
                avg(amount) as avg_amount, min(amount) as smallest, max(amount) as largest,
                count(distinct customer) as customers, sum(quantity * 2) as double_qty
         from read_json('data/orders/*.jsonl') group by country, status",
    );
}

#[test]
fn sensor_stats_matches_duckdb() {
    check(
        "pipelines/sensor_daily.toml",
        "select site, cast(ts as date) as day, count(*) as readings, avg(temperature) as avg_temp,
                min(temperature) as min_temp, max(temperature) as max_temp, avg(humidity) as avg_humidity
         from read_parquet('data/sensors/*.parquet') group by site, day",
    );
}

#[test]
fn revenue_by_region_matches_duckdb_in_order() {
    let expected = duckdb_csv(
        "select region, count(*) as orders, sum(amount) as revenue, count(distinct country) as countries
         from read_json('data/orders/*.jsonl') o left join read_csv('data/countries.csv') c on o.country = c.code
         where status = 'shipped' and amount is not null group by region order by revenue desc",
    );
    for p in ["1", "4"] {
        let actual = rivulet_csv("pipelines/revenue_by_region.toml", p);
        assert_eq!(crate::common::csv_diff_ordered(&actual, &expected), None, "-p {p}");
    }
}
