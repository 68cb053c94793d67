"""What the sync and async clients share: settings, the requests they send, how an answer
is read, and when a refused call is tried again. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import httpx

from . import errors
from .errors import TokendError

#: How long an idle connection to tokend is kept for the next request (tokend's own limit: 5 s).
IDLE_CONNECTION_SECONDS = 2.0

API = "/api/v1/automation"

#: Refusals that end by themselves; tried again (honouring ``Retry-After``) with ``retry=True``.
RETRYABLE = (
    errors.SiteUnavailable,
    errors.BudgetExhausted,
    errors.QueueFull,
    errors.ShuttingDown,
    errors.Unavailable,
)

#: Wait before trying again when tokend gave no ``Retry-After``.
DEFAULT_RETRY_WAIT = 1.0


@dataclass(frozen=True)
class Settings:
    """How to reach tokend; shared by a client and the auth flows it makes."""

    base_url: str
    token: Optional[str]
    timeout: float
    retry: bool
    max_retry_wait: float

    def headers(self) -> Dict[str, str]:
        # A JSON body or this header on every call: tokend refuses state changes a web
        # page could send (simple cross-site requests).
        headers = {"Accept": "application/json", "X-Tokend-Client": "python"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def client_args(self) -> Dict[str, Any]:
        # Never an environment proxy: the bearer token must not reach a proxy by accident.
        return {
            "base_url": self.base_url.rstrip("/"),
            "headers": self.headers(),
            "timeout": self.timeout,
            "trust_env": False,
            "follow_redirects": False,
            # tokend closes a connection idle for 5 s; a client that reuses one at that very
            # moment finds it closed as it sends. Idle connections are dropped well before.
            "limits": httpx.Limits(keepalive_expiry=IDLE_CONNECTION_SECONDS),
        }


def acquire_body(
    site: str,
    account: Optional[str],
    credential_id: Optional[int],
    force_refresh: bool,
) -> Dict[str, Any]:
    body: Dict[str, Any] = {"site_name": site}
    if account is not None:
        body["account"] = account
    if credential_id is not None:
        body["credential_id"] = credential_id
    if force_refresh:
        body["force_refresh"] = True
    return body


def checkout_body(
    site: str,
    lease_seconds: float,
    job: Optional[str],
    account: Optional[str],
    credential_id: Optional[int],
) -> Dict[str, Any]:
    body: Dict[str, Any] = {"site_name": site, "lease_seconds": lease_seconds}
    for name, value in (("job", job), ("account", account), ("credential_id", credential_id)):
        if value is not None:
            body[name] = value
    return body


def read_answer(response: httpx.Response) -> Any:
    """The ``data`` of a successful answer; the typed error of any other."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if response.is_success and isinstance(body, Mapping) and body.get("success", True):
        return body.get("data", body)
    raise errors.from_answer(response.status_code, body, response.headers.get("retry-after"))


def transport_error(error: httpx.HTTPError, base_url: str) -> TokendError:
    """The error for a call that got no answer."""
    if isinstance(error, httpx.TimeoutException):
        return errors.Timeout(f"tokend at {base_url} did not answer in time ({type(error).__name__})")
    return errors.DaemonUnreachable(f"tokend at {base_url} cannot be reached: {error}")


def next_wait(error: TokendError, settings: Settings, waited: float) -> Optional[float]:
    """How long to wait before trying ``error``'s call again; ``None``: give up now."""
    if not settings.retry or not isinstance(error, RETRYABLE):
        return None
    wait = error.retry_after if error.retry_after is not None else DEFAULT_RETRY_WAIT
    wait = max(wait, 0.05)
    if waited + wait > settings.max_retry_wait:
        return None
    return wait


def pending_captchas(data: Any, site: str, account: Optional[str]) -> List[Mapping[str, Any]]:
    """The captchas of ``GET /captchas`` that belong to this site (and account)."""
    items: Iterable[Any] = data.get("captchas", []) if isinstance(data, Mapping) else []
    return [
        c
        for c in items
        if isinstance(c, Mapping)
        and c.get("site_name") == site
        and (account is None or c.get("account") == account)
    ]


def captcha_pending(site: str, captchas: List[Mapping[str, Any]]) -> errors.CaptchaPending:
    prompts = ", ".join(str(c.get("id", "?")) for c in captchas)
    return errors.CaptchaPending(
        f"the login for site `{site}` waits for a person to solve a captcha ({prompts})",
        code="CAPTCHA_PENDING",
        captchas=captchas,
    )


def split_status(statuses: Iterable[int]) -> Tuple[int, ...]:
    return tuple(sorted({int(s) for s in statuses}))
