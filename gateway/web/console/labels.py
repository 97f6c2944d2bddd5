"""French words for the values the API returns (roles, statuses, flags, history actions)."""

from __future__ import annotations

from typing import Final

ROLES: Final = {"admin": "Administrateur", "user": "Utilisateur"}
STATUSES: Final = {"active": "Actif", "expired": "Expiré", "suspended": "Suspendu"}
FLAGS: Final = {
    "expiring": "Expire bientôt",
    "inactive": "Inactif",
    "generic": "Compte générique ?",
    "single_admin": "Seul administrateur",
}
GROUPS: Final = {"service": "Service", "role": "Profil", "status": "Statut"}
ACTIONS: Final = {
    "create": "Création du compte",
    "update": "Modification",
    "renew": "Renouvellement",
    "delete": "Suppression",
    "expire": "Expiration",
    "phone": "Changement de numéro",
    "phone.change": "Changement de numéro (prouvé par un code)",
    "phone.enrol": "Numéro renseigné (prouvé par un code)",
    "phone.blank": "Numéro remis à blanc",
    "devices.revoke": "Poste de confiance retiré",
    "devices.revoke_all": "Tous les postes de confiance retirés",
    "totp.confirm": "Application d'authentification ajoutée",
    "totp.remove": "Application d'authentification retirée",
    "last_admin.reprieve": "Sursis du dernier administrateur",
}
FIELDS: Final = {
    "last_name": "Nom",
    "first_name": "Prénom",
    "email": "Courriel",
    "role": "Profil",
    "phone": "Téléphone",
    "phone_hidden": "Numéro masqué",
    "phone_extension": "Poste",
    "services": "Services",
    "net_entreprises": "Net-Entreprises",
    "expires_at": "Expiration",
    "suspended": "Suspendu",
    "establishment": "Établissement",
}


def actor(entry: dict[str, object]) -> str:
    """Who made a change, in words: the acting account, else the credential."""
    acting = entry.get("acting_for")
    raw = str(entry.get("actor") or "")
    if raw == "system:sweep":
        return "Le système (échéances)"
    if acting:
        return str(acting)
    scope, _, name = raw.partition(":")
    return f"Support ({name})" if scope == "operator" else raw


def group_name(group_by: str | None, key: str) -> str:
    """A group's heading: the service (or "Sans service"), the profile, the status."""
    if group_by == "role":
        return ROLES.get(key, key)
    if group_by == "status":
        return STATUSES.get(key, key)
    return f"Service {key}" if key else "Sans service"
