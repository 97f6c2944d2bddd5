"""The house rules of `gateway/`, read from every module's imports with `ast`.

Floors, lowest first; a module imports only from its own floor or below:

0. core: `CORE` below (configuration, errors, Redis key names, crypto, phones,
   clock, logs, metrics, the Redis client, the Lua loader, the embedded Redis, the provider
   interface `gateway.provider`, the message texts `gateway.config` reads, the
   stream consumer both wings' queues run, the event loop choice and the
   supervisor of `--processes N`).
1. two wings side by side, `gateway.otp` (the code engine) and
   `gateway.accounts` (the account store), plus `gateway.simulator` (a dev
   tool that needs only core).
2. `gateway.runtime`: the one composition root. It imports nothing from web.
3. `gateway.web`: the HTTP layer. Route modules (those with a `setup`) share
   helpers through `web.request`, `web.caller`, `web.body`, `web.auth`,
   `web.middleware`, never import one another. `gateway.web.console` (the
   admin console's pages) is one route module in a package of its own: its
   files import one another and web's helpers; no other module of web
   imports it (the app does, as it sets up every route module).
4. entry points (`ENTRY_POINTS`): the only modules above web; nothing but
   another entry point imports one. `worker_main` is one: its own `/metrics`
   uses `web.auth` and `web.ops` as the gateway's does.

The wings meet only through named ports (`PORTS`), kept short:
- the engine reads accounts through `gateway.accounts` itself (the record and
  the store it re-exports), never its modules;
- the accounts wing uses `gateway.otp.tokens` (step-up grants and trusted
  devices, which `verify` issues and the admin rules check and revoke) and
  `gateway.otp.challenges` (a phone change is proven by a code sent to the
  new number).

Providers (`providers/*`, separate packages in spirit) import only the
provider interface and errors, and a provider that is a package its own
modules. The one exception: our SMSC (`gateway.simulator.smpp`) speaks the
SMPP provider's wire format through its codec (`SIMULATOR_WIRE`).
`TODO_PORTS` and `TODO_PROVIDERS` list what does not hold yet, explicitly,
so that the change that fixes one also deletes its line: a listed exception
that is no longer used fails the test too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CORE = frozenset({
    "gateway", "gateway.apidoc", "gateway.clock", "gateway.config", "gateway.config.model",
    "gateway.config.redis", "gateway.config.sections", "gateway.config.table", "gateway.crypto",
    "gateway.cluster", "gateway.datadir", "gateway.datastore", "gateway.embedded", "gateway.errors",
    "gateway.keycheck", "gateway.keys", "gateway.listen", "gateway.logs", "gateway.luascripts",
    "gateway.messages", "gateway.metrics", "gateway.migrate", "gateway.phones", "gateway.provider",
    "gateway.streams", "gateway.loops", "gateway.supervisor",
})  # fmt: skip
ENTRY_POINTS = frozenset({
    "gateway.__main__", "gateway.app", "gateway.cli", "gateway.worker_main",
    "gateway.rotate",  # `python -m gateway.rotate`, the operators' documented command
})  # fmt: skip
FLOOR = {"core": 0, "otp": 1, "accounts": 1, "simulator": 1, "runtime": 2, "web": 3, "entry": 4}
WEB_HELPERS = frozenset(
    f"gateway.web.{name}" for name in ("request", "caller", "body", "auth", "middleware")
)
CONSOLE = "gateway.web.console"  # a route module in files: see the docstring, floor 3

PORTS: dict[tuple[str, str], frozenset[str]] = {
    ("otp", "accounts"): frozenset({"gateway.accounts"}),
    ("accounts", "otp"): frozenset({"gateway.otp.tokens", "gateway.otp.challenges"}),
}
TODO_PORTS: dict[str, frozenset[str]] = {}
PROVIDER_INTERFACE = frozenset({"gateway.provider", "gateway.errors"})
TODO_PROVIDERS: dict[str, frozenset[str]] = {}
SIMULATOR_WIRE: dict[str, frozenset[str]] = {
    "gateway.simulator.smpp": frozenset({
        "providers.smpp.pdu", "providers.smpp.text", "providers.smpp.receipts",
        "providers.smpp.session",
    }),
}  # fmt: skip


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, tuple[str, bool]]:
    """Every module of `gateway` and `providers`: its source, and whether it is a package."""
    paths = [*ROOT.glob("gateway/**/*.py"), *ROOT.glob("providers/**/*.py")]
    return {module_of(p): (p.read_text(encoding="utf-8"), p.name == "__init__.py") for p in paths}


def imports(module: str, source: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The `gateway`/`providers` modules `source` imports (`from pkg import mod` is `pkg.mod`)."""
    known = set(known)
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m.split(".")[0] in ("gateway", "providers")}


