"""Query a Veil broker over Arrow Flight SQL.

    import veil_client
    veil = veil_client.connect("grpc://127.0.0.1:7879", token)
    table = veil.query("SELECT district, count(*) AS n FROM hotline.tickets GROUP BY district")
    table.to_pandas()
    veil_client.report(table)          # level, k, rules, audit id; dp intervals, epsilon, budget

Queries go through ADBC's Flight SQL driver, so the same server also serves any ADBC or
Flight SQL tool. Each answer is a ``pyarrow.Table`` whose schema metadata carries Veil's report
(``veil.level``, ``veil.k``, ``veil.rules``, ``veil.audit_id``, and ``veil.dp`` or
``veil.anonymized``); ``report`` decodes it. A refusal raises ``Refused`` with Veil's stable
code (``identifier_group_key``, ``grant_required``, ...) and the audit record's number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Optional

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow
import pyarrow.flight

__all__ = ["Client", "Refused", "connect", "report"]

_CALL_HEADER = "adbc.flight.sql.rpc.call_header."
_AUTHORIZATION = "adbc.flight.sql.authorization_header"
_BUDGET_ACTION = "veil.budget"
_CODE = re.compile(r"\b([a-z][a-z0-9_]*): ")


class Refused(Exception):
    """Veil refused or could not answer a query.

    ``code`` is Veil's stable code (the same as over HTTP), ``message`` says why without any
    value read from a dataset.
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _refused(error: Exception) -> Refused:
    """The Veil refusal inside a driver's error: its message starts with Veil's code."""
    text = str(error)
    for match in _CODE.finditer(text):
        code = match.group(1)
        if code not in ("grpc", "error", "status", "flight"):
            rest = text[match.end():].split("\n")[0].strip().rstrip(".").rstrip("]").strip()
            rest = re.sub(r"\s*\.?\s*(Vendor code|gRPC client debug context).*$", "", rest)
            return Refused(code, rest)
    return Refused("unknown", text)


@dataclass
class Client:
    """A connection to one Veil server's Flight SQL endpoint, signed in with one token."""

    url: str
    token: str
    _conn: Any = None

    def __post_init__(self) -> None:
        # Veil is read-only and has no transactions: autocommit, so the driver need not try.
        self._conn = flight_sql.connect(self.url, db_kwargs={_AUTHORIZATION: f"Bearer {self.token}"}, autocommit=True)

    def query(
        self,
        sql: str,
        mode: Optional[str] = None,
        epsilon: Optional[float] = None,
        rho: Optional[float] = None,
        dry_run: bool = False,
        noise: Optional[str] = None,
    ) -> pyarrow.Table:
        """Runs ``sql`` and returns the released answer.

        ``mode`` is ``aggregate``, ``dp`` or ``deidentified``; by default the strictest mode the
        policy allows on the query's datasets. ``epsilon`` (or ``rho``) is the dp privacy loss
        to spend; by default the dataset's. ``noise`` (``laplace`` or ``gaussian``) chooses the
        noise of a dp query that gives neither. A dry run decides and explains without running
        or charging: the table is empty, its metadata says what would happen.
        """
        headers = {"x-veil-mode": mode, "x-veil-dry-run": "true" if dry_run else None}
        headers["x-veil-epsilon"] = None if epsilon is None else repr(float(epsilon))
        headers["x-veil-rho"] = None if rho is None else repr(float(rho))
        headers["x-veil-noise"] = noise
        cursor = self._conn.cursor()
        try:
            options = {_CALL_HEADER + name: value for name, value in headers.items() if value is not None}
            if options:
                cursor.adbc_statement.set_options(**options)
            cursor.execute(sql)
            return cursor.fetch_arrow_table()
        except adbc_driver_manager.Error as error:
            raise _refused(error) from None
        finally:
            cursor.close()

    def datasets(self) -> list[str]:
        """The datasets of the catalogue the caller may see, as ``department.name``."""
        try:
            objects = self._conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        except adbc_driver_manager.Error as error:
            raise _refused(error) from None
        names = []
        for catalog in objects:
            for schema in catalog.get("catalog_db_schemas") or []:
                for table in schema.get("db_schema_tables") or []:
                    names.append(f"{schema['db_schema_name']}.{table['table_name']}")
        return sorted(names)

    def budget(self) -> list[dict]:
        """The caller's dp budget per dataset: epsilon cap, spent and left, in the window."""
        client = pyarrow.flight.FlightClient(self.url)
        options = pyarrow.flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {self.token}".encode())])
        try:
            results = list(client.do_action(pyarrow.flight.Action(_BUDGET_ACTION, b""), options=options))
        except pyarrow.flight.FlightError as error:
            raise _refused(error) from None
        finally:
            client.close()
        return json.loads(results[0].body.to_pybytes()) if results else []

    def close(self) -> None:
        """Closes the connection."""
        self._conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def connect(url: str, token: str) -> Client:
    """Connects to Veil's Flight SQL endpoint (``grpc://host:port``) with a bearer token."""
    return Client(url, token)


def report(table: pyarrow.Table) -> dict:
    """Veil's report on an answer, from its schema metadata: ``level``, ``k``, ``audit_id``,
    ``rules``, and ``dp`` (noise, epsilon, 95% intervals per column, budget left) or
    ``anonymized`` (each column's noise), as the HTTP JSON answer has them."""
    metadata = table.schema.metadata or {}
    out: dict = {}
    for key, value in metadata.items():
        name = key.decode()
        if not name.startswith("veil."):
            continue
        name = name[len("veil."):]
        text = value.decode()
        if name == "k":
            out[name] = int(text)
        elif name in ("rules", "dp", "anonymized"):
            out[name] = json.loads(text)
        else:
            out[name] = text
    return out
