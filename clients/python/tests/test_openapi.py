"""The server's OpenAPI document is valid OpenAPI 3.1 (checked with openapi-spec-validator), and
says what the endpoints answer: every response described, the 503 of every change the audit log
must record, every answer format of a query, the multipart upload of a dataset."""

from __future__ import annotations

import json
import urllib.request

from openapi_spec_validator import validate


def test_the_openapi_document_is_valid_and_complete(demo):
    with urllib.request.urlopen(demo.http + "/v1/openapi.json", timeout=30) as response:
        document = json.load(response)
    validate(document)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                assert answer.get("description"), f"{method} {path} {status} has no description"
            if path.startswith("/v1/") and method != "get":
                assert "503" in operation["responses"], f"{method} {path} does not say it can be unavailable"
    answers = document["paths"]["/v1/query"]["post"]["responses"]["200"]["content"]
    for media in ["application/json", "application/vnd.apache.arrow.stream", "application/vnd.apache.parquet", "text/csv"]:
        assert media in answers, f"a query's {media} answer is not described"
    upload = document["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload, "the upload of a dataset is not described"
