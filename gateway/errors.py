"""The one error tree of the gateway.

    GatewayError                 every error a caller may see (code, HTTP status, message)
    ├── InvalidRequest           400 invalid_request
    ├── Unauthorized             401 unauthorized
    ├── StepUpRequired           401 step_up_required
    ├── Forbidden                403 forbidden
    │   ├── AccountSuspended     403 account_suspended
    │   └── AccountExpired       403 account_expired
    ├── NotFound                 404 not_found / unknown_account / challenge_not_found
    ├── MethodNotAllowed         405 method_not_allowed
    ├── RequestTimeout           408 request_timeout (the body did not arrive in time)
    ├── Conflict                 409 account_exists / phone_required / last_admin
    ├── Gone                     410 expired / already_used / too_many_attempts
    ├── PayloadTooLarge          413 payload_too_large
    ├── UnsupportedMediaType     415 unsupported_media_type
    ├── Unprocessable            422 invalid_phone / channel_unavailable / invalid_code /
    │                                idempotency_conflict
    ├── RateLimited              429 rate_limited (carries retry_after)
    └── Unavailable              503 unavailable (Redis unreachable)

    ProviderError                raised by providers, never shown to callers
    ├── ProviderUnavailable      retryable: timeout, refused connection, 5xx
    └── ProviderRejected         final: the provider refused this message

    ConfigError                  bad configuration, names the key

The HTTP layer maps a GatewayError to the contract's JSON body in one middleware
(`gateway.web.middleware`); nothing else builds error responses. Messages never
carry a code, a phone number or a secret.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error with a stable contract code, an HTTP status and a human message."""

    status = 500
    code = "internal_error"
    purpose: str | None = None  # a failed verification's purpose, when known (metrics only)

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


class InvalidRequest(GatewayError):
    status = 400
    code = "invalid_request"


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"


class StepUpRequired(GatewayError):
    status = 401
    code = "step_up_required"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class AccountSuspended(Forbidden):
    """The account is suspended: it can neither get a code nor act."""

    code = "account_suspended"

    def __init__(self) -> None:
        super().__init__("this account is suspended")


class AccountExpired(Forbidden):
    """The account is past its expiry: an admin must renew it first."""

    code = "account_expired"

    def __init__(self) -> None:
        super().__init__("this account has expired: an admin must renew it")


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(GatewayError):
    """The body did not arrive within `[server] body_timeout_seconds`: the connection closes."""

    status = 408
    code = "request_timeout"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class Gone(GatewayError):
    status = 410
    code = "gone"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(GatewayError):
    status = 422
    code = "unprocessable"


class RateLimited(GatewayError):
    """Refused by a rate limit; `retry_after` is in whole seconds, at least 1."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, scope: str) -> None:
        super().__init__(message, scope=scope, retry_after=retry_after)
        self.retry_after = max(1, retry_after)
        self.scope = scope


class Unavailable(GatewayError):
    status = 503
    code = "unavailable"


class ProviderError(Exception):
    """A provider could not take a message. The text is for logs: no code, no number."""


class ProviderUnavailable(ProviderError):
    """Retryable: the next provider of the channel gets the message."""


class ProviderRejected(ProviderError):
    """Final: the provider refused this message (e.g. the number); no failover."""


class ConfigError(Exception):
    """Bad configuration. `str()` is the one line shown at start-up, naming the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"configuration error: {key}: {problem}")
        self.key = key
