"""The OpenAPI document as a deployment serves it: `openapi.json` plus its own settings.

The file describes the default configuration. Two settings change what a request may
hold, so the served copy states them: the purposes (`[otp] purposes` adds to the
built-in ones) and the code length (`[otp] code_length`).

`reference` reads the served document into plain values for `GET /docs`, the
page for people (`gateway/web/pages.py`): operations by tag with their
parameters, body fields, responses and error codes, then the schemas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any, Final

from gateway.config import Config


def served_document(config: Config) -> bytes:
    """The document for this deployment, as JSON bytes."""
    return _render(tuple(config.otp.purposes), config.otp.code_length)


@lru_cache(maxsize=4)
def _render(purposes: tuple[str, ...], code_length: int) -> bytes:
    doc = json.loads((files("gateway") / "openapi.json").read_text(encoding="utf-8"))
    schemas = doc["components"]["schemas"]
    schemas["Purpose"]["enum"] = list(purposes)
    schemas["OtpCode"]["pattern"] = f"^[0-9]{{{code_length}}}$"
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")


# --- the document for people (`GET /docs`) -----------------------------------------------

METHODS: Final = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True, slots=True)
class Field:
    """A parameter or a body field: name, where, type in words, required, description."""

    name: str
    where: str
    type: str
    required: bool
    description: str


@dataclass(frozen=True, slots=True)
class Answer:
    """One documented response: status, description, body schema name, error codes."""

    status: str
    description: str
    schema: str
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Operation:
    """One path and method, ready to render."""

    method: str
    path: str
    anchor: str
    summary: str
    description: str
    scopes: tuple[str, ...]
    parameters: tuple[Field, ...]
    body: tuple[Field, ...]
    body_schema: str
    answers: tuple[Answer, ...]


@dataclass(frozen=True, slots=True)
class Schema:
    """A component schema: its name, type in words, description and fields."""

    name: str
    type: str
    description: str
    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class Reference:
    """The whole document for `/docs`: operations by tag, then the schemas."""

    title: str
    version: str
    description: str
    tags: tuple[tuple[str, str, tuple[Operation, ...]], ...]
    schemas: tuple[Schema, ...]


def reference(document: bytes) -> Reference:
    """A served document (`served_document`) as a `Reference`."""
    doc = json.loads(document)
    ops = [_operation(doc, path, m, op) for path, item in doc["paths"].items()
           for m, op in item.items() if m in METHODS]  # fmt: skip
    tags = [(t["name"], t.get("description", "")) for t in doc.get("tags", [])]
    named = {name for name, _ in tags}
    seen = {tag for op in doc["paths"].values() for o in op.values() if isinstance(o, dict)
            for tag in o.get("tags", ["other"])}  # fmt: skip
    tags += [(t, "") for t in sorted(seen - named)]
    grouped = tuple((name, text, tuple(o for o, t in ops if t == name)) for name, text in tags)
    schemas = doc["components"].get("schemas", {})
    return Reference(
        title=doc["info"]["title"], version=doc["info"]["version"],
        description=doc["info"].get("description", ""),
        tags=tuple(g for g in grouped if g[2]),
        schemas=tuple(_schema(doc, n, s) for n, s in schemas.items()),
    )  # fmt: skip


def _resolve(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _ref_name(node: Any) -> str:
    ref = node.get("$ref", "") if isinstance(node, dict) else ""
    return str(ref).rsplit("/", 1)[-1] if ref.startswith("#/components/schemas/") else ""


def type_of(doc: dict[str, Any], node: Any) -> str:
    """A schema's type in a few words: `string`, `array of Account`, `"sms" | "voice"`."""
    name = _ref_name(node)
    node = _resolve(doc, node)
    if not isinstance(node, dict):
        return "any"
    if "enum" in node:
        return " | ".join(json.dumps(v) for v in node["enum"])
    if "const" in node:
        return json.dumps(node["const"])
    kind = node.get("type", "")
    if kind == "array":
        return "array of " + type_of(doc, node.get("items", {}))
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    if name:
        return name
    if "format" in node or "pattern" in node:
        return f"{kind} ({node.get('format') or 'pattern ' + node['pattern']})"
    parts = node.get("oneOf") or node.get("anyOf") or node.get("allOf")
    if parts and not kind:
        return " | ".join(type_of(doc, p) for p in parts)
    return str(kind or "object")


def _fields(doc: dict[str, Any], schema: Any) -> tuple[Field, ...]:
    """The properties of an object schema, `allOf` parts merged."""
    node = _resolve(doc, schema)
    if not isinstance(node, dict):
        return ()
    props: dict[str, Any] = {}
    required: set[str] = set(node.get("required", []))
    for part in [node, *(_resolve(doc, p) for p in node.get("allOf", []))]:
        if isinstance(part, dict):
            props.update(part.get("properties", {}))
            required.update(part.get("required", []))
    return tuple(
        Field(name, "body", type_of(doc, p), name in required,
              str(_resolve(doc, p).get("description", "")))
        for name, p in props.items()
    )  # fmt: skip


def _codes(doc: dict[str, Any], schema: Any, found: set[str]) -> None:
    node = _resolve(doc, schema)
    if not isinstance(node, dict):
        return
    error = _resolve(doc, node.get("properties", {}).get("error", {}))
    found.update(str(v) for v in error.get("enum", []))
    if "const" in error:
        found.add(str(error["const"]))
    for key in ("allOf", "oneOf", "anyOf"):
        for part in node.get(key, []):
            _codes(doc, part, found)


def _answer(doc: dict[str, Any], status: str, response: Any) -> Answer:
    response = _resolve(doc, response)
    found: set[str] = set()
    schema_name = ""
    for content in response.get("content", {}).values():
        schema = content.get("schema", {})
        schema_name = schema_name or _ref_name(schema)
        _codes(doc, schema, found)
        for example in [content.get("example"), *content.get("examples", {}).values()]:
            value = _resolve(doc, example or {})
            value = value.get("value", value) if "value" in value else value
            if isinstance(value, dict) and isinstance(value.get("error"), str):
                found.add(value["error"])
    found.discard("")
    return Answer(status, str(response.get("description", "")), schema_name, tuple(sorted(found)))


def _operation(
    doc: dict[str, Any], path: str, method: str, op: dict[str, Any]
) -> tuple[Operation, str]:
    params = tuple(
        Field(p["name"], p["in"], type_of(doc, p.get("schema", {})), bool(p.get("required")),
              str(p.get("description", "")))
        for p in (_resolve(doc, raw) for raw in op.get("parameters", []))
    )  # fmt: skip
    body = _resolve(doc, op.get("requestBody", {}))
    contents: list[dict[str, Any]] = list(body.get("content", {}).values())
    schema = contents[0].get("schema", {}) if contents else {}
    scopes = tuple(s for req in op.get("security", []) for v in req.values() for s in v)
    anchor = method + "-" + "".join(c if c.isalnum() else "-" for c in path).strip("-")
    operation = Operation(
        method=method.upper(), path=path, anchor=anchor, summary=op.get("summary", ""),
        description=op.get("description", ""), scopes=scopes, parameters=params,
        body=_fields(doc, schema) if schema else (), body_schema=_ref_name(schema),
        answers=tuple(_answer(doc, s, r) for s, r in op.get("responses", {}).items()),
    )  # fmt: skip
    return operation, (op.get("tags") or ["other"])[0]


def _schema(doc: dict[str, Any], name: str, schema: dict[str, Any]) -> Schema:
    kind = type_of(doc, schema)
    return Schema(name, kind, str(schema.get("description", "")), _fields(doc, schema))
