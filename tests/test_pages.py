"""`/docs` and the drop-in code-entry step's files (gateway/web/pages.py), over HTTP.

The document is read here, in the test, from `GET /openapi.json`: every path and
method it has must be on the page, and every error code the contract gives
`/challenge`, `/verify` and the resend must have a French sentence in the step's
one table.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import Gateway

STATIC = Path(__file__).resolve().parent.parent / "gateway" / "web" / "static"
STEP_FILES = {
    "otp-step.js": "text/javascript",
    "otp-step.css": "text/css",
    "otp-step.fr.json": "application/json",
    "docs.css": "text/css",
}
STEP_ROUTES = [
    ("/challenge", "post"),
    ("/verify", "post"),
    ("/challenge/{challenge_id}/resend", "post"),
]
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
async def doc(gw: Gateway) -> dict[str, Any]:
    resp = await gw.client.get("/openapi.json")
    body: dict[str, Any] = await resp.json()
    return body


def resolve(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def named(doc: dict[str, Any], node: Any, field: str, found: set[str]) -> None:
    """Every value the document gives `field` under `node`: enums, consts, examples."""
    node = resolve(doc, node)
    if isinstance(node, dict):
        prop = resolve(doc, node.get("properties", {}).get(field, {}))
        found.update(str(v) for v in prop.get("enum", []) if v is not None)
        if "const" in prop:
            found.add(str(prop["const"]))
        if isinstance(node.get(field), str) and field in ("error",):
            found.add(node[field])
        for value in node.values():
            named(doc, value, field, found)
    elif isinstance(node, list):
        for value in node:
            named(doc, value, field, found)


def contract_codes(doc: dict[str, Any], field: str) -> set[str]:
    found: set[str] = set()
    for path, method in STEP_ROUTES:
        for status, response in doc["paths"][path][method]["responses"].items():
            if int(status) >= 400:
                named(doc, response, field, found)
    return found


# --- the step's files -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(STEP_FILES))
async def test_each_file_is_served_with_its_type_and_headers(gw: Gateway, name: str) -> None:
    body = (STATIC / name).read_bytes()
    version = hashlib.sha256(body).hexdigest()[:12]
    resp = await gw.client.get(f"/static/{name}")
    assert resp.status == 200
    assert resp.content_type == STEP_FILES[name] and resp.charset == "utf-8"
    assert await resp.read() == body
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Cache-Control"] == "public, max-age=300"  # unversioned: short
    assert resp.headers["ETag"] == f'"{version}"'
    versioned = await gw.client.get(f"/static/{name}?v={version}")
    assert versioned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    stale = await gw.client.get(f"/static/{name}?v=000000000000")
    assert stale.headers["Cache-Control"] == "public, max-age=300"
    again = await gw.client.get(f"/static/{name}", headers={"If-None-Match": f'"{version}"'})
    assert again.status == 304 and await again.read() == b""


@pytest.mark.parametrize("path", ["/static/nothing.js", "/static/..%2Fopenapi.json"])
async def test_other_files_are_not_served(gw: Gateway, path: str) -> None:
    resp = await gw.client.get(path)
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"


def test_every_error_of_the_contract_has_a_french_sentence(doc: dict[str, Any]) -> None:
    table = json.loads((STATIC / "otp-step.fr.json").read_text(encoding="utf-8"))
    codes = contract_codes(doc, "error")
    assert {"invalid_code", "too_many_attempts", "rate_limited", "unknown_account"} <= codes
    assert codes - set(table["errors"]) == set(), "codes without a sentence"
    scopes = contract_codes(doc, "scope")
    assert {"cooldown", "sends", "failures"} <= scopes
    assert scopes - set(table["rate_limited"]) == set(), "rate-limit scopes without a sentence"
    sentences = [*table["errors"].values(), *table["rate_limited"].values()]
    for text in sentences:  # sentences for people: French, ending like one, no API jargon
        assert text[0].isupper() and text.endswith("."), text
        words = re.sub(r"\{(attempts_left|wait)\}", "", text)
        assert not re.search(r"[a-z]+_[a-z]+|challenge|token|[{}]", words), text


# --- /docs ----------------------------------------------------------------------------


async def test_docs_renders_every_path_method_and_error_code(
    gw: Gateway, doc: dict[str, Any]
) -> None:
    resp = await gw.client.get("/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    for path, item in doc["paths"].items():
        for method in (m for m in item if m in METHODS):
            shown = rf"{method.upper()}</span>\s*<code>{re.escape(html.escape(path))}</code></h3>"
            assert re.search(shown, page), f"{method.upper()} {path} is not on /docs"
    found: set[str] = set()
    for item in doc["paths"].values():
        for op in item.values():
            if isinstance(op, dict):
                named(doc, op.get("responses", {}), "error", found)
    missing = {c for c in found if f'<code class="error-code">{c}</code>' not in page}
    assert missing == set()
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in page


async def test_docs_is_a_page_for_people_offline_and_scriptless(gw: Gateway) -> None:
    resp = await gw.client.get("/docs")
    page = await resp.text()
    assert "<script" not in page and " style=" not in page
    head = page.split("</head>", 1)[0]
    assert "//" not in head  # every link is a path of the gateway's own: no CDN
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert '<html lang="fr">' in page and page.count("<h1") == 1


async def test_docs_states_this_deployments_settings(make_gateway: Any) -> None:
    gw = await make_gateway(otp={"code_length": 8})
    page = await (await gw.client.get("/docs")).text()
    assert "^[0-9]{8}$" in html.unescape(page)
