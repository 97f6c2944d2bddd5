"""A send's limits on a Redis Cluster: paid in their own slot, refunded on refusal.

On one Redis instance `create.lua` and `resend.lua` spend the send limits
(number, country, establishment, global, ip) in the same atomic step as the
challenge they pay for. On a cluster those limits live in the `{rl}` slot and
the challenge in the account's, and no script may span two slots, so a send
runs as three single-slot steps (docs/architecture.md, "Hash slots"):

1. the account's script in mode `check`: every check, no write; it returns
   the number tag, region and establishment the limits are named from;
2. `limits.lua` spends them all or none (`Spend`), in the `{rl}` slot;
3. the account's script in mode `spent`: every check again, then the write.
   When it refuses (its state changed since step 1), `refund.lua` gives back
   exactly what step 2 spent. When its reply is lost (it may have run), nothing
   is refunded: a limit unit spent for nothing is the lesser harm.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway import keys
from gateway.luascripts import Script

Reply = list[Any]


@dataclass(frozen=True, slots=True)
class Spend:
    """The limits one send pays: its number's, country's, establishment's,
    the global one and, when the caller gave one, its client address's."""

    number_tag: str
    region: str
    establishment: str  # '' for none
    ip_key: str
    has_ip: bool

    def keys(self) -> list[str]:
        return [
            keys.number_rate(self.number_tag),
            keys.country_rate(self.region),
            keys.GLOBAL_RATE,
            self.ip_key,
        ]

    def args(self) -> list[str]:
        return [self.number_tag, self.establishment, "1" if self.has_ip else "0"]


async def paid(
    limits: Script, refund: Script, spend: Spend, step: Callable[[], Awaitable[Reply]]
) -> Reply:
    """Spend `spend` (`limits.lua`), then run `step`, the account's write; refund
    when it refuses. A refusal of the limits is returned as `{'rate', ...}`."""
    spent: Reply = await limits(keys=spend.keys(), args=spend.args())
    if spent[0] != b"ok":
        return spent
    reply = await step()
    if reply[0] != b"ok":
        await refund(keys=spend.keys(), args=spend.args())
    return reply
