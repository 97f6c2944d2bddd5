"""The Twilio simulator as a test peer, and gateways that it can call back.

`twilio_world` yields a `World`: one or more simulators on loopback ports, and
a `gateway(...)` builder whose gateway listens on a port chosen up front, so
its `[server] public_url` (where the simulator sends status callbacks and
fetches TwiML) is right from the start. Everything is closed after the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.embedded import free_port
from gateway.simulator.state import Call, Message
from gateway.simulator.twilio import TwilioSimulator
from tests.support.config import make_config
from tests.support.gateway import Gateway, start_gateway
from tests.support.httpfake import Stub
from tests.support.poll import poll

AUTH_TOKEN = "test-twilio-token-0123456789abcdef"
FROM = "+33159000000"


def unreachable_twilio(channels: tuple[str, ...] = ("sms", "voice")) -> dict[str, Any]:
    """A `[[providers]]` table of kind twilio whose API nobody serves (the discard
    port): enough for the gateway to take Twilio's callbacks."""
    return {
        "name": "twilio",
        "kind": "twilio",
        "channels": list(channels),
        "base_url": "http://127.0.0.1:9",
        "account_sid": "AC" + "0" * 32,
        "auth_token": "twilio-token-0123456789abcdef",
        "from_number": "+33612345678",
    }


@dataclass
class Sim:
    """One simulator and its URL."""

    twilio: TwilioSimulator
    url: str

    def provider(self, name: str = "twilio", **options: Any) -> dict[str, Any]:
        """A `[[providers]]` table of kind twilio pointed at this simulator."""
        table: dict[str, Any] = {
            "name": name,
            "kind": "twilio",
            "channels": ["sms", "voice"],
            "base_url": self.url,
            "account_sid": self.twilio.account_sid,
            "auth_token": self.twilio.auth_token,
            "from_number": FROM,
            "timeout_seconds": 2,
        }
        return table | options

    def calls_to(self, number: str) -> list[Call]:
        return [c for c in self.twilio.calls if c.to == number]

    def messages_to(self, number: str) -> list[Message]:
        return [m for m in self.twilio.messages if m.to == number]


@dataclass
class World:
    sims: list[Sim] = field(default_factory=list)
    clients: list[TestClient[web.Request, web.Application]] = field(default_factory=list)
    servers: list[TestServer] = field(default_factory=list)
    redis_url: str = ""

    async def simulator(self, index: int = 0, **kwargs: Any) -> Sim:
        """A new simulator on its own port (account SIDs differ per index)."""
        kwargs.setdefault("ring_seconds", 0.02)
        twilio = TwilioSimulator(f"AC{index:032x}", AUTH_TOKEN, **kwargs)
        server = TestServer(twilio.app(), host="127.0.0.1")
        await server.start_server()
        self.servers.append(server)
        sim = Sim(twilio, str(server.make_url("")).rstrip("/"))
        self.sims.append(sim)
        return sim

    async def gateway(self, *, run_worker: bool = True, **sections: Any) -> Gateway:
        """A gateway whose public_url is its own loopback address."""
        port = free_port()
        server_section = {"mode": "development", "public_url": f"http://127.0.0.1:{port}"}
        sections.setdefault("worker", {})
        sections["worker"] = {"claim_idle_seconds": 30, **sections["worker"]}
        config = make_config(self.redis_url, server=server_section, **sections)
        gw = await start_gateway(config, Stub(), run_worker=run_worker, port=port)
        self.clients.append(gw.client)
        return gw

    async def stop(self, gw: Gateway) -> None:
        """Stop one gateway (its worker finishes what it holds), as a restart would."""
        self.clients.remove(gw.client)
        await gw.client.close()

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for sim in self.sims:
            await sim.twilio.close()
        for server in self.servers:
            await server.close()


@contextlib.asynccontextmanager
async def twilio_world(redis_url: str) -> AsyncIterator[World]:
    world = World(redis_url=redis_url)
    try:
        yield world
    finally:
        await world.close()


async def status(gw: Gateway, challenge_id: str) -> dict[str, Any]:
    resp = await gw.get(f"/challenge/{challenge_id}")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def wait_delivery(gw: Gateway, challenge_id: str, state: str, within: float = 10.0) -> None:
    async def reached() -> bool:
        return bool((await status(gw, challenge_id))["delivery"] == state)

    await poll(reached, within=within, every=0.02, what=f"delivery {state!r}")


async def wait_calls(sim: Sim, number: str, count: int, within: float = 10.0) -> list[Call]:
    """Wait until `count` calls to `number` have ended (their callback was sent)."""

    def ended() -> bool:
        calls = sim.calls_to(number)
        return len(calls) >= count and all(c.callbacks for c in calls[:count])

    await poll(ended, within=within, what=f"{count} ended calls")
    return sim.calls_to(number)


async def settle(sim: Sim) -> None:
    await asyncio.wait_for(sim.twilio.settle(), 10)
