"""``client.auth(site)`` with httpx against the real daemon and a portal that revokes tokens."""

from __future__ import annotations

import asyncio
import threading

import httpx

from conftest import Daemon, Portal
from tokend_client import AsyncClient, Client


def test_sync_auth_survives_a_rejected_token_with_one_reacquire(daemon: Daemon, portal: Portal) -> None:
    with Client(daemon.url) as tokend:
        auth = tokend.auth("portal", account="alice")
        with httpx.Client(base_url=portal.url, auth=auth) as http:
            assert http.get("/work").json() == {"account": "alice"}
            assert portal.logins == ["alice"]

            portal.revoke_all()
            results = []
            barrier = threading.Barrier(8)

            def call() -> None:
                barrier.wait()
                results.append(http.get("/work").status_code)

            threads = [threading.Thread(target=call) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
    # Every request got through, and the eight that met the dead token caused one login.
    assert results == [200] * 8
    assert portal.logins == ["alice", "alice"]
    assert auth.replacements == 1


def test_auth_gives_up_after_one_retry(daemon: Daemon, portal: Portal) -> None:
    # A portal that refuses every token: one retry with a fresh token, then the 401 reaches
    # the caller (no loop of logins).
    with Client(daemon.url) as tokend:
        auth = tokend.auth("portal", account="bob", rejected_statuses=(401, 403))
        with httpx.Client(base_url=portal.url, auth=auth) as http:
            assert http.get("/work").status_code == 200
            portal.live = _Refusing()
            calls_before = portal.work_calls
            answer = http.get("/work")
    assert answer.status_code == 401
    assert portal.work_calls - calls_before == 2
    assert portal.logins == ["bob", "bob"]


class _Refusing(dict):
    """A token table that forgets every token it is given."""

    def __setitem__(self, key, value) -> None:  # noqa: ANN001
        return None


def test_async_auth_with_httpx_async_client(daemon: Daemon, portal: Portal) -> None:
    async def scenario():
        async with AsyncClient(daemon.url) as tokend:
            auth = tokend.auth("portal", account="bob")
            async with httpx.AsyncClient(base_url=portal.url, auth=auth) as http:
                first = await http.get("/work")
                portal.revoke_all()
                answers = await asyncio.gather(*(http.get("/work") for _ in range(8)))
                return first, answers, auth

    first, answers, auth = asyncio.run(scenario())
    assert first.status_code == 200
    assert [a.status_code for a in answers] == [200] * 8
    assert portal.logins == ["bob", "bob"]
    assert auth.replacements == 1


def test_auth_from_a_sync_client_works_in_an_async_httpx_client(daemon: Daemon, portal: Portal) -> None:
    with Client(daemon.url) as tokend:
        auth = tokend.auth("portal", account="alice")

        async def scenario():
            async with httpx.AsyncClient(base_url=portal.url, auth=auth) as http:
                return (await http.get("/work")).json()

        assert asyncio.run(scenario()) == {"account": "alice"}
