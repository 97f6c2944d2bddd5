"""The text of each send: short, in the configured language, code included."""

from __future__ import annotations

_ACTIONS = {
    "fr": {
        "login": "connexion",
        "account.create": "création d'un compte",
        "contact.update": "modification de vos coordonnées",
        "rncps": "accès au service protégé",
    },
    "en": {
        "login": "sign-in",
        "account.create": "account creation",
        "contact.update": "contact details change",
        "rncps": "protected service access",
    },
}

_SMS = {
    "fr": "Code {code} pour {action}. Valable {minutes} min. Ne le communiquez jamais.",
    "en": "Code {code} for {action}. Valid {minutes} min. Never share it.",
}

_VOICE = {
    "fr": "Votre code pour {action} est : {digits}. Je répète : {digits}.",
    "en": "Your code for {action} is: {digits}. Again: {digits}.",
}


def _lang(language: str) -> str:
    short = language.split("-")[0].lower()
    return short if short in _SMS else "fr"


def render(channel: str, code: str, purpose: str, language: str, ttl_seconds: int) -> str:
    """The message for one send. Voice reads the digits one at a time."""
    lang = _lang(language)
    action = _ACTIONS[lang].get(purpose, purpose)
    if channel == "voice":
        return _VOICE[lang].format(action=action, digits=", ".join(code))
    return _SMS[lang].format(code=code, action=action, minutes=max(1, ttl_seconds // 60))
