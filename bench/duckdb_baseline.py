"""DuckDB's side of the TPC-H comparison (called by veil-bench; see BENCHMARKS.md).

Reads a JSON spec (schema, tables: name -> Parquet path, queries, runs, warmup), creates a view
per table over read_parquet, runs every query warmup + runs times and prints
{"version": ..., "queries": [[seconds per counted run], ...]} as JSON.
"""

import json
import sys
import time

import duckdb


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    con = duckdb.connect()
    con.execute(f"CREATE SCHEMA {spec['schema']}")
    for name, path in spec["tables"].items():
        escaped = path.replace("'", "''")
        con.execute(f"CREATE VIEW {spec['schema']}.{name} AS SELECT * FROM read_parquet('{escaped}')")
    times = []
    for sql in spec["queries"]:
        counted = []
        for run in range(spec["warmup"] + spec["runs"]):
            started = time.perf_counter()
            con.execute(sql).fetchall()
            seconds = time.perf_counter() - started
            if run >= spec["warmup"]:
                counted.append(seconds)
        times.append(counted)
    json.dump({"version": duckdb.__version__, "queries": times}, sys.stdout)


if __name__ == "__main__":
    main()
