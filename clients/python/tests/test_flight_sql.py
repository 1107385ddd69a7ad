"""Veil over Arrow Flight SQL with the clients analysts use: ADBC's Flight SQL driver, pyarrow's
Flight client, and this package. Each test runs against one demo server (see conftest)."""

from __future__ import annotations

import base64
import json

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow
import pyarrow.flight as flight
import pytest

import veil_client

VOLUME = "SELECT district, count(*) AS tickets FROM hotline.tickets GROUP BY district"
DP_ELDERLY = "SELECT count(*) AS elderly FROM civil.elderly WHERE living_alone"
DP_BY_DISTRICT = "SELECT district, count(*) AS elderly FROM civil.elderly WHERE living_alone GROUP BY district"
PHONE = "SELECT caller_phone, count(*) AS n FROM hotline.tickets GROUP BY caller_phone"


def adbc(demo, user):
    header = {"adbc.flight.sql.authorization_header": f"Bearer {demo.tokens[user]}"}
    return flight_sql.connect(demo.flight, db_kwargs=header, autocommit=True)


def audit_record(demo, reference):
    """The one audit record an answer's `audit_id` refers to, read as the auditor over HTTP."""
    page = demo.get(f"/v1/audit?request_id={reference}", "auditor")
    assert len(page["records"]) == 1, f"audit records for {reference}: {page['records']}"
    return page["records"][0]


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def statement_command(sql):
    """A Flight SQL CommandStatementQuery packed in protobuf's Any, written out by hand: pyarrow
    has Flight but not Flight SQL's messages (field 1 of each message, length-delimited)."""
    query = sql.encode()
    command = b"\x0a" + _varint(len(query)) + query
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return b"\x0a" + _varint(len(type_url)) + type_url + b"\x12" + _varint(len(command)) + command


def bearer(demo, user):
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {demo.tokens[user]}".encode())])


def test_adbc_connects_reads_server_info_and_fetches_an_answer(demo):
    with adbc(demo, "civil-analyst") as conn:
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "Veil"
        assert info["vendor_version"], info
        with conn.cursor() as cur:
            cur.execute(VOLUME)
            table = cur.fetch_arrow_table()
    assert table.column_names == ["district", "tickets"]
    assert table.num_rows > 0
    assert table.schema.field("district").type == pyarrow.string(), "plain strings, not views, for every client"
    metadata = table.schema.metadata
    assert metadata[b"veil.level"] == b"L2"
    rules = json.loads(metadata[b"veil.rules"])
    assert any(r["code"] == "anonymized" for r in rules), rules
    # One audit record for the query, naming the caller and the SQL.
    record = audit_record(demo, metadata[b"veil.audit_id"].decode())
    assert record["action"] == "query"
    assert record["decision"] == "allowed"
    assert record["actor"]["user"] == "civil-analyst"
    assert record["sql"] == VOLUME
    assert record["mode"] == "aggregate", "the strictest mode the policy allows on an L2 dataset"


def test_adbc_lists_the_catalogue(demo):
    with adbc(demo, "health-analyst") as conn:
        objects = conn.adbc_get_objects(depth="columns").read_all().to_pylist()
    catalogs = {c["catalog_name"] for c in objects}
    assert catalogs == {"veil"}
    tables = {
        f"{s['db_schema_name']}.{t['table_name']}": [col["column_name"] for col in t["table_columns"] or []]
        for c in objects for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]
    }
    assert "health.visits" in tables and "hotline.tickets" in tables, sorted(tables)
    assert "district" in tables["hotline.tickets"]


def test_the_mode_and_epsilon_come_from_call_headers_and_dp_metadata_travels(demo):
    veil = veil_client.connect(demo.flight, demo.tokens["civil-analyst"])
    before = {b["dataset"]: b["spent"] for b in veil.budget()}
    table = veil.query(DP_ELDERLY, mode="dp", epsilon=0.25)
    report = veil_client.report(table)
    dp = report["dp"]
    assert dp["noise"] == "laplace"
    assert dp["epsilon"] == pytest.approx(0.25)
    intervals = {c["column"]: c["ci95"] for c in dp["intervals"]}
    assert len(intervals["elderly"]) == table.num_rows > 0
    for (low, high), value in zip(intervals["elderly"], table.column("elderly").to_pylist()):
        assert low <= value <= high
    budget = {b["dataset"]: b for b in dp["budget"]}
    assert budget["civil.elderly"]["spent"] == pytest.approx(before.get("civil.elderly", 0) + 0.25)
    after = {b["dataset"]: b["spent"] for b in veil.budget()}
    assert after["civil.elderly"] == pytest.approx(budget["civil.elderly"]["spent"])
    assert audit_record(demo, report["audit_id"])["mode"] == "dp"


