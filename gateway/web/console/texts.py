"""The console's French sentences for the gateway's error codes.

A page never shows the API's English message: each code a console call can
meet has its sentence here, and anything else gets the generic one.
"""

from __future__ import annotations

from typing import Final

from gateway.errors import GatewayError, RateLimited

GENERIC: Final = (
    "La demande n'a pas pu aboutir. Recommencez ; si cela persiste, contactez le support."
)
ERRORS: Final = {
    "invalid_request": "La saisie est invalide : vérifiez les champs et recommencez.",
    "unsupported_media_type": "Ce formulaire n'a pas été envoyé correctement. Rechargez la page.",
    "payload_too_large": "Le formulaire envoyé est trop volumineux.",
    "request_timeout": "Le formulaire n'est pas arrivé à temps. Recommencez.",
    "unknown_account": (
        "Aucun code ne peut être envoyé pour cet identifiant. Vérifiez-le, "
        "ou adressez-vous à l'administrateur de votre établissement."
    ),
    "not_found": "Cette page n'existe pas, ou elle n'est pas de votre établissement.",
    "account_expired": (
        "Ce compte a expiré. Un autre administrateur de l'établissement, "
        "ou le support, peut le renouveler."
    ),
    "account_suspended": "Ce compte est suspendu. Adressez-vous au support.",
    "phone_required": (
        "Aucun numéro de téléphone n'est enregistré pour ce compte : "
        "renseignez-le d'abord depuis votre espace, ou demandez-le au support."
    ),
    "channel_unavailable": (
        "Ce mode d'envoi n'est pas possible pour ce numéro (un SMS ne part pas vers "
        "une ligne fixe) : choisissez l'appel vocal."
    ),
    "invalid_code": "Code incorrect.",
    "too_many_attempts": (
        "Trop de codes incorrects : ce code n'est plus valable. Demandez-en un autre."
    ),
    "expired": "Ce code a expiré (il est valable 5 minutes). Demandez-en un autre.",
    "already_used": "Ce code a déjà servi. Demandez-en un autre.",
    "challenge_not_found": "Ce code n'est plus valable. Demandez-en un autre.",
    "forbidden": "Cette action ne vous est pas permise.",
    "last_admin": (
        "C'est le dernier administrateur actif de l'établissement : désignez-en "
        "un autre avant de le suspendre, de le supprimer ou de retirer ses droits."
    ),
    "step_up_required": "Cette action demande un code de confirmation : recommencez-la.",
    "not_admin": (
        "Votre compte ne donne plus accès à ces pages (son profil a changé entre-temps). "
        "Reconnectez-vous."
    ),
    "admins_only": (
        "Cette page est réservée aux administrateurs des établissements. Votre compte est "
        "un compte utilisateur : votre numéro, vos postes de confiance et votre application "
        "d'authentification se gèrent depuis « Mon compte »."
    ),
    "users_only": (
        "Cette page est celle des utilisateurs, pour leur propre compte. Votre numéro et vos "
        "postes de confiance se gèrent depuis votre fiche, dans la gestion des comptes."
    ),
    "totp_disabled": "Les applications d'authentification ne sont pas proposées ici.",
    "totp_not_enrolled": (
        "Aucune application n'est en cours d'ajout : recommencez depuis « Mon compte »."
    ),
    "phone_already_set": (
        "Un numéro a été enregistré entre-temps pour votre compte : recommencez le changement."
    ),
    "unavailable": "Le service est momentanément indisponible. Réessayez dans un instant.",
    "account_exists": "Cet identifiant est déjà pris : choisissez-en un autre.",
    "invalid_phone": (
        "Ce numéro de téléphone n'est pas valide : saisissez un numéro français "
        "(06 71 23 45 89, 02 37 12 34 56) ou international (+32 2 123 45 67)."
    ),
    "step_up_conflict": (
        "Changez l'adresse courriel dans une modification à part : elle demande "
        "son propre code de confirmation."
    ),
    "method_not_allowed": (
        "Cette adresse ne s'ouvre pas ainsi : passez par les boutons de la console."
    ),
    "blank_operators_only": (
        "La remise à blanc des numéros est faite par le support le jour du déploiement, "
        "pour tout l'établissement."
    ),
}
CSRF: Final = (
    "Ce formulaire a expiré ou ne vient pas de cette console. Rechargez la page, puis recommencez."
)
CHANNEL_WORDS: Final = {"sms": "par SMS", "voice": "par appel vocal"}
SIGNED_OUT: Final = "Vous êtes déconnecté."
SESSION_OVER: Final = "Votre session a pris fin. Reconnectez-vous."


def sentence(exc: GatewayError) -> str:
    """The French sentence for an error, with its numbers (seconds to wait, tries left)."""
    if isinstance(exc, RateLimited):
        return (
            "Trop de demandes en peu de temps. "
            f"Réessayez dans {exc.retry_after} seconde{'s' if exc.retry_after > 1 else ''}."
        )
    text = ERRORS.get(exc.code, GENERIC)
    left = exc.extra.get("attempts_left")
    if exc.code == "invalid_code" and isinstance(left, int):
        text += f" Il vous reste {left} essai{'s' if left > 1 else ''}."
    return text


def resent(channel: str, destination: str) -> str:
    """What "Renvoyer le code" did: the same code, where it went."""
    return f"Le même code vous a été renvoyé {CHANNEL_WORDS.get(channel, '')} au {destination}."
