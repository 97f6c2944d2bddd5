"""Redis key names of the accounts features (admins, sweep, mail, TOTP, phone changes).

They extend `gateway.keys` (same prefix, same rules): anything that concerns
one account is keyed by its keyed tag (`Keyring.tag("account", id)`), never by
a number; an establishment is keyed by its tag too.
"""

from __future__ import annotations

from gateway.keys import PREFIX

SWEEP_LOCK = PREFIX + "sweep:lock"  # string: the token of the sweeper running now
SWEEP_LAST = PREFIX + "sweep:last"  # string: when the last sweep finished (ms)
MAIL_STREAM = PREFIX + "mail"  # stream: the e-mail outbox
MAIL_GROUP = "mailers"  # its consumer group
MAIL_DEAD = PREFIX + "mail:dead"  # mails that could not be delivered


def establishment_history(establishment_tag: str) -> str:
    """Stream: audit entries of every account of one establishment."""
    return f"{PREFIX}eh:{establishment_tag}"


def totp(account_tag: str) -> str:
    """Hash: an account's authenticator app (sealed secrets, last used step)."""
    return f"{PREFIX}totp:{account_tag}"


def reminders(account_tag: str) -> str:
    """Hash: reminders already sent, one field per threshold and expiry."""
    return f"{PREFIX}rem:{account_tag}"


def phone_change(challenge_id: str) -> str:
    """Hash: a number change waiting for the code sent to the new number."""
    return f"{PREFIX}pc:{challenge_id}"
