"""DuckDB's side of the ingest comparison (called by veil-bench ingest; see BENCHMARKS.md).

    duckdb_ingest.py MODE CSV OUT THREADS

MODE `parquet` reads CSV with read_csv (its own dialect and type detection) and writes it to
the Parquet file OUT, as Veil stores a registered file; MODE `table` loads it into a table of
a new database file OUT (DuckDB's own storage). Each call is one fresh process, so its peak
resident memory is the ingest's own plus the interpreter's. Prints
{"version", "rows", "seconds", "peak_rss_mib", "baseline_rss_mib"} as JSON.
"""

import json
import resource
import sys
import time

import duckdb


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    mode, csv, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    baseline = peak_rss_mib()
    con = duckdb.connect(out if mode == "table" else ":memory:")
    con.execute(f"SET threads = {threads}")
    source = "read_csv('" + csv.replace("'", "''") + "')"
    started = time.perf_counter()
    if mode == "parquet":
        target = out.replace("'", "''")
        con.execute(f"COPY (SELECT * FROM {source}) TO '{target}' (FORMAT parquet)")
        seconds = time.perf_counter() - started
        rows = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()[0]
    else:
        con.execute(f"CREATE TABLE people AS SELECT * FROM {source}")
        con.execute("CHECKPOINT")
        seconds = time.perf_counter() - started
        rows = con.execute("SELECT count(*) FROM people").fetchone()[0]
    con.close()
    json.dump(
        {
            "version": duckdb.__version__,
            "rows": rows,
            "seconds": seconds,
            "peak_rss_mib": peak_rss_mib(),
            "baseline_rss_mib": baseline,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
