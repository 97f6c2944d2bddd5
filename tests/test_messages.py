"""SMS bodies and the `[templates]` configuration: one GSM-7 segment, always."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import BUILTIN_PURPOSES, Config, config_from_dict
from gateway.errors import ConfigError
from gateway.messages import BUILTIN, ENGLISH, FRENCH, SMS_SEGMENT, gsm7_septets, sms_text

PURPOSES = BUILTIN_PURPOSES


def config(**sections: Any) -> Config:
    raw = {"redis": {"url": "redis://127.0.0.1:1/0"}, "security": {"secret": "s" * 40}}
    return config_from_dict({**raw, **sections})


def test_french_sms_names_the_action_the_validity_and_never_share() -> None:
    text = sms_text(FRENCH, "041290", "account.create", 300)
    assert text == (
        "Code 041290 pour la création d'un compte. Valable 5 min. Ne le communiquez jamais."
    )
    assert sms_text(FRENCH, "041290", "login", 300).startswith("Code 041290 de connexion.")


def test_english_sms() -> None:
    assert sms_text(ENGLISH, "041290", "login", 600) == (
        "Code 041290 to sign in. Valid for 10 min. Never share it."
    )


def test_web_otp_line_is_last() -> None:
    text = sms_text(FRENCH, "041290", "login", 300, "login.example.org")
    assert text.endswith("\n\n@login.example.org #041290")
    assert text.splitlines()[-1] == "@login.example.org #041290"


@pytest.mark.parametrize("language", list(BUILTIN))
@pytest.mark.parametrize("purpose", PURPOSES)
def test_builtin_sms_fit_one_gsm7_segment_with_the_longest_code(
    language: str, purpose: str
) -> None:
    text = sms_text(BUILTIN[language], "0" * 10, purpose, 600, "a-long-login-host.example.org")
    septets = gsm7_septets(text)
    assert septets is not None and septets <= SMS_SEGMENT


def test_gsm7_counting() -> None:
    assert gsm7_septets("abc é à") == 7
    assert gsm7_septets("€[]") == 6  # the extension table costs two septets each
    assert gsm7_septets("ê") is None  # not GSM-7: the whole SMS would be UCS-2
    assert gsm7_septets("’") is None


def test_templates_override_a_builtin_language() -> None:
    cfg = config(templates={"fr-FR": {"sms": "Code {code} ({action}), {minutes} min.",
                                      "actions": {"rncps": "pour le RNCPS"}}})  # fmt: skip
    fr = cfg.templates["fr-FR"]
    assert sms_text(fr, "123456", "rncps", 300) == "Code 123456 (pour le RNCPS), 5 min."
    assert fr.intro == FRENCH.intro and fr.actions["login"] == FRENCH.actions["login"]


def test_a_new_language_needs_every_text() -> None:
    german = {
        "sms": "{code} ist Ihr Code {action}. {minutes} Min gueltig. Niemals weitergeben.",
        "intro": "Guten Tag, hier ist {service}.",
        "code": "Ihr Code {action} lautet:",
        "again": "Noch einmal:",
        "replay": "Zum Wiederholen druecken Sie 1.",
        "keypress": "Druecken Sie eine Taste, um Ihren Code {action} zu hoeren.",
        "goodbye": "Auf Wiederhoeren.",
        "expired": "Dieser Code ist nicht mehr gueltig.",
        "service": "Ihr Online-Dienst",
        "actions": {"default": "zur Bestaetigung"},
    }
    cfg = config(templates={"de-DE": german}, voice={"language": "de-DE"})
    assert cfg.templates["de-DE"].language == "de-DE"
    incomplete = {k: v for k, v in german.items() if k != "expired"}
    with pytest.raises(ConfigError) as info:
        config(templates={"de-DE": incomplete})
    assert info.value.key == "templates.de-DE.expired"


@pytest.mark.parametrize(
    ("templates", "key", "problem"),
    [
        ({"fr-FR": {"sms": "Votre code, valable {minutes} min."}}, "templates.fr-FR.sms", "{code}"),
        ({"fr-FR": {"sms": "{code} {account}"}}, "templates.fr-FR.sms", "{account}"),
        ({"fr-FR": {"intro": "Bonjour {code}"}}, "templates.fr-FR.intro", "{code}"),
        ({"fr-FR": {"sms": "{code} {"}}, "templates.fr-FR.sms", "placeholder"),
        ({"fr-FR": {"goodbye": ""}}, "templates.fr-FR.goodbye", "non-empty"),
        ({"fr-FR": {"colour": "bleu"}}, "templates.fr-FR.colour", "unknown"),
        ({"fr-FR": "text"}, "templates.fr-FR", "table"),
        ({"fr-FR": {"actions": {"login": 3}}}, "templates.fr-FR.actions", "purpose"),
        ({"fr-FR": {"sms": "{code} " + "x" * 160}}, "templates.fr-FR.sms", "segment"),
        ({"fr-FR": {"sms": "{code} pour être sûr"}}, "templates.fr-FR.sms", "GSM-7"),
    ],
)
def test_bad_templates_stop_start_up_naming_the_key(
    templates: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        config(templates=templates)
    assert info.value.key == key
    assert problem in str(info.value)


def test_sms_length_is_checked_for_every_purpose_and_the_web_otp_line() -> None:
    long_action = {"fr-FR": {"actions": {"rncps": "pour " + "l'accès " * 15}}}
    with pytest.raises(ConfigError) as info:
        config(templates=long_action)
    assert "'rncps'" in str(info.value)
    host = "a" * 60 + ".example.org"
    with pytest.raises(ConfigError):
        config(sms={"webotp_host": host}, otp={"code_length": 10})


def test_voice_and_sms_keys() -> None:
    cfg = config(voice={"language": "en-GB", "retry_delay_seconds": 0.5, "require_keypress": True},
                 sms={"fallback_to_voice": True, "webotp_host": "login.example.org"})  # fmt: skip
    assert cfg.voice.retry_delay_seconds == 0.5 and cfg.voice.require_keypress
    assert cfg.sms.fallback_to_voice and cfg.sms.webotp_host == "login.example.org"
    for section, values, key in (
        ("voice", {"language": "it-IT"}, "voice.language"),
        ("voice", {"retry_delay_seconds": -1}, "voice.retry_delay_seconds"),
        ("voice", {"repeat": 4}, "voice.repeat"),
        ("sms", {"webotp_host": "https://x"}, "sms.webotp_host"),
        ("sms", {"fallback": True}, "sms.fallback"),
    ):
        with pytest.raises(ConfigError) as info:
            config(**{section: values})
        assert info.value.key == key


@pytest.mark.parametrize("language", list(BUILTIN))
def test_every_builtin_purpose_has_its_own_words(language: str) -> None:
    templates = BUILTIN[language]
    for purpose in BUILTIN_PURPOSES:
        assert templates.action(purpose) != templates.actions["default"], purpose


def test_the_destructive_actions_code_says_so() -> None:
    assert sms_text(FRENCH, "041290", "account.manage", 300) == (
        "Code 041290 pour la gestion d'un compte. Valable 5 min. Ne le communiquez jamais."
    )
