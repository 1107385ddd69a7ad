"""Runs one walkthrough's queries over Flight SQL as the user the script is for: the shared
part of the example scripts beside this file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import veil_client

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def run(walkthrough: str, user: str) -> None:
    """Every query step of ``examples/<walkthrough>`` that ``user`` takes, in order: answers as
    pandas frames with Veil's report; expected refusals with their code."""
    url = os.environ.get("VEIL_FLIGHT", "grpc://127.0.0.1:7879")
    token = os.environ.get("VEIL_TOKEN")
    if not token:
        sys.exit(f"set VEIL_TOKEN to the {user} token that `veil serve --demo` printed")
    folder = EXAMPLES / walkthrough
    steps = json.loads((folder / "walkthrough.json").read_text(encoding="utf-8"))["steps"]
    veil = veil_client.connect(url, token)
    for step in steps:
        if step["do"] != "query" or step["as"] != user:
            continue
        print(f"== {step['say']}")
        sql = (folder / step["file"]).read_text(encoding="utf-8")
        try:
            table = veil.query(sql, mode=step.get("mode", "aggregate"), epsilon=step.get("epsilon"))
        except veil_client.Refused as refused:
            print(f"refused: {refused}")
            if refused.code != step.get("refused"):
                sys.exit(f"expected {step.get('refused') or 'an answer'}, got {refused.code}")
            continue
        if step.get("refused"):
            sys.exit(f"expected the refusal {step['refused']}, got an answer")
        print(table.to_pandas().head(20).to_string())
        report = veil_client.report(table)
        if "dp" in report:
            dp = report["dp"]
            left = ", ".join(f"{b['dataset']} {b['left']:.2f}" for b in dp["budget"])
            print(f"dp: epsilon {dp.get('epsilon')}, budget left {left}")
        print(f"level {report['level']}, k {report['k']}, audit record {report['audit_id']}\n")
    veil.close()
