"""Rendering the console's pages: Jinja2, French dates, the headers every page carries.

Templates live in `templates/`, the one stylesheet in `static/`. Autoescape is
on and undefined names fail. Every page answer carries a strict CSP (no inline
script or style: `default-src 'self'`), `X-Frame-Options: DENY`,
`Referrer-Policy: same-origin` and `Cache-Control: no-store`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from aiohttp import web

HERE: Final = Path(__file__).parent
_WINTER: Final = timezone(timedelta(hours=1), "CET")
_SUMMER: Final = timezone(timedelta(hours=2), "CEST")
CSP: Final = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
PAGES = web.AppKey("console_pages", jinja2.Environment)


def environment() -> jinja2.Environment:
    """The templates, with the console's filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["date_fr"] = date_fr
    env.filters["datetime_fr"] = datetime_fr
    env.filters["value_fr"] = value_fr
    return env


def _last_sunday(year: int, month: int) -> datetime:
    """01:00 UTC on the month's last Sunday: when the EU changes its clocks."""
    day = datetime(year, month + 1, 1, 1, tzinfo=UTC) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() + 1) % 7)


def _paris_zone(moment: datetime) -> tzinfo:
    """Europe/Paris from the system's zone data; the EU rule where an image has none."""
    try:
        return ZoneInfo("Europe/Paris")
    except ZoneInfoNotFoundError:
        summer = _last_sunday(moment.year, 3) <= moment < _last_sunday(moment.year, 10)
        return _SUMMER if summer else _WINTER


def paris_zone(local: datetime) -> tzinfo:
    """The Paris zone for a wall-clock time (naive) there."""
    return _paris_zone(local.replace(tzinfo=UTC))


def _paris(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.astimezone(_paris_zone(moment.astimezone(UTC)))


def date_fr(value: str | datetime | None) -> str:
    """`08/08/2025`, in Paris; "—" for none."""
    moment = _paris(value)
    return "—" if moment is None else moment.strftime("%d/%m/%Y")


def datetime_fr(value: str | datetime | None) -> str:
    """`08/08/2025 à 14:05`, in Paris; "—" for none."""
    moment = _paris(value)
    return "—" if moment is None else moment.strftime("%d/%m/%Y à %H:%M")


def value_fr(value: object) -> str:
    """A history value in words: Oui/Non, a Paris date, a list joined, "—" for none."""
    if value is None or value == []:
        return "—"
    if isinstance(value, bool):
        return "Oui" if value else "Non"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    text = str(value)
    if len(text) >= 20 and text[4:5] == "-" and text[10:11] == "T":
        try:
            return datetime_fr(text)
        except ValueError:
            return text
    return text


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """A page: the template rendered with `context`, the page headers set."""
    text = request.app[PAGES].get_template(template).render(**context)
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(PAGE_HEADERS)
    return response


def redirect(location: str) -> web.Response:
    """303 See Other: after a form, the browser GETs the next page."""
    response = web.Response(status=303, headers={"Location": location})
    response.headers.update(PAGE_HEADERS)
    return response
