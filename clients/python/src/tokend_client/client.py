"""The blocking client: :class:`Client`."""

from __future__ import annotations

import time
from typing import Any, Iterable, Optional

import httpx

from . import _core, errors
from .auth import TokendAuth
from .checkout import Checkout
from .errors import TokendError
from .models import Token

__all__ = ["Client"]


class Client:
    """A connection to a running tokend.

    ``Client("http://127.0.0.1:8000", token=None, timeout=120)``. ``token`` is a client or
    admin token when the daemon has ``admin_token`` set. ``timeout`` bounds one call; an
    acquire that logs in can take as long as the portal's login (a captcha a person solves:
    minutes). With ``retry=True``, refusals that end by themselves (site paused, login budget
    spent, queue full, shutting down) are tried again after their ``Retry-After``, for at most
    ``max_retry_wait`` seconds in all. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        token: Optional[str] = None,
        timeout: float = 120.0,
        *,
        retry: bool = False,
        max_retry_wait: float = 60.0,
    ) -> None:
        self.settings = _core.Settings(base_url, token, timeout, retry, max_retry_wait)
        self._http = httpx.Client(**self.settings.client_args())

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        waited = 0.0
        while True:
            try:
                response = self._http.request(method, path, json=json)
                return _core.read_answer(response)
            except httpx.HTTPError as e:
                raise _core.transport_error(e, self.settings.base_url) from e
            except TokendError as e:
                wait = _core.next_wait(e, self.settings, waited)
                if wait is None:
                    raise
                time.sleep(wait)
                waited += wait

    def acquire(
        self,
        site: str,
        account: Optional[str] = None,
        credential_id: Optional[int] = None,
        force_refresh: bool = False,
    ) -> Token:
        """A valid token for ``site`` (of ``account`` or ``credential_id`` when named)."""
        body = _core.acquire_body(site, account, credential_id, force_refresh)
        try:
            data = self._call("POST", f"{_core.API}/tokens/acquire", body)
        except errors.Timeout as e:
            raise self._captcha_or(e, site, account) from e
        return Token.from_answer(site, data)

    def _captcha_or(self, error: TokendError, site: str, account: Optional[str]) -> TokendError:
        """On the client's own timeout: a captcha waiting for a person, if the token may see."""
        try:
            data = _core.read_answer(self._http.get(f"{_core.API}/captchas", timeout=5.0))
        except (httpx.HTTPError, TokendError):
            return error
        captchas = _core.pending_captchas(data, site, account)
        return _core.captcha_pending(site, captchas) if captchas else error

    def checkout(
        self,
        site: str,
        lease_seconds: float = 120.0,
        job: Optional[str] = None,
        account: Optional[str] = None,
        credential_id: Optional[int] = None,
    ) -> Checkout:
        """Holds an account of ``site`` for one job: use as ``with``.

        While held, tokend hands the account to nobody else and logs it in for nobody; the
        lease is renewed in the background every third of ``lease_seconds`` and released on
        leaving the block (``token_rejected`` when it raised :class:`TokenRejected`).
        """
        body = _core.checkout_body(site, lease_seconds, job, account, credential_id)
        return Checkout(self, site, body, lease_seconds)

    def invalidate(self, site: str, account: str) -> Any:
        """Tells tokend that the portal refused this account's token: the next acquire logs in."""
        return self._call(
            "POST", f"{_core.API}/tokens/invalidate", {"site_name": site, "account": account}
        )

    def health(self) -> Any:
        """tokend's health: ``status``, ``components``, ``alerts``, …"""
        return self._call("GET", f"{_core.API}/performance/health")

    def auth(
        self,
        site: str,
        account: Optional[str] = None,
        rejected_statuses: Iterable[int] = (401,),
    ) -> TokendAuth:
        """An ``httpx.Auth`` that sends this site's token and survives one the portal rejects.

        Works with ``httpx.Client`` and ``httpx.AsyncClient``: on an answer whose status is in
        ``rejected_statuses`` it invalidates the token, acquires a fresh one and sends the
        request once more; concurrent requests that see the same dead token cause one
        re-acquire.
        """
        return TokendAuth(self.settings, site, account, rejected_statuses, sync_client=self)