def room(module: str) -> str:
    if module in ENTRY_POINTS:
        return "entry"
    if module in CORE:
        return "core"
    if module == "gateway.runtime":
        return "runtime"
    for name in ("web", "otp", "accounts", "simulator"):
        if module == f"gateway.{name}" or module.startswith(f"gateway.{name}."):
            return name
    if module.split(".")[0] == "providers":
        return "providers"
    raise AssertionError(f"{module}: in no room; add it to one in tests/test_layout.py")


def violation(importer: str, target: str) -> str | None:
    """Why `importer` may not import `target`, or None when it may."""
    source, dest = room(importer), room(target)
    if source == "providers":
        allowed = PROVIDER_INTERFACE | TODO_PROVIDERS.get(importer, frozenset())
        if target in allowed or importer.split(".")[:2] == target.split(".")[:2]:
            return None  # the interface, or a module of its own package
        return "a provider imports only gateway.provider, errors"
    if dest == "providers":
        if target in SIMULATOR_WIRE.get(importer, frozenset()):
            return None
        return "providers are loaded through the otp_gateway.providers entry points"
    if dest == "entry" and source != "entry":
        return "only an entry point imports an entry point"
    if FLOOR[dest] > FLOOR[source]:
        return f"{source} (floor {FLOOR[source]}) imports {dest} (floor {FLOOR[dest]})"
    if FLOOR[dest] == FLOOR[source] and source != dest:
        ports = PORTS.get((source, dest), frozenset()) | TODO_PORTS.get(importer, frozenset())
        return None if target in ports else f"{source} reaches {dest} outside its ports"
    if source == dest == "web" and _within(CONSOLE, importer) and _within(CONSOLE, target):
        return None
    if source == dest == "web" and not {importer, target} & WEB_HELPERS and importer != target:
        return "route modules share helpers through web.request, never import each other"
    return None


def _within(package: str, module: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def violations(modules: dict[str, tuple[str, bool]]) -> list[str]:
    found = []
    for module, (source, is_package) in sorted(modules.items()):
        for target in sorted(imports(module, source, is_package, modules)):
            if target in modules and (why := violation(module, target)):
                found.append(f"{module} -> {target}: {why}")
    return found


def test_every_import_follows_the_house_rules() -> None:
    assert violations(sources()) == []


def test_the_known_exceptions_are_still_needed() -> None:
    """A TODO line whose import is gone must go too: the lists only shrink."""
    modules = sources()
    used = {m: imports(m, *modules[m], modules) for m in modules}
    stale = {
        f"{module} -> {target}"
        for todo in (TODO_PORTS, TODO_PROVIDERS)
        for module, targets in todo.items()
        for target in targets
        if target not in used.get(module, set())
    }
    assert stale == set()


def test_the_rules_catch_bad_imports() -> None:
    """Synthetic modules over the real tree: each bad import is refused."""
    real = sources()

    def bad(module: str, line: str) -> list[str]:
        return violations({**real, module: (line + "\n", False)})

    assert bad("gateway.config", "from gateway.web.request import SERVICES")  # core -> web
    assert bad("gateway.runtime", "from gateway.web.auth import ApiKeys")  # runtime -> web
    assert bad("gateway.keys", "from gateway.otp import challenges")  # core -> wing
    assert bad("gateway.otp.queue", "from gateway.accounts.store import AccountStore")
    assert bad("gateway.accounts.sweep", "import gateway.otp.queue")  # not a port
    assert bad("gateway.accounts.store", "from gateway import runtime")  # wing -> runtime
    assert bad("gateway.web.totp", "from gateway.web.otp import verify")  # route -> route
    assert bad("gateway.web.otp", "from gateway.web.console import guard")  # -> the console
    assert bad("gateway.web.console.guard", "from gateway.web.otp import verify")
    assert bad("gateway.web.otp", "from gateway.app import create_app")  # -> entry point
    assert bad("providers.http", "from gateway.otp.voice import call_twiml")
    assert bad("gateway.accounts.store", "from ..otp import queue")  # relative, too
    assert bad("gateway.otp.dispatch", "from providers.console import ConsoleProvider")
    assert bad("providers.smpp.session", "from providers.twilio import twilio_signature")
    assert bad("gateway.simulator.twilio", "from providers.smpp import pdu")
    # ... and what the rules allow is allowed.
    assert not bad("gateway.otp.challenges", "from gateway.accounts import AccountStore")
    assert not bad("gateway.accounts.policy", "from gateway.otp.tokens import StepUps")
    assert not bad("gateway.web.totp", "from gateway.web.request import services")
    assert not bad("gateway.web.console.signin", "from gateway.web.console import guard")
    assert not bad("gateway.cli", "from gateway import app, worker_main")
    assert not bad("providers.smpp.provider", "from providers.smpp import pdu")
