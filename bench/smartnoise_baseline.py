"""SmartNoise SQL side of the dp comparison (`bench/run dp`).

Reads a JSON spec (first argument), answers every query `runs` times through SmartNoise SQL's
PrivateReader over a pandas DataFrame (its in-memory SQLite engine, as its documentation shows),
and prints one JSON document on stdout: per query the epsilon SmartNoise was given so that the
query's total cost (its own `get_privacy_cost`) equals the spec's epsilon, and per run the
seconds `execute` took and the rows it returned.

The metadata mirrors SmartNoise's own `PUMS_pid.yaml`: `pid` is the private id (one row per
person, `max_ids` 1 by default), age bounded to 0..100 and income to 0..500000.
"""

import json
import sys
import time

import pandas as pd
import snsql
from snsql import Privacy


def metadata(rows):
    table = {
        "rows": rows,
        "age": {"type": "int", "lower": 0, "upper": 100},
        "sex": {"type": "string"},
        "educ": {"type": "string"},
        "race": {"type": "string"},
        "income": {"type": "int", "lower": 0, "upper": 500000},
        "married": {"type": "string"},
        "pid": {"type": "int", "private_id": True},
    }
    return {"": {"PUMS": {"PUMS": table}}}


def plain(value):
    """JSON-safe scalars: numpy numbers as Python numbers, NaN as null."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    started = time.perf_counter()
    df = pd.read_csv(spec["csv"])
    reader = snsql.from_df(df, privacy=Privacy(epsilon=1.0, delta=spec["delta"]), metadata=metadata(len(df)))
    load_seconds = time.perf_counter() - started

    out = {"smartnoise_sql": snsql.__version__ if hasattr(snsql, "__version__") else None,
           "load_seconds": load_seconds, "queries": []}
    for query in spec["queries"]:
        sql = query["sql"]
        # Cost is linear in the per-aggregate epsilon: measure it at 1, then scale so the
        # query's total equals the spec's, and check.
        reader.privacy = Privacy(epsilon=1.0, delta=spec["delta"])
        unit_cost, _ = reader.get_privacy_cost(sql)
        per_aggregate = spec["epsilon"] / float(unit_cost)
        reader.privacy = Privacy(epsilon=per_aggregate, delta=spec["delta"])
        total, delta = reader.get_privacy_cost(sql)
        if abs(float(total) - spec["epsilon"]) > 1e-9:
            raise SystemExit(f"{query['name']}: calibrated cost {total} is not {spec['epsilon']}")
        runs = []
        for i in range(spec["warmup"] + spec["runs"]):
            t = time.perf_counter()
            result = reader.execute(sql)
            seconds = time.perf_counter() - t
            if i >= spec["warmup"]:
                runs.append({"seconds": seconds, "rows": [[plain(v) for v in row] for row in result[1:]]})
        out["queries"].append({
            "name": query["name"],
            "columns": list(result[0]),
            "epsilon_per_aggregate": per_aggregate,
            "cost": [float(total), float(delta)],
            "runs": runs,
        })
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
