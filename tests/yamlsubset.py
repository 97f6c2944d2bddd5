"""A strict reader for the plain subset of YAML our deployment files are written in.

The suite checks docker-compose.yml and the Grafana provisioning files without
a YAML library (CI installs no dependency for it): block mappings and
sequences, `- key: value` items, quoted and plain scalars, one-line flow
sequences of scalars, comments. Anything else (anchors, tags, flow mappings,
block scalars, tabs, YAML 1.1's yes/no/on/off and sexagesimal numbers) is an
error, not a guess: the files stay in a subset whose meaning is unambiguous,
and tests/test_containers.py compares this reader with PyYAML when present.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_KEY_RE = re.compile(r"""("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[A-Za-z0-9_.$/-]+):(?:[ ]+(.*))?$""")
_INT_RE = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"[-+]?[0-9]+\.[0-9]+")
_NUMBERISH_RE = re.compile(r"[-+.]?[0-9][0-9_:.eE+-]*")
_AMBIGUOUS = {"yes", "no", "on", "off", "y", "n"}
_FLOW_ITEM_RE = re.compile(r"""\s*("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^,"'\[\]{}]+?)\s*(,|$)""")


class YamlSubsetError(ValueError):
    """The text is outside the subset (or not YAML at all)."""


@dataclass(frozen=True, slots=True)
class _Line:
    indent: int
    text: str
    number: int


def parse(text: str) -> Any:
    """The document's value: dicts, lists, str, int, float, bool and None."""
    lines = _lines(text)
    if not lines:
        return None
    value, pos = _block(lines, 0, lines[0].indent)
    if pos != len(lines):
        raise YamlSubsetError(f"line {lines[pos].number}: unexpected indentation")
    return value


def _lines(text: str) -> list[_Line]:
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlSubsetError(f"line {number}: tab in indentation")
        content = _strip_comment(raw).rstrip()
        if content.strip() in ("", "---"):
            continue
        indent = len(content) - len(content.lstrip(" "))
        found.append(_Line(indent, content[indent:], number))
    return found


def _strip_comment(raw: str) -> str:
    quote = ""
    for i, char in enumerate(raw):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'" and (i == 0 or raw[i - 1] in " [,-:"):
            quote = char
        elif char == "#" and (i == 0 or raw[i - 1] == " "):
            return raw[:i]
    return raw


def _is_item(text: str) -> bool:
    return text == "-" or text.startswith("- ")


def _block(lines: list[_Line], pos: int, indent: int) -> tuple[Any, int]:
    if _is_item(lines[pos].text):
        return _sequence(lines, pos, indent)
    return _mapping(lines, pos, indent)


def _mapping(lines: list[_Line], pos: int, indent: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while pos < len(lines) and lines[pos].indent == indent and not _is_item(lines[pos].text):
        line = lines[pos]
        key, rest = _split_key(line)
        if key in out:
            raise YamlSubsetError(f"line {line.number}: duplicate key {key!r}")
        pos += 1
        if rest is not None:
            out[key] = _scalar(rest, line.number)
        elif pos < len(lines) and lines[pos].indent > indent:
            out[key], pos = _block(lines, pos, lines[pos].indent)
        elif pos < len(lines) and lines[pos].indent == indent and _is_item(lines[pos].text):
            out[key], pos = _sequence(lines, pos, indent)
        else:
            out[key] = None
    if pos < len(lines) and lines[pos].indent > indent:
        raise YamlSubsetError(f"line {lines[pos].number}: unexpected indentation")
    return out, pos


def _sequence(lines: list[_Line], pos: int, indent: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    while pos < len(lines) and lines[pos].indent == indent and _is_item(lines[pos].text):
        line = lines[pos]
        rest = line.text[1:].lstrip(" ")
        if not rest:
            raise YamlSubsetError(f"line {line.number}: empty sequence item")
        if _KEY_RE.match(rest):
            # "- key: value" opens a mapping whose keys align with "key".
            inner = indent + len(line.text) - len(rest)
            lines[pos] = _Line(inner, rest, line.number)
            value, pos = _mapping(lines, pos, inner)
            out.append(value)
        else:
            out.append(_scalar(rest, line.number))
            pos += 1
    return out, pos


def _split_key(line: _Line) -> tuple[str, str | None]:
    match = _KEY_RE.match(line.text)
    if match is None:
        raise YamlSubsetError(f"line {line.number}: expected 'key: value', got {line.text!r}")
    key = _scalar(match[1], line.number) if match[1][0] in "\"'" else match[1]
    return str(key), match[2]


def _scalar(text: str, number: int) -> Any:
    if text.startswith('"'):
        return _double_quoted(text, number)
    if text.startswith("'"):
        if not re.fullmatch(r"'(?:[^']|'')*'", text):
            raise YamlSubsetError(f"line {number}: bad single-quoted string")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        return _flow_sequence(text, number)
    return _plain(text, number)


def _double_quoted(text: str, number: int) -> str:
    if not re.fullmatch(r'"(?:[^"\\]|\\.)*"', text):
        raise YamlSubsetError(f"line {number}: bad double-quoted string")
    try:
        value: str = json.loads(text)
    except ValueError as exc:
        raise YamlSubsetError(f"line {number}: escape outside the subset") from exc
    return value


def _flow_sequence(text: str, number: int) -> list[Any]:
    if not text.endswith("]"):
        raise YamlSubsetError(f"line {number}: a flow sequence must end the line")
    inner = text[1:-1].strip()
    items: list[Any] = []
    pos = 0
    while pos < len(inner):
        match = _FLOW_ITEM_RE.match(inner, pos)
        if match is None or match.end() == pos:
            raise YamlSubsetError(f"line {number}: flow sequence outside the subset")
        items.append(_scalar(match[1], number))
        pos = match.end()
    return items


def _plain(text: str, number: int) -> Any:
    if text[0] in "&*!|>%@`{]}," or ": " in text or text.endswith(":"):
        raise YamlSubsetError(f"line {number}: plain scalar outside the subset: {text!r}")
    lowered = text.lower()
    if lowered in _AMBIGUOUS:
        raise YamlSubsetError(f"line {number}: quote {text!r} (a boolean in YAML 1.1)")
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "~"):
        return None
    if _INT_RE.fullmatch(text):
        return int(text)
    if _FLOAT_RE.fullmatch(text):
        return float(text)
    if _NUMBERISH_RE.fullmatch(text) and not re.fullmatch(r"[0-9]+(\.[0-9]+){2,}", text):
        raise YamlSubsetError(f"line {number}: quote {text!r} (a number in some YAML readers)")
    return text
