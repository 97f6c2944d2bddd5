"""Pages and files for people: the drop-in code-entry step's assets and `GET /docs`.

- `GET /static/otp-step.js`, `otp-step.css`, `otp-step.fr.json`: the code-entry
  step a login front end drops in (docs/frontend.md). Linked with `?v=<version>`
  (the first 12 hex digits of the file's SHA-256, `asset_version`), a file is
  cached for a year (`immutable`); without it, or with an old one, five minutes,
  so that an unversioned link still picks up an upgrade. They are public
  (`Access-Control-Allow-Origin: *`: a front end on another origin may load the
  table) and carry an `ETag`.
- `GET /docs`: the OpenAPI document (`gateway.apidoc.reference`) rendered by
  Jinja2, server-side: no script, no CDN, the console's strict CSP.

Not API routes: they are not in `openapi.json`.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Final

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from gateway.apidoc import reference, served_document
from gateway.web.request import SERVICES

HERE: Final = Path(__file__).parent
STATIC: Final = HERE / "static"
ASSETS: Final = {
    "otp-step.js": "text/javascript",
    "otp-step.css": "text/css",
    "otp-step.fr.json": "application/json",
    "docs.css": "text/css",
}
LONG: Final = "public, max-age=31536000, immutable"
SHORT: Final = "public, max-age=300"
CSP: Final = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
_CODE: Final = re.compile(r"`([^`]+)`")
_STRONG: Final = re.compile(r"\*\*([^*]+)\*\*")


@lru_cache(maxsize=8)
def _asset(name: str) -> tuple[bytes, str]:
    body = (STATIC / name).read_bytes()
    return body, hashlib.sha256(body).hexdigest()[:12]


def asset_version(name: str) -> str:
    """The version a link to `/static/<name>` carries (`?v=`): its content's hash."""
    return _asset(name)[1]


async def asset(request: web.Request) -> web.StreamResponse:
    """One of the step's files (or the docs' stylesheet), cached by its version."""
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    body, version = _asset(name)
    etag = f'"{version}"'
    headers = {
        "Cache-Control": LONG if request.query.get("v") == version else SHORT,
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        "Access-Control-Allow-Origin": "*",
    }
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=ASSETS[name], charset="utf-8", headers=headers)


def prose(text: str) -> Markup:
    """The document's light Markdown: paragraphs, `- ` lists, pipe tables, `code`, **bold**."""
    blocks = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        if lines and all(ln.startswith("- ") for ln in lines):
            items = "".join(f"<li>{_inline(ln[2:])}</li>" for ln in lines)
            blocks.append(f"<ul>{items}</ul>")
        elif len(lines) > 2 and all(ln.startswith("|") for ln in lines):
            blocks.append(_table(lines))
        elif lines:
            blocks.append(f"<p>{_inline(' '.join(lines))}</p>")
    return Markup("".join(blocks))


def _table(lines: list[str]) -> str:
    """A Markdown pipe table: a header row, the `|---|` row, then the body rows."""
    rows = [[cell.strip() for cell in ln.strip().strip("|").split("|")] for ln in lines]
    head = "".join(f'<th scope="col">{_inline(c)}</th>' for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows[2:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str) -> str:
    html = str(escape(text))
    html = _CODE.sub(r"<code>\1</code>", html)
    return _STRONG.sub(r"<strong>\1</strong>", html)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["prose"] = prose
    env.filters["inline"] = lambda text: Markup(_inline(text))
    return env


@lru_cache(maxsize=4)
def _docs_page(document: bytes) -> str:
    page = _environment().get_template("docs.html")
    return page.render(ref=reference(document), css=asset_version("docs.css"))


async def docs(request: web.Request) -> web.Response:
    """The API reference for integrators, rendered once per served document."""
    text = _docs_page(served_document(request.app[SERVICES].config))
    response = web.Response(text=text, content_type="text/html", charset="utf-8")
    response.headers.update(PAGE_HEADERS)
    response.headers["Cache-Control"] = "no-cache"
    return response


def setup(app: web.Application) -> None:
    app.router.add_get("/static/{name}", asset, allow_head=False)
    app.router.add_get("/docs", docs, allow_head=False)
