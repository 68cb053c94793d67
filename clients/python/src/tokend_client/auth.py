"""``httpx.Auth`` for portal calls: send the token's headers, and on a rejected token
invalidate it, acquire a fresh one and send the request once more.

One flow object may serve many threads or tasks at once. The current token is shared; when
several requests see the same dead token, the first one replaces it and the others use the
replacement, so tokend sees one invalidation and one acquire, not one each.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, AsyncGenerator, Generator, Iterable, Optional

import httpx

from . import _core
from .models import Token

if TYPE_CHECKING:  # pragma: no cover
    from .async_client import AsyncClient
    from .client import Client

__all__ = ["TokendAuth"]


class TokendAuth(httpx.Auth):
    """Made by :meth:`Client.auth` or :meth:`AsyncClient.auth`; usable with either kind of
    httpx client (the other kind of tokend client is made from the same settings when
    needed)."""

    def __init__(
        self,
        settings: _core.Settings,
        site: str,
        account: Optional[str],
        rejected_statuses: Iterable[int],
        *,
        sync_client: "Optional[Client]" = None,
        async_client: "Optional[AsyncClient]" = None,
    ) -> None:
        self.site = site
        self.account = account
        self.rejected_statuses = _core.split_status(rejected_statuses)
        self._settings = settings
        self._sync = sync_client
        self._async = async_client
        self._token: Optional[Token] = None
        self._thread_lock = threading.Lock()
        self._task_lock: Optional[asyncio.Lock] = None
        #: How many times this flow replaced a token the portal rejected.
        self.replacements = 0

    # --- blocking ----------------------------------------------------------------------

    def _sync_client(self) -> "Client":
        if self._sync is None:
            from .client import Client

            s = self._settings
            self._sync = Client(s.base_url, s.token, s.timeout, retry=s.retry, max_retry_wait=s.max_retry_wait)
        return self._sync

    def _sync_token(self, rejected: Optional[Token] = None) -> Token:
        with self._thread_lock:
            current = self._token
            if current is not None and current is not rejected:
                return current
            client = self._sync_client()
            if rejected is not None and rejected.account is not None:
                client.invalidate(self.site, rejected.account)
                self.replacements += 1
            self._token = client.acquire(self.site, self.account)
            return self._token

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._sync_token()
        request.headers.update(token.headers)
        response = yield request
        if response.status_code not in self.rejected_statuses:
            return
        fresh = self._sync_token(rejected=token)
        request.headers.update(fresh.headers)
        yield request

    # --- asyncio -----------------------------------------------------------------------

    def _async_client(self) -> "AsyncClient":
        if self._async is None:
            from .async_client import AsyncClient

            s = self._settings
            self._async = AsyncClient(s.base_url, s.token, s.timeout, retry=s.retry, max_retry_wait=s.max_retry_wait)
        return self._async

    async def _async_token(self, rejected: Optional[Token] = None) -> Token:
        if self._task_lock is None:
            self._task_lock = asyncio.Lock()
        async with self._task_lock:
            current = self._token
            if current is not None and current is not rejected:
                return current
            client = self._async_client()
            if rejected is not None and rejected.account is not None:
                await client.invalidate(self.site, rejected.account)
                self.replacements += 1
            self._token = await client.acquire(self.site, self.account)
            return self._token

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._async_token()
        request.headers.update(token.headers)
        response = yield request
        if response.status_code not in self.rejected_statuses:
            return
        fresh = await self._async_token(rejected=token)
        request.headers.update(fresh.headers)
        yield request