def test_a_dry_run_explains_without_running_or_charging(demo):
    veil = veil_client.connect(demo.flight, demo.tokens["civil-analyst"])
    spent = {b["dataset"]: b["spent"] for b in veil.budget()}
    table = veil.query(DP_BY_DISTRICT, mode="dp", epsilon=0.5, dry_run=True)
    assert table.num_rows == 0
    assert table.column_names == ["district", "elderly"]
    assert audit_record(demo, veil_client.report(table)["audit_id"])["decision"] == "dry_run"
    assert {b["dataset"]: b["spent"] for b in veil.budget()} == spent


def test_a_refusal_reaches_the_client_with_its_rule_code_and_is_recorded(demo):
    veil = veil_client.connect(demo.flight, demo.tokens["civil-analyst"])
    with pytest.raises(veil_client.Refused) as refused:
        veil.query(PHONE)
    assert refused.value.code == "identifier_group_key", str(refused.value)
    assert "caller_phone" in refused.value.message
    page = demo.get("/v1/audit?user=civil-analyst&decision=denied&limit=1000", "auditor")
    assert any(r.get("sql") == PHONE and r.get("rule") == "identifier_group_key" for r in page["records"])


def test_a_wrong_token_is_refused(demo):
    wrong = {"adbc.flight.sql.authorization_header": "Bearer veil_wrong"}
    conn = flight_sql.connect(demo.flight, db_kwargs=wrong, autocommit=True)
    with pytest.raises(adbc_driver_manager.Error) as refused:
        with conn.cursor() as cur:
            cur.execute(VOLUME)
            cur.fetch_arrow_table()
    assert "unauthenticated" in str(refused.value).lower()
    conn.close()
    client = flight.FlightClient(demo.flight)
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("anyone", "veil_wrong")


def test_basic_auth_handshake_returns_a_bearer_that_works(demo):
    client = flight.FlightClient(demo.flight)
    name, value = client.authenticate_basic_token("any-name", demo.tokens["civil-analyst"])
    assert name.lower() == b"authorization"
    assert value == f"Bearer {demo.tokens['civil-analyst']}".encode()
    options = flight.FlightCallOptions(headers=[(name, value)])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(VOLUME)), options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.num_rows > 0
    assert b"veil.audit_id" in info.schema.metadata, "the report is in GetFlightInfo's schema"


def test_a_stolen_ticket_is_refused_and_stays_with_its_owner(demo):
    client = flight.FlightClient(demo.flight)
    owner, thief = bearer(demo, "civil-analyst"), bearer(demo, "hotline-analyst")
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(VOLUME)), owner)
    ticket = info.endpoints[0].ticket
    with pytest.raises(flight.FlightUnauthorizedError) as refused:
        client.do_get(ticket, thief).read_all()
    assert "not_your_handle" in str(refused.value)
    assert client.do_get(ticket, owner).read_all().num_rows > 0
    with pytest.raises(pyarrow.ArrowException) as again:
        client.do_get(ticket, owner).read_all()
    assert "unknown_handle" in str(again.value), "a ticket is fetched once"


def test_the_package_lists_datasets_and_budget(demo):
    veil = veil_client.connect(demo.flight, demo.tokens["health-analyst"])
    assert "health.visits" in veil.datasets()
    assert all({"dataset", "cap", "spent", "left"} <= set(b) for b in veil.budget())
    frame = veil.query(VOLUME).to_pandas()
    assert list(frame.columns) == ["district", "tickets"]


def test_basic_auth_header_is_not_a_bearer(demo):
    """A basic-auth header on a query call is refused; only the handshake accepts it."""
    client = flight.FlightClient(demo.flight)
    basic = base64.b64encode(f"x:{demo.tokens['civil-analyst']}".encode())
    options = flight.FlightCallOptions(headers=[(b"authorization", b"Basic " + basic)])
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(VOLUME)), options)


