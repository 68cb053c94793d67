"""Job checkouts: an account held for one job, its lease renewed in the background.

    with tokend.checkout("court_zxfw", lease_seconds=120, job="立案 2026-001") as held:
        portal.post(url, headers=held.token.headers, …)      # several steps, one session
        if refused:
            raise TokenRejected("the portal logged us out")  # released as token_rejected

On leaving the block the checkout is released: ``token_rejected`` when the block raised
:class:`TokenRejected` (tokend invalidates the token), ``failed`` when :meth:`fail` was called
(the account cools down like after a failed login), ``ok`` otherwise (any other exception is
the job's own, not the account's).
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping, Optional

from .errors import NotFound, TokendError, TokenRejected
from .models import Token, _parse_time

if TYPE_CHECKING:  # pragma: no cover
    from .async_client import AsyncClient
    from .client import Client

__all__ = ["Checkout", "AsyncCheckout"]


class _Held:
    """What both kinds share: the answer's fields and the outcome chosen so far."""

    def __init__(self, site: str, lease_seconds: float) -> None:
        self.site = site
        self.lease_seconds = lease_seconds
        self.checkout_id = ""
        self.account: Optional[str] = None
        self.lease_until: Optional[datetime] = None
        self._token: Optional[Token] = None
        self._outcome = "ok"
        #: Set when a renewal found the checkout gone (its lease ended): the account may be
        #: someone else's now.
        self.lost = False
        #: How many times tokend renewed the token inside the lease.
        self.token_renewals = 0

    @property
    def token(self) -> Token:
        """The token to use now (replaced when tokend renews it inside the lease)."""
        if self._token is None:
            raise TokendError("the checkout has not started")
        return self._token

    def fail(self) -> None:
        """Release with ``failed``: the job failed because of the account."""
        self._outcome = "failed"

    def _take(self, data: Mapping[str, Any]) -> None:
        self.checkout_id = str(data.get("checkout_id", self.checkout_id))
        self.account = data.get("account") if isinstance(data.get("account"), str) else self.account
        self.lease_until = _parse_time(data.get("lease_until")) or self.lease_until
        if data.get("token_renewed") is True:
            self.token_renewals += 1
        self._token = Token.from_answer(self.site, data)

    def _outcome_for(self, error: Optional[BaseException]) -> str:
        if isinstance(error, TokenRejected):
            return "token_rejected"
        return self._outcome

    def _every(self) -> float:
        return max(self.lease_seconds / 3.0, 0.2)


class Checkout(_Held):
    """A checkout for the blocking :class:`Client` (renewed by a background thread)."""

    def __init__(self, client: "Client", site: str, body: Mapping[str, Any], lease_seconds: float) -> None:
        super().__init__(site, lease_seconds)
        self._client = client
        self._body = dict(body)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._renewer: Optional[threading.Thread] = None

    def __enter__(self) -> "Checkout":
        from ._core import API

        self._take(self._client._call("POST", f"{API}/tokens/checkout", self._body))
        self._renewer = threading.Thread(target=self._renew_loop, name="tokend-checkout", daemon=True)
        self._renewer.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._every()):
            self.renew()

    def renew(self) -> None:
        """Extends the lease now (the background thread does this every third of it)."""
        from ._core import API

        try:
            data = self._client._call(
                "POST", f"{API}/tokens/checkout/{self.checkout_id}/renew", {"lease_seconds": self.lease_seconds}
            )
        except NotFound:
            self.lost = True
            self._stop.set()
            return
        except TokendError:
            return  # tried again at the next tick; the lease covers two misses
        with self._lock:
            self._take(data)

    def __exit__(self, kind: Any, error: Optional[BaseException], trace: Any) -> None:
        from ._core import API

        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        try:
            self._client._call(
                "POST",
                f"{API}/tokens/checkout/{self.checkout_id}/release",
                {"outcome": self._outcome_for(error)},
            )
        except NotFound:
            self.lost = True


class AsyncCheckout(_Held):
    """A checkout for :class:`AsyncClient` (renewed by a background task)."""

    def __init__(self, client: "AsyncClient", site: str, body: Mapping[str, Any], lease_seconds: float) -> None:
        super().__init__(site, lease_seconds)
        self._client = client
        self._body = dict(body)
        self._task: Optional["asyncio.Task[None]"] = None

    async def __aenter__(self) -> "AsyncCheckout":
        from ._core import API

        self._take(await self._client._call("POST", f"{API}/tokens/checkout", self._body))
        self._task = asyncio.ensure_future(self._renew_loop())
        return self

    async def _renew_loop(self) -> None:
        while not self.lost:
            await asyncio.sleep(self._every())
            await self.renew()

    async def renew(self) -> None:
        """Extends the lease now (the background task does this every third of it)."""
        from ._core import API

        try:
            data = await self._client._call(
                "POST", f"{API}/tokens/checkout/{self.checkout_id}/renew", {"lease_seconds": self.lease_seconds}
            )
        except NotFound:
            self.lost = True
            return
        except TokendError:
            return
        self._take(data)

    async def __aexit__(self, kind: Any, error: Optional[BaseException], trace: Any) -> None:
        from ._core import API

        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the loop's end
                pass
        try:
            await self._client._call(
                "POST",
                f"{API}/tokens/checkout/{self.checkout_id}/release",
                {"outcome": self._outcome_for(error)},
            )
        except NotFound:
            self.lost = True
