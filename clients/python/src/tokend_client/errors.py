"""The errors of tokend, typed: each carries the daemon's answer (code, message, data).

tokend answers an error as ``{"success": false, "code": "UPPER_SNAKE", "message": "…",
"errors": {…}}`` with an HTTP status; :func:`from_answer` turns that into the class below
that names it, so a caller writes ``except SiteUnavailable as e: sleep(e.retry_after)``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "TokendError",
    "InvalidInput",
    "NotFound",
    "Unauthorized",
    "Forbidden",
    "Conflict",
    "SiteUnavailable",
    "NoAvailableAccount",
    "BudgetExhausted",
    "QueueFull",
    "Timeout",
    "AcquisitionFailed",
    "CaptchaPending",
    "ShuttingDown",
    "Unavailable",
    "DaemonUnreachable",
    "TokenRejected",
]


class TokendError(Exception):
    """Anything tokend refused or could not do.

    ``code`` is tokend's error code (``SITE_UNAVAILABLE``, …), ``status`` the HTTP status
    (``None`` when the daemon was not reached), ``data`` the answer's ``errors`` object.
    """

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        status: Optional[int] = None,
        data: Optional[Mapping[str, Any]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.data: Dict[str, Any] = dict(data or {})
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class InvalidInput(TokendError):
    """400: the request named something badly (``data`` names the field)."""


class NotFound(TokendError):
    """404: unknown site, account, captcha or checkout."""


class Unauthorized(TokendError):
    """401: no bearer token, or one tokend does not know."""


class Forbidden(TokendError):
    """403: the token's role may not do this (a client token outside ``tokens/*``)."""


class Conflict(TokendError):
    """409: already answered, already exists, or ``CHECKED_OUT`` (the account is held by a
    job; ``retry_after``: until its lease ends)."""


class SiteUnavailable(TokendError):
    """503 ``SITE_UNAVAILABLE``: the portal is paused (circuit open); ``retry_after`` seconds."""


class NoAvailableAccount(TokendError):
    """503 ``NO_AVAILABLE_ACCOUNT``: every account is blocked, cooling down or inactive."""


class BudgetExhausted(TokendError):
    """429 ``LOGIN_BUDGET_EXHAUSTED``: the hour's logins are spent; ``retry_after`` seconds."""


class QueueFull(TokendError):
    """429 ``QUEUE_FULL``: too many acquisitions are waiting for a login slot."""


class Timeout(TokendError):
    """504 ``TIMEOUT``, or the client's own timeout ran out before tokend answered."""


class AcquisitionFailed(TokendError):
    """502 ``TOKEN_ACQUISITION_FAILED``: every login tried failed.

    ``error_type`` says why: ``credential_error``, ``captcha_error``, ``network_error``,
    ``timeout``, ``failed``.
    """

    @property
    def error_type(self) -> Optional[str]:
        value = self.data.get("error_type")
        return value if isinstance(value, str) else None


class CaptchaPending(Timeout):
    """The client's timeout ran out while the login waits for a person to solve a captcha.

    ``captchas`` lists the pending challenges of the site (``id``, ``prompt``, …) as tokend's
    ``GET /captchas`` answers them. The login goes on: answer the captcha (dashboard, chat
    robot or ``tokend captcha answer``) and acquire again.
    """

    def __init__(self, message: str, *, captchas: Any = (), **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.captchas = list(captchas)


class ShuttingDown(TokendError):
    """503 ``SHUTTING_DOWN``: tokend stopped before the acquisition finished."""


class Unavailable(TokendError):
    """503 from the daemon's own storage: ``DATABASE_UNAVAILABLE``, ``CACHE_UNAVAILABLE``."""


class DaemonUnreachable(TokendError):
    """tokend could not be reached at all (connection refused, DNS, TLS)."""


class TokenRejected(TokendError):
    """Raise it when the portal refused the token tokend handed out (a 401 on the portal).

    The client never raises it itself: inside a :meth:`Client.checkout` block, raising it
    releases the checkout as ``token_rejected`` (tokend invalidates the token). The
    :meth:`Client.auth` flow does not raise it either: when the one retry with a fresh token
    is refused too, the caller gets that second answer (the portal's 401) as the response.
    """


_BY_CODE: Dict[str, Type[TokendError]] = {
    "INVALID_INPUT": InvalidInput,
    "CONFIGURATION_ERROR": InvalidInput,
    "UNKNOWN_SITE": NotFound,
    "ACCOUNT_NOT_FOUND": NotFound,
    "CAPTCHA_NOT_FOUND": NotFound,
    "CHECKOUT_NOT_FOUND": NotFound,
    "NOT_FOUND": NotFound,
    "UNAUTHORIZED": Unauthorized,
    "FORBIDDEN": Forbidden,
    "ACCOUNT_EXISTS": Conflict,
    "CAPTCHA_ALREADY_ANSWERED": Conflict,
    "CHECKED_OUT": Conflict,
    "SITE_UNAVAILABLE": SiteUnavailable,
    "NO_AVAILABLE_ACCOUNT": NoAvailableAccount,
    "LOGIN_BUDGET_EXHAUSTED": BudgetExhausted,
    "QUEUE_FULL": QueueFull,
    "TIMEOUT": Timeout,
    "TOKEN_ACQUISITION_FAILED": AcquisitionFailed,
    "SHUTTING_DOWN": ShuttingDown,
    "DATABASE_UNAVAILABLE": Unavailable,
    "DATABASE_ERROR": Unavailable,
    "CACHE_UNAVAILABLE": Unavailable,
}

_BY_STATUS: Dict[int, Type[TokendError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: QueueFull,
    502: AcquisitionFailed,
    503: Unavailable,
    504: Timeout,
}


def _retry_after(header: Optional[str]) -> Optional[float]:
    if header is None:
        return None
    try:
        return max(0.0, float(header.strip()))
    except ValueError:
        return None


def from_answer(status: int, body: Any, retry_after_header: Optional[str]) -> TokendError:
    """The error for an answer with this status, JSON body (or text) and ``Retry-After``."""
    if isinstance(body, Mapping):
        code = body.get("code") if isinstance(body.get("code"), str) else None
        message = str(body.get("message") or f"tokend answered {status}")
        data = body.get("errors") if isinstance(body.get("errors"), Mapping) else {}
    else:
        code, data = None, {}
        text = str(body or "").strip()
        message = f"tokend answered {status}" + (f": {text[:200]}" if text else "")
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status, TokendError)
    return cls(
        message,
        code=code,
        status=status,
        data=data,
        retry_after=_retry_after(retry_after_header),
    )