def test_adbc_prepared_statements_run_and_close(demo):
    with adbc(demo, "civil-analyst") as conn, conn.cursor() as cur:
        cur.adbc_prepare(VOLUME)
        cur.execute(VOLUME)
        table = cur.fetch_arrow_table()
        assert table.num_rows > 0
        first = table.schema.metadata[b"veil.audit_id"].decode()
        cur.execute(VOLUME)
        again = cur.fetch_arrow_table()
        # Each execution is a query of its own, with its own audit record; the answer is the
        # same (sticky noise).
        assert again.schema.metadata[b"veil.audit_id"].decode() != first
        assert again.equals(table.replace_schema_metadata(again.schema.metadata))


def _any(type_name, message):
    type_url = f"type.googleapis.com/arrow.flight.protocol.sql.{type_name}".encode()
    return b"\x0a" + _varint(len(type_url)) + type_url + b"\x12" + _varint(len(message)) + message


def _field(message, number):
    """The first length-delimited field `number` of a protobuf message (enough for Any and the
    prepared statement result, whose fields before it are length-delimited too)."""
    at = 0
    while at < len(message):
        key, at = _read_varint(message, at)
        length, at = _read_varint(message, at)
        if key >> 3 == number:
            return message[at:at + length]
        at += length
    raise AssertionError(f"no field {number}")


def _read_varint(data, at):
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def test_a_prepared_statement_keeps_the_mode_and_epsilon_it_was_prepared_with(demo):
    client = flight.FlightClient(demo.flight)
    token = f"Bearer {demo.tokens['civil-analyst']}".encode()
    prepared_with = flight.FlightCallOptions(
        headers=[(b"authorization", token), (b"x-veil-mode", b"dp"), (b"x-veil-epsilon", b"0.125")]
    )
    query = DP_ELDERLY.encode()
    action = flight.Action("CreatePreparedStatement", _any("ActionCreatePreparedStatementRequest", b"\x0a" + _varint(len(query)) + query))
    result = list(client.do_action(action, prepared_with))[0].body.to_pybytes()
    handle = _field(_field(result, 2), 1)
    command = _any("CommandPreparedStatementQuery", b"\x0a" + _varint(len(handle)) + handle)
    plain = flight.FlightCallOptions(headers=[(b"authorization", token)])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command), plain)
    dp = json.loads(info.schema.metadata[b"veil.dp"])
    assert dp["epsilon"] == pytest.approx(0.125), "executed without headers: the prepared statement's mode and epsilon"
    client.do_get(info.endpoints[0].ticket, plain).read_all()


def test_refusals_before_the_broker_decides_are_recorded_too(demo):
    """A call header that does not parse, and a query over the limit of unfetched answers, are
    refused before anything runs or is charged, and each is one denied query record."""
    client = flight.FlightClient(demo.flight)
    token = (b"authorization", f"Bearer {demo.tokens['hotline-analyst']}".encode())
    bad = flight.FlightCallOptions(headers=[token, (b"x-veil-epsilon", b"half")])
    with pytest.raises(pyarrow.ArrowInvalid) as refused:
        client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(VOLUME)), bad)
    assert "invalid_header" in str(refused.value)
    options = flight.FlightCallOptions(headers=[token])
    held = [client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(VOLUME)), options) for _ in range(16)]
    with pytest.raises(pyarrow.ArrowException) as full:
        client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(VOLUME)), options)
    assert "too_many_answers" in str(full.value)
    page = demo.get("/v1/audit?user=hotline-analyst&action=query&decision=denied&limit=1000", "auditor")
    rules = [r.get("rule") for r in page["records"]]
    assert rules.count("invalid_header") == 1 and rules.count("too_many_answers") == 1, rules
    for info in held:
        client.do_get(info.endpoints[0].ticket, options).read_all()
    assert client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(VOLUME)), options).endpoints


def test_dp_intervals_can_come_as_columns(demo):
    client = flight.FlightClient(demo.flight)
    options = flight.FlightCallOptions(headers=[
        (b"authorization", f"Bearer {demo.tokens['civil-analyst']}".encode()),
        (b"x-veil-mode", b"dp"), (b"x-veil-epsilon", b"0.25"), (b"x-veil-intervals", b"true"),
    ])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(DP_ELDERLY)), options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.column_names == ["elderly", "elderly_ci95_low", "elderly_ci95_high"]
    assert table.num_rows == 1
    for value, low, high in zip(*(table.column(c).to_pylist() for c in table.column_names)):
        assert low <= value <= high
