"""The OTP engine's Lua scripts (gateway/lua), loaded through `gateway.luascripts`."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.luascripts import Lua, Script


@dataclass(frozen=True, slots=True)
class Scripts:
    create: Script
    verify: Script
    resend: Script
    sent: Script
    drop: Script  # a job ended unsent: dropped or dead-lettered (gateway/otp/queue.py)
    job: Script
    status: Script  # delivery events (gateway/otp/delivery.py)
    retry: Script  # calling again (gateway/otp/delivery.py)
    limits: Script  # a Redis Cluster's send limits, paid apart (gateway/otp/spending.py)
    refund: Script  # and given back when the account's step refuses
    split: bool  # on a Redis Cluster: create and resend run as single-slot steps

    @classmethod
    def load(cls, lua: Lua) -> Scripts:
        return cls(
            create=lua.script("create"),
            verify=lua.script("verify"),
            resend=lua.script("resend"),
            sent=lua.script("sent"),
            drop=lua.script("drop"),
            job=lua.script("job"),
            status=lua.script("status"),
            retry=lua.script("retry"),
            limits=lua.script("limits"),
            refund=lua.script("refund"),
            split=lua.split,
        )
