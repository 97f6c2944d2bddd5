"""The account store wing: records, admin rules, listing, audit, TOTP, sweep, mail, rotation.

Its public face, re-exported here: the account record and the store. The OTP
engine (`gateway.otp.challenges`) reads accounts through these names only;
everything else imports the module it needs (`gateway.accounts.policy`, ...).
Only modules that import nothing from `gateway.otp` are re-exported, so that
importing this package never starts the engine's imports (no cycle).
"""

from gateway.accounts.audit import Who
from gateway.accounts.records import (
    KEEP,
    Account,
    Keep,
    NewAccount,
    Role,
    Status,
    valid_account_id,
)
from gateway.accounts.store import AccountStore

__all__ = [
    "KEEP", "Account", "AccountStore", "Keep", "NewAccount", "Role", "Status", "Who",
    "valid_account_id",
]  # fmt: skip
