"""A demo server for the tests: ``veil serve --demo`` with Flight SQL, from ``VEIL_BIN``.

The Rust test ``crates/cli/tests/python.rs`` sets ``VEIL_BIN`` to the binary it built and runs
these tests in the virtualenv that ``clients/python/setup-venv`` makes.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.request
from dataclasses import dataclass, field

import pytest


@dataclass
class Demo:
    http: str
    flight: str
    tokens: dict = field(default_factory=dict)

    def get(self, path: str, user: str) -> dict:
        request = urllib.request.Request(self.http + path, headers={"authorization": f"Bearer {self.tokens[user]}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)


@pytest.fixture(scope="session")
def demo():
    binary = os.environ.get("VEIL_BIN")
    if not binary:
        pytest.fail("VEIL_BIN must name the veil binary to test (cargo sets it in crates/cli/tests/python.rs)")
    args = [binary, "serve", "--demo", "--listen", "127.0.0.1:0", "--flight-listen", "127.0.0.1:0",
            "--demo-people", "3000"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    found = Demo(http="", flight="")
    assert process.stdout is not None
    for line in process.stdout:
        line = line.strip()
        if line.startswith("Veil demo is listening on "):
            found.http = line.removeprefix("Veil demo is listening on ")
        elif line.startswith("Flight SQL is listening on "):
            found.flight = line.removeprefix("Flight SQL is listening on ")
        elif line.startswith("token "):
            _, user, token = line.split()
            found.tokens[user] = token
        elif line.startswith("The API is described at"):
            break
    if not (found.http and found.flight and found.tokens):
        process.kill()
        pytest.fail("the demo did not print its addresses and tokens")
    # Keep reading its output so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    yield found
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
