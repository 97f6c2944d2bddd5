"""The OpenAPI document covers the accounts issue's routes the way the code reads them."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import pytest

from gateway.web import accounts as account_routes
from gateway.web import selfservice as selfservice_routes
from gateway.web import totp as totp_routes
from gateway.web.body import Field
from tests.test_openapi import max_length, operations, resolve

BODY_SPECS: dict[tuple[str, str], dict[str, Field]] = {
    ("/phones/blank", "post"): account_routes.BLANK_FIELDS,
    ("/accounts/{account_id}/phone-change", "post"): selfservice_routes.PHONE_CHANGE_FIELDS,
    ("/accounts/{account_id}/phone-change/verify", "post"): selfservice_routes.PHONE_PROOF_FIELDS,
    ("/accounts/{account_id}/email", "put"): selfservice_routes.EMAIL_FIELDS,
    ("/accounts/{account_id}/totp/confirm", "post"): totp_routes.CODE_FIELDS,
    ("/accounts/{account_id}/totp/verify", "post"): totp_routes.TOTP_VERIFY_FIELDS,
}
STEP_UP = {
    ("/accounts", "post"): "account.create",
    ("/accounts/{account_id}", "patch"): "contact.update",
    ("/accounts/{account_id}/phone", "put"): "contact.update",
    ("/accounts/{account_id}/phone-change", "post"): "contact.update",
    ("/accounts/{account_id}/email", "put"): "contact.update",
    ("/accounts/{account_id}/totp", "post"): "contact.update",
    ("/accounts/{account_id}/totp", "delete"): "contact.update",
}
# Destructive admin actions need a step-up too (issue 10, section 8).
DESTRUCTIVE = {
    ("/accounts/{account_id}", "delete"),
    ("/accounts/{account_id}/devices", "delete"),
    ("/accounts/{account_id}/devices/{device_id}", "delete"),
    ("/phones/blank", "post"),
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((files("gateway") / "openapi.json").read_text())
    return loaded


def test_request_bodies_mirror_the_field_specs(doc: dict[str, Any]) -> None:
    for (path, method), spec in BODY_SPECS.items():
        body = doc["paths"][path][method]["requestBody"]
        schema = resolve(doc, body["content"]["application/json"]["schema"])
        assert schema["additionalProperties"] is False, (path, method)
        assert set(schema["properties"]) == set(spec), (path, method)
        assert set(schema.get("required", [])) == {n for n, f in spec.items() if f.required}
        for name, f in spec.items():
            if f.kind is str:
                assert max_length(doc, schema["properties"][name]) == f.max_len, (path, name)


def test_step_up_routes_say_so(doc: dict[str, Any]) -> None:
    step_up = {"$ref": "#/components/parameters/StepUpToken"}
    for (path, method), purpose in STEP_UP.items():
        op = doc["paths"][path][method]
        assert step_up in op["parameters"], (path, method)
        assert resolve(doc, op["responses"]["401"])["content"], (path, method)
        assert purpose in json.dumps(op) or purpose in json.dumps(doc["paths"][path]), path
    either = {"$ref": "#/components/responses/UnauthorizedOrStepUp"}
    for path, method, op in operations(doc):
        needs = (path, method) in STEP_UP or (path, method) in DESTRUCTIVE
        assert (step_up in op["parameters"]) == needs, (path, method)
        # A missing key is 401 `unauthorized` before any step-up is looked at.
        assert (op["responses"].get("401") == either) == needs, (path, method)


def test_admin_routes_take_an_acting_account(doc: dict[str, Any]) -> None:
    acting = {"$ref": "#/components/parameters/ActingAccount"}
    for path, method, op in operations(doc):
        admin = {"bearerAuth": ["admin"]} in op["security"]
        assert (acting in op["parameters"]) == admin, (path, method)
        if admin and path.startswith("/accounts/{account_id}"):
            assert resolve(doc, op["responses"]["404"])["content"], (path, method)
