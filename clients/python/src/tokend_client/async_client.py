"""The asyncio client: :class:`AsyncClient`, the same methods as :class:`Client`, awaited."""

from __future__ import annotations

import asyncio
from typing import Any, Iterable, Optional

import httpx

from . import _core, errors
from .auth import TokendAuth
from .checkout import AsyncCheckout
from .errors import TokendError
from .models import Token

__all__ = ["AsyncClient"]


class AsyncClient:
    """``async with AsyncClient(base_url, token=None, timeout=120) as tokend: …``

    See :class:`tokend_client.Client` for the arguments; every method is a coroutine.
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
        self._http = httpx.AsyncClient(**self.settings.client_args())

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, json: Any = None) -> Any:
        waited = 0.0
        while True:
            try:
                response = await self._http.request(method, path, json=json)
                return _core.read_answer(response)
            except httpx.HTTPError as e:
                raise _core.transport_error(e, self.settings.base_url) from e
            except TokendError as e:
                wait = _core.next_wait(e, self.settings, waited)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                waited += wait

    async def acquire(
        self,
        site: str,
        account: Optional[str] = None,
        credential_id: Optional[int] = None,
        force_refresh: bool = False,
    ) -> Token:
        """A valid token for ``site`` (of ``account`` or ``credential_id`` when named)."""
        body = _core.acquire_body(site, account, credential_id, force_refresh)
        try:
            data = await self._call("POST", f"{_core.API}/tokens/acquire", body)
        except errors.Timeout as e:
            raise await self._captcha_or(e, site, account) from e
        return Token.from_answer(site, data)

    async def _captcha_or(
        self, error: TokendError, site: str, account: Optional[str]
    ) -> TokendError:
        try:
            answer = await self._http.get(f"{_core.API}/captchas", timeout=5.0)
            data = _core.read_answer(answer)
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
    ) -> AsyncCheckout:
        """Holds an account of ``site`` for one job: use as ``async with``.

        While held, tokend hands the account to nobody else and logs it in for nobody; the
        lease is renewed in the background every third of ``lease_seconds`` and released on
        leaving the block (``token_rejected`` when it raised :class:`TokenRejected`).
        """
        body = _core.checkout_body(site, lease_seconds, job, account, credential_id)
        return AsyncCheckout(self, site, body, lease_seconds)

    async def invalidate(self, site: str, account: str) -> Any:
        """Tells tokend that the portal refused this account's token."""
        return await self._call(
            "POST", f"{_core.API}/tokens/invalidate", {"site_name": site, "account": account}
        )

    async def health(self) -> Any:
        """tokend's health: ``status``, ``components``, ``alerts``, …"""
        return await self._call("GET", f"{_core.API}/performance/health")

    def auth(
        self,
        site: str,
        account: Optional[str] = None,
        rejected_statuses: Iterable[int] = (401,),
    ) -> TokendAuth:
        """An ``httpx.Auth`` for this site; see :meth:`tokend_client.Client.auth`."""
        return TokendAuth(self.settings, site, account, rejected_statuses, async_client=self)
