"""The admin console as a browser without JavaScript uses it: forms, cookies, redirects.

`Console` wraps a `Gateway`'s test client (its cookie jar is the browser's):
`sign_in` goes through the sign-in page, takes the code the test provider
received and types it. `csrf_of` reads a page's form token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests.support.admin import as_operator
from tests.support.gateway import Gateway, add_account

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no form token on the page"
    return found.group(1)


@dataclass
class Page:
    status: int
    html: str
    url: str
    headers: Any


@dataclass
class Console:
    gw: Gateway

    async def get(self, path: str) -> Page:
        resp = await self.gw.client.get(path)
        return Page(resp.status, await resp.text(), str(resp.url), resp.headers)

    async def post(self, path: str, fields: dict[str, str], redirects: bool = True) -> Page:
        resp = await self.gw.client.post(path, data=fields, allow_redirects=redirects)
        return Page(resp.status, await resp.text(), str(resp.url), resp.headers)

    async def ask_code(self, account_id: str, channel: str = "") -> Page:
        """The sign-in form, filled in and sent; the page it leads to."""
        form = await self.get("/console/connexion")
        fields = {"csrf": csrf_of(form.html), "account_id": account_id, "channel": channel}
        return await self.post("/console/connexion", fields)

    async def last_code(self) -> str:
        """Deliver what is queued; the last code the test provider received."""
        await self.gw.drain()
        codes = self.gw.sink.codes()
        assert codes, "no code reached the provider"
        return codes[-1]

    async def type_code(self, page: Page, code: str, trust: bool = False) -> Page:
        fields = {"csrf": csrf_of(page.html), "code": code}
        if trust:
            fields["trust"] = "1"
        return await self.post("/console/code", fields)

    async def sign_in(self, account_id: str = "boss", trust: bool = False) -> Page:
        """Sign in with a code; the page the console lands on."""
        page = await self.ask_code(account_id)
        assert "/console/code" in page.url, (page.status, page.html)
        return await self.type_code(page, await self.last_code(), trust)

    async def form(self, path: str) -> tuple[Page, str]:
        """A page with a form, and its token."""
        page = await self.get(path)
        assert page.status == 200, (page.status, page.html[:2000])
        return page, csrf_of(page.html)

    async def confirm(self, path: str, fields: dict[str, str]) -> tuple[Page, Page]:
        """A sensitive form sent, then the step-up code the acting admin received typed
        on the page it led to: (the confirmation page, the page after the code)."""
        asked = await self.post(path, fields)
        assert asked.status == 200 and "Code de confirmation" in asked.html, asked.html[:3000]
        done = await self.post(path, {"csrf": fields["csrf"], "code": await self.last_code()})
        return asked, done

    def cookie(self, name: str) -> str | None:
        for morsel in self.gw.client.session.cookie_jar:
            if morsel.key == name:
                return morsel.value
        return None


# Distinct, realistic people for the pages and their screenshots (not everyone "Alice Martin").
PEOPLE = [
    {"account_id": "jdupont", "last_name": "Dupont", "first_name": "Jeanne",
     "email": "jeanne.dupont@mairie-luisant.fr", "services": ["GESTION DES CARRIERES"],
     "net_entreprises": True, "phone": "06 71 23 45 89"},
    {"account_id": "kbenali", "last_name": "Benali", "first_name": "Karim",
     "email": "karim.benali@mairie-luisant.fr", "services": ["PAIE"], "phone": "02 37 18 40 12",
     "phone_extension": "214"},
    {"account_id": "lmoreau", "last_name": "Moreau", "first_name": "Lucas",
     "email": "lucas.moreau@mairie-luisant.fr", "services": ["ETAT CIVIL"],
     "phone": "07 81 22 33 44"},
    {"account_id": "accueil", "last_name": "Mairie", "first_name": "Accueil",
     "email": "accueil@mairie-luisant.fr", "services": ["ETAT CIVIL"], "phone": "02 37 18 40 00"},
]  # fmt: skip


async def seed_people(gw: Gateway) -> None:
    """The admin `boss` becomes Sophie Lefèvre (GESTION DES CARRIERES); four agents join
    Mairie de Luisant, one of them a shared "Accueil" account the list flags."""
    changes = {
        "last_name": "Lefèvre",
        "first_name": "Sophie",
        "services": ["GESTION DES CARRIERES"],
    }
    assert (await as_operator(gw, "PATCH", "/accounts/boss", changes)).status == 200
    for person in PEOPLE:
        await add_account(gw, **person)
