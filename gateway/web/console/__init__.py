"""The admin console (`/console/`): French, server-rendered pages over the same services.

A front end of the gateway's own services, like the JSON routes beside it:
each page calls what the matching API route calls (through `web.request` and
`web.caller`), as the same kind of caller, so the rules, limits and audit are
the API's. Nothing here talks to Redis but the console's own session store.

- `guard`: cookies, sessions, CSRF, the caller, errors as French pages;
- `signin`: sign-in by code (`/challenge` + `/verify`), sign-out;
- `accounts`: the account list and an account's page with its history;
- `history`: the establishment's history ("Voir l'historique");
- `actions`: renew, suspend, reactivate;
- `manage`: create, modify rights, delete, revoke trusted devices;
- `numbers`: switch an account's number, blank an establishment's (deployment day);
- `mine`, `mine_app`: a user's own pages, "Mon compte" (number, trusted
  devices, authenticator app), over the self-service routes' services;
- `stepup`: a sensitive action's step-up code, asked for and typed inline;
- `forms`: the account forms read and checked, each error in French by its field;
- `pages`: Jinja2 rendering and the headers every page carries;
- `sessions`: the session store (its key names are in `gateway/keys.py`);
- `texts`, `labels`: the French words.

`[console] enabled = false` leaves every `/console` path a 404.
"""

from __future__ import annotations

from aiohttp import web

from gateway.config import Config
from gateway.web.console import (
    accounts,
    actions,
    history,
    manage,
    mine,
    mine_app,
    numbers,
    signin,
    stepup,
    texts,
)
from gateway.web.console.guard import (
    MINE,
    SESSION_COOKIE,
    SIGN_IN,
    error_page,
    home_of,
    page,
    store,
)
from gateway.web.console.pages import HERE, PAGE_HEADERS, PAGES, environment, redirect


async def to_home(request: web.Request) -> web.StreamResponse:
    """`/console` (no slash): to `/console/`."""
    return redirect("/console/")


@page
async def home(request: web.Request) -> web.StreamResponse:
    """`/console/`: one's own space when signed in (the account list, or "Mon compte"),
    else the sign-in page."""
    session = await store(request).get(request.cookies.get(SESSION_COOKIE))
    signed = session is not None and session.stage == "in"
    return redirect(home_of(session.role) if session is not None and signed else SIGN_IN)


async def not_found(request: web.Request) -> web.StreamResponse:
    """Any other `/console` path: a French 404 page, or 405 where the path exists for
    other methods (a GET of a POST-only action), with its `Allow`."""
    allowed = await _allowed(request)
    if allowed:
        response = error_page(
            request, 405, texts.ERRORS["method_not_allowed"], "Action impossible par ce lien"
        )
        response.headers["Allow"] = ", ".join(sorted(allowed))
        return response
    return error_page(
        request, 404, "Cette page n'existe pas. Revenez à l'accueil de la console.",
        "Page introuvable",
    )  # fmt: skip


async def _allowed(request: web.Request) -> set[str]:
    """The methods the console's other routes take on this path (aiohttp's own resolve)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is request.match_info.route.resource:
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    return allowed


async def stylesheet(request: web.Request) -> web.StreamResponse:
    """The console's one stylesheet, shipped with the package."""
    response = web.FileResponse(HERE / "static" / "console.css")
    response.headers.update(PAGE_HEADERS)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


def _user_routes(router: web.UrlDispatcher) -> None:
    """ "Mon compte": a user's own pages."""
    router.add_get(MINE, mine.home, allow_head=False)
    router.add_post(mine.DEVICES, mine.revoke_devices)
    router.add_get(mine.PHONE, mine.phone_form, allow_head=False)
    router.add_post(mine.PHONE, mine.start_phone_change)
    router.add_get(mine.PHONE_CODE, mine.phone_code_form, allow_head=False)
    router.add_post(mine.PHONE_CODE, mine.finish_phone_change)
    router.add_post(mine.PHONE + "/renvoyer", mine.resend_phone_code)
    router.add_get(mine_app.APP, mine_app.app_page, allow_head=False)
    router.add_post(mine_app.APP, mine_app.enrol)
    router.add_get(mine_app.QR, mine_app.qr_image, allow_head=False)
    router.add_post(mine_app.CONFIRM, mine_app.confirm)
    router.add_post(mine_app.REMOVE, mine_app.remove)


def setup(app: web.Application, config: Config) -> None:
    if not config.console.enabled:
        return
    app[PAGES] = environment()
    router = app.router
    router.add_get("/console", to_home, allow_head=False)
    router.add_get("/console/", home, allow_head=False)
    router.add_get("/console/console.css", stylesheet, allow_head=False)
    router.add_get(SIGN_IN, signin.sign_in_form, allow_head=False)
    router.add_post(SIGN_IN, signin.sign_in)
    router.add_get("/console/code", signin.code_form, allow_head=False)
    router.add_post("/console/code", signin.check_code)
    router.add_post("/console/deconnexion", signin.sign_out)
    router.add_get("/console/comptes", accounts.account_list_page, allow_head=False)
    router.add_get("/console/comptes/{account_id}", accounts.account_page, allow_head=False)
    account = "/console/comptes/{account_id}"
    router.add_post(account + "/renouveler", actions.renew)
    router.add_post(account + "/suspendre", actions.suspend)
    router.add_post(account + "/reactiver", actions.reactivate)
    router.add_get(manage.CREATE, manage.create_form, allow_head=False)
    router.add_post(manage.CREATE, manage.create)
    router.add_get(account + "/modifier", manage.edit_form, allow_head=False)
    router.add_post(account + "/modifier", manage.edit)
    router.add_get(account + "/supprimer", manage.delete_form, allow_head=False)
    router.add_post(account + "/supprimer", manage.delete)
    router.add_post(account + "/postes/retirer", manage.revoke_devices)
    router.add_get(account + "/telephone", numbers.phone_form, allow_head=False)
    router.add_post(account + "/telephone", numbers.switch)
    router.add_get(numbers.BLANK, numbers.blank_form, allow_head=False)
    router.add_post(numbers.BLANK, numbers.blank)
    router.add_post(stepup.RESEND, manage.resend)
    router.add_post("/console/code/renvoyer", signin.resend)
    router.add_get(history.PATH, history.establishment_history, allow_head=False)
    _user_routes(router)
    router.add_route("*", "/console/{tail:.*}", page(not_found))
