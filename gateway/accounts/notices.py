"""The e-mails the accounts features send, in French (default) or English.

- **Reminders** to an establishment's active admins: the accounts whose
  expiry is near, to renew or delete.
- **Change notices** to an account's own address (and, for an e-mail change,
  the old one too): a new phone number, e-mail address or authenticator app,
  announced on a channel independent of the one that changed (NIST SP 800-63B
  6.1.2.3). A notice never shows the number.

Every mail has a text part and an HTML part; every value put in HTML is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from gateway.accounts.mail import Mail, MailQueue
from gateway.accounts.records import Account

_BY: Final = {
    "fr": {
        "self": "vous-même",
        "admin": "un administrateur de votre établissement",
        "operator": "l'assistance",
        "system": "le service",
    },
    "en": {
        "self": "yourself",
        "admin": "an administrator of your establishment",
        "operator": "the support team",
        "system": "the service",
    },
}

_EVENTS: Final = {
    "fr": {
        "phone": "Le numéro de téléphone de votre compte {account} a été modifié le {at} par {by}.",
        "email": (
            "L'adresse électronique de votre compte {account} a été modifiée le {at} par {by}. "
            "Ce message est envoyé à l'ancienne et à la nouvelle adresse."
        ),
        "totp_added": (
            "Une application d'authentification a été associée à votre compte {account} "
            "le {at} par {by}."
        ),
        "totp_removed": (
            "L'application d'authentification de votre compte {account} a été retirée "
            "le {at} par {by}."
        ),
    },
    "en": {
        "phone": "The phone number of your account {account} was changed on {at} by {by}.",
        "email": (
            "The e-mail address of your account {account} was changed on {at} by {by}. "
            "This message goes to the old and the new address."
        ),
        "totp_added": "An authenticator app was added to your account {account} on {at} by {by}.",
        "totp_removed": (
            "The authenticator app of your account {account} was removed on {at} by {by}."
        ),
    },
}

_TEXTS: Final = {
    "fr": {
        "notice_subject": "Modification de votre compte {account}",
        "hello": "Bonjour {name},",
        "not_you": (
            "Si vous n'êtes pas à l'origine de cette modification, prévenez sans attendre "
            "l'administrateur de votre établissement."
        ),
        "reminder_subject": "Comptes à renouveler : {establishment}",
        "reminder_intro": "Les comptes suivants de {establishment} arrivent à expiration :",
        "reminder_line": "{name} ({account}) : expire le {date}, dans {days} jour(s)",
        "reminder_do": (
            "Renouvelez-les depuis la gestion des comptes, ou supprimez ceux qui ne servent plus. "
            "Un compte expiré ne peut plus se connecter tant qu'un administrateur ne l'a pas "
            "renouvelé."
        ),
        "single_admin": (
            "Votre établissement n'a qu'un administrateur actif : nous vous recommandons "
            "d'en désigner un second."
        ),
        "footer": "Message automatique, merci de ne pas y répondre.",
        "datetime": "%d/%m/%Y à %H:%M UTC",
        "date": "%d/%m/%Y",
    },
    "en": {
        "notice_subject": "Change to your account {account}",
        "hello": "Hello {name},",
        "not_you": (
            "If you did not make this change, tell your establishment's administrator at once."
        ),
        "reminder_subject": "Accounts to renew: {establishment}",
        "reminder_intro": "These accounts of {establishment} expire soon:",
        "reminder_line": "{name} ({account}): expires on {date}, in {days} day(s)",
        "reminder_do": (
            "Renew them from the account management page, or delete those no longer used. "
            "An expired account cannot sign in until an administrator renews it."
        ),
        "single_admin": (
            "Your establishment has a single active administrator: we recommend appointing "
            "a second one."
        ),
        "footer": "Automated message, please do not reply.",
        "datetime": "%Y-%m-%d %H:%M UTC",
        "date": "%Y-%m-%d",
    },
}


@dataclass(frozen=True, slots=True)
class Due:
    """An account to list in a reminder, and how many whole days it has left."""

    account: Account
    days_left: int


def _name(account: Account) -> str:
    return f"{account.first_name} {account.last_name}"


def _html(
    head: Sequence[str], items: Sequence[str] = (), tail: Sequence[str] = (), footer: str = ""
) -> str:
    def paragraphs(texts: Sequence[str]) -> str:
        return "".join(f"<p>{html.escape(p)}</p>" for p in texts)

    body = paragraphs(head)
    if items:
        body += "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"
    body += paragraphs(tail) + f'<p style="color:#666">{html.escape(footer)}</p>'
    return f'<!DOCTYPE html><html><body style="font-family:sans-serif">{body}</body></html>'


class Notifier:
    """Builds the accounts e-mails and puts them in the outbox."""

    def __init__(self, mail: MailQueue, language: str) -> None:
        self.mail = mail
        self.lang = language if language in _TEXTS else "fr"

    async def changed(
        self, account: Account, event: str, by: str, at: datetime, old_email: str | None = None
    ) -> None:
        """Announce `event` (phone | email | totp_added | totp_removed) to the account."""
        t = _TEXTS[self.lang]
        sentence = _EVENTS[self.lang][event].format(
            account=account.account_id, at=at.strftime(t["datetime"]), by=_BY[self.lang][by]
        )
        paragraphs = [t["hello"].format(name=_name(account)), sentence, t["not_you"]]
        to = tuple(dict.fromkeys(e for e in (account.email, old_email) if e))
        await self.mail.enqueue(
            Mail(
                to=to,
                subject=t["notice_subject"].format(account=account.account_id),
                text="\n\n".join([*paragraphs, t["footer"]]) + "\n",
                html=_html(paragraphs, footer=t["footer"]),
                kind="notice",
            )
        )

    def reminder(
        self, admin: Account, establishment: str, due: Sequence[Due], single_admin: bool
    ) -> Mail:
        """The reminder for one admin, listing the accounts to renew."""
        t = _TEXTS[self.lang]
        lines = [
            t["reminder_line"].format(
                name=_name(d.account),
                account=d.account.account_id,
                date=d.account.expires_at.strftime(t["date"]),
                days=d.days_left,
            )
            for d in due
        ]
        head = [
            t["hello"].format(name=_name(admin)),
            t["reminder_intro"].format(establishment=establishment),
        ]
        tail = [t["reminder_do"], *([t["single_admin"]] if single_admin else [])]
        text = "\n\n".join(head) + "\n\n" + "\n".join(f"- {line}" for line in lines)
        text += "\n\n" + "\n\n".join([*tail, t["footer"]]) + "\n"
        return Mail(
            to=(admin.email,),
            subject=t["reminder_subject"].format(establishment=establishment),
            text=text,
            html=_html(head, lines, tail, t["footer"]),
            kind="reminder",
        )
