"""`python -m examples.login_frontend`: the example front end on EXAMPLE_HOST:EXAMPLE_PORT."""

from __future__ import annotations

import sys

from aiohttp import web

from examples.login_frontend.app import create_app
from examples.login_frontend.settings import Settings, SettingsError


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"login_frontend: {exc}", file=sys.stderr)
        return 2
    print(f"Example front end on http://{settings.host}:{settings.port}/ "
          f"(gateway: {settings.gateway_url})", flush=True)  # fmt: skip
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
