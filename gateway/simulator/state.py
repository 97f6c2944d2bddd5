"""What the Twilio simulator keeps: the messages and calls it took, and how
each number behaves (a script per number, or outcomes drawn from a mix).

Voice outcomes: `answer` (a person picks up, presses a key when asked to and
listens), `replay` (the same, and presses 1 once to hear the code again),
`no_press` (a person picks up and listens, but never presses a key: hears the
code only when the call reads it without a key press), `no_answer`, `busy`,
`machine` (voicemail or an automatic switchboard: it hears what is played but
never presses a key), `fail` (the call fails) and `reject` (the API refuses the
number: HTTP 400).
SMS outcomes: `deliver`, `undelivered`, `failed` and `reject`.
"""

from __future__ import annotations

import random
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

VOICE_OUTCOMES = ("answer", "replay", "no_press", "no_answer", "busy", "machine", "fail", "reject")
SMS_OUTCOMES = ("deliver", "undelivered", "failed", "reject")


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class Heard:
    """What the far end of a call heard: every text, and each run of digits read."""

    texts: list[str] = field(default_factory=list)
    readings: list[str] = field(default_factory=list)
    pressed: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)  # TwiML URLs fetched
    _run: str = ""

    def say(self, text: str) -> None:
        self.texts.append(text)
        if len(text) == 1 and text.isdigit():
            self._run += text
        else:
            self.end_reading()

    def end_reading(self) -> None:
        if self._run:
            self.readings.append(self._run)
        self._run = ""

    @property
    def code(self) -> str | None:
        """The code heard (the first reading), if any."""
        return self.readings[0] if self.readings else None


@dataclass
class Message:
    """One Messages.json request the simulator accepted."""

    sid: str
    to: str
    sender: str
    body: str
    status_callback: str
    outcome: str
    form: list[tuple[str, str]]
    status: str = "queued"
    callbacks: int = 0
    received_at: float = field(default_factory=time.time)  # unix seconds

    def view(self) -> dict[str, Any]:
        return {
            "sid": self.sid, "to": self.to, "from": self.sender, "body": self.body,
            "status": self.status, "outcome": self.outcome, "callbacks": self.callbacks,
        }  # fmt: skip


@dataclass
class Call:
    """One Calls.json request the simulator accepted, and how it went."""

    sid: str
    to: str
    sender: str
    twiml: str
    status_callback: str
    outcome: str
    form: list[tuple[str, str]]
    machine_detection: bool = False
    send_digits: str = ""
    status: str = "queued"
    answered_by: str = ""
    heard: Heard = field(default_factory=Heard)
    callbacks: int = 0
    received_at: float = field(default_factory=time.time)  # unix seconds

    def view(self) -> dict[str, Any]:
        return {
            "sid": self.sid, "to": self.to, "from": self.sender, "status": self.status,
            "outcome": self.outcome, "answered_by": self.answered_by,
            "machine_detection": self.machine_detection, "send_digits": self.send_digits,
            "heard": self.heard.readings, "pressed": self.heard.pressed,
            "texts": self.heard.texts, "callbacks": self.callbacks,
        }  # fmt: skip


@dataclass(frozen=True)
class Reached:
    """A code that reached a person: an SMS delivered, or a call where a person heard it."""

    kind: str  # "sms" | "voice"
    to: str
    code: str
    status_callback: str
    received_at: float  # when the API took the message or call (unix seconds)
    reached_at: float

    def view(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "to": self.to, "code": self.code,
            "status_callback": self.status_callback,
            "received_at": self.received_at, "reached_at": self.reached_at,
        }  # fmt: skip


@dataclass
class Mix:
    """Outcomes drawn at random: by default for every call and every SMS,
    independently; with `first_only`, for the first call and the first SMS to
    each number only, later ones then answered and delivered (the old model).

    Call shares: `no_answer`, `busy`, `machine`, `no_press` (a person who
    answers but never presses a key); the rest are answered by a person who
    presses. `sms_undelivered`: the share of undelivered SMS.
    """

    no_answer: float = 0.0
    busy: float = 0.0
    machine: float = 0.0
    no_press: float = 0.0
    sms_undelivered: float = 0.0
    first_only: bool = False
    rng: random.Random = field(default_factory=random.Random)

    def call(self) -> str:
        draw = self.rng.random()
        for outcome, share in (
            ("no_answer", self.no_answer),
            ("busy", self.busy),
            ("machine", self.machine),
            ("no_press", self.no_press),
        ):
            if draw < share:
                return outcome
            draw -= share
        return "answer"

    def sms(self) -> str:
        return "undelivered" if self.rng.random() < self.sms_undelivered else "deliver"


@dataclass
class Numbers:
    """Per-number scripts (consumed in order), else the mix, else the happy path."""

    voice: dict[str, deque[str]] = field(default_factory=dict)
    sms: dict[str, deque[str]] = field(default_factory=dict)
    mix: Mix | None = None
    called: set[str] = field(default_factory=set)
    texted: set[str] = field(default_factory=set)

    def script(self, number: str, voice: list[str], sms: list[str]) -> None:
        self.voice[number] = deque(voice)
        self.sms[number] = deque(sms)

    def next_call(self, number: str) -> str:
        first = number not in self.called
        self.called.add(number)
        scripted = self.voice.get(number)
        if scripted:
            return scripted.popleft()
        if self.mix is None or (self.mix.first_only and not first):
            return "answer"
        return self.mix.call()

    def next_sms(self, number: str) -> str:
        first = number not in self.texted
        self.texted.add(number)
        scripted = self.sms.get(number)
        if scripted:
            return scripted.popleft()
        if self.mix is None or (self.mix.first_only and not first):
            return "deliver"
        return self.mix.sms()
