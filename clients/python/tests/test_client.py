"""Client and AsyncClient against the real daemon: tokens, typed errors, retries."""

from __future__ import annotations

import asyncio
import socket

import pytest

from conftest import Daemon, Portal, site_block, wait_until
from tokend_client import (
    AcquisitionFailed,
    AsyncClient,
    BudgetExhausted,
    Client,
    Conflict,
    DaemonUnreachable,
    Forbidden,
    NotFound,
    SiteUnavailable,
    Unauthorized,
)


def test_acquire_hands_out_the_token_with_its_ready_headers(daemon: Daemon, portal: Portal) -> None:
    with Client(daemon.url) as tokend:
        first = tokend.acquire("portal", account="alice")
        again = tokend.acquire("portal", account="alice")
    assert first.token.startswith("tok-alice-")
    assert first.headers == {"Authorization": f"Bearer {first.token}"}
    assert first.authorization == f"Bearer {first.token}"
    assert (first.account, first.source, again.source) == ("alice", "login", "cache")
    assert again.token == first.token
    assert first.credential_id is not None and first.expires_at is not None
    assert 3000 < first.seconds_left() <= 3600
    assert portal.logins == ["alice"]
    # The token never shows in a repr (logs of the caller's own program).
    assert first.token not in repr(first)


def test_force_refresh_logs_in_again(daemon: Daemon, portal: Portal) -> None:
    with Client(daemon.url) as tokend:
        first = tokend.acquire("portal", account="bob")
        second = tokend.acquire("portal", account="bob", force_refresh=True)
    assert second.token != first.token and second.source == "login"
    assert portal.logins == ["bob", "bob"]


def test_errors_are_typed_and_carry_the_answer(daemon: Daemon) -> None:
    with Client(daemon.url) as tokend:
        with pytest.raises(NotFound) as unknown:
            tokend.acquire("no_such_site")
        assert unknown.value.code == "UNKNOWN_SITE" and unknown.value.status == 404
        daemon_account_with_wrong_password(daemon)
        with pytest.raises(AcquisitionFailed) as failed:
            tokend.acquire("portal", account="carol")
    assert failed.value.error_type == "credential_error"
    assert "wrong-pw" not in str(failed.value)


def daemon_account_with_wrong_password(daemon: Daemon) -> None:
    daemon.add_account("portal", "carol", "wrong-pw")


def test_invalidate_makes_the_next_acquire_log_in(daemon: Daemon, portal: Portal) -> None:
    with Client(daemon.url) as tokend:
        first = tokend.acquire("portal", account="alice")
        tokend.invalidate("portal", "alice")
        second = tokend.acquire("portal", account="alice")
    assert second.source == "login" and second.token != first.token
    with Client(daemon.url) as tokend, pytest.raises(NotFound):
        tokend.invalidate("portal", "nobody")


def test_health_reads_the_daemon(daemon: Daemon) -> None:
    with Client(daemon.url) as tokend:
        health = tokend.health()
    assert health["status"] in ("healthy", "warning")
    assert "portal" in health["components"]["sites"]


def test_an_unreachable_daemon_is_named(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", timeout=2) as tokend, pytest.raises(DaemonUnreachable):
        tokend.acquire("portal")


def test_roles_unauthorized_and_forbidden(tokend_bin, tmp_path, portal: Portal) -> None:
    sites = site_block("portal", portal) + '\n'
    d = Daemon(tokend_bin, tmp_path, sites, admin_token="admin-" + "x" * 24)
    d.config.write_text(d.config.read_text().replace(
        "[database]", 'client_tokens = ["client-' + "y" * 24 + '"]\n[database]', 1))
    d.add_account("portal", "alice", "pw-alice")
    d.start()
    try:
        with Client(d.url) as anonymous, pytest.raises(Unauthorized):
            anonymous.acquire("portal")
        with Client(d.url, token="client-" + "y" * 24) as client:
            assert client.acquire("portal").account == "alice"
            with pytest.raises(Forbidden):
                client.health()
        with Client(d.url, token="admin-" + "x" * 24) as admin:
            assert admin.health()["status"]
    finally:
        d.stop()


def test_budget_exhausted_carries_retry_after(tokend_bin, tmp_path, portal: Portal) -> None:
    d = Daemon(tokend_bin, tmp_path, site_block("portal", portal, "login_budget_per_site_per_hour = 1"))
    d.add_account("portal", "alice", "pw-alice")
    d.start()
    try:
        # retry=True gives up at once when the wait is longer than max_retry_wait.
        with Client(d.url, retry=True, max_retry_wait=5) as tokend:
            tokend.acquire("portal")
            with pytest.raises(BudgetExhausted) as spent:
                tokend.acquire("portal", force_refresh=True)
    finally:
        d.stop()
    assert spent.value.status == 429 and spent.value.retry_after is not None
    assert spent.value.retry_after > 5


def test_retry_waits_out_a_paused_site(tokend_bin, tmp_path, portal: Portal) -> None:
    extra = "circuit_failure_threshold = 1\ncircuit_open_seconds = 1"
    d = Daemon(tokend_bin, tmp_path, site_block("portal", portal, extra))
    d.add_account("portal", "alice", "pw-alice")
    d.start()
    try:
        portal.down = True
        with Client(d.url) as tokend:
            with pytest.raises(AcquisitionFailed):
                tokend.acquire("portal")
            with pytest.raises(SiteUnavailable) as paused:
                tokend.acquire("portal")
        assert paused.value.retry_after is not None and paused.value.retry_after <= 2
        portal.down = False
        with Client(d.url, retry=True, max_retry_wait=10) as patient:
            token = patient.acquire("portal")
        assert token.account == "alice" and token.source == "login"
    finally:
        d.stop()


def test_async_client_has_the_same_methods(daemon: Daemon, portal: Portal) -> None:
    async def scenario():
        async with AsyncClient(daemon.url) as tokend:
            tokens = await asyncio.gather(*(tokend.acquire("portal", account="alice") for _ in range(10)))
            await tokend.invalidate("portal", "alice")
            fresh = await tokend.acquire("portal", account="alice")
            health = await tokend.health()
            with pytest.raises(NotFound):
                await tokend.acquire("nowhere")
            return tokens, fresh, health

    tokens, fresh, health = asyncio.run(scenario())
    # Ten callers at once, one login (tokend's single flight); then one more after invalidate.
    assert len({t.token for t in tokens}) == 1
    assert fresh.token != tokens[0].token
    assert portal.logins == ["alice", "alice"]
    assert health["status"]


def test_checkout_holds_an_account_for_a_job(daemon: Daemon, portal: Portal) -> None:
    from tokend_client import TokenRejected

    with Client(daemon.url) as tokend:
        with tokend.checkout("portal", lease_seconds=1, job="立案 1") as held:
            assert held.account in ("alice", "bob") and held.token.headers
            other = "bob" if held.account == "alice" else "alice"
            # Nobody else is handed the held account, while the lease is renewed by itself.
            first_lease = held.lease_until
            wait_until("a renewal", lambda: held.lease_until > first_lease, within=5)
            assert all(tokend.acquire("portal").account == other for _ in range(3))
            with pytest.raises(Conflict):
                tokend.acquire("portal", account=held.account)
        assert not held.lost
        assert tokend.acquire("portal", account=held.account).source == "cache"

        # A token the portal rejected is invalidated at release.
        with pytest.raises(TokenRejected):
            with tokend.checkout("portal", account="alice") as held:
                rejected = held.token.token
                raise TokenRejected("the portal logged us out")
        fresh = tokend.acquire("portal", account="alice")
        assert fresh.token != rejected and fresh.source == "login"


def test_async_checkout(daemon: Daemon) -> None:
    async def scenario():
        async with AsyncClient(daemon.url) as tokend:
            async with tokend.checkout("portal", account="bob", lease_seconds=30) as held:
                with pytest.raises(Conflict):
                    await tokend.acquire("portal", account="bob")
                listed = await tokend._call("GET", "/api/v1/automation/tokens/checkouts")
                assert [c["account"] for c in listed["checkouts"]] == ["bob"]
            return held, await tokend._call("GET", "/api/v1/automation/tokens/checkouts")

    held, after = asyncio.run(scenario())
    assert held.token.token.startswith("tok-bob-") and after["checkouts"] == []


def test_async_checkout_renews_in_the_background_and_fail_cools_the_account_down(daemon: Daemon) -> None:
    async def wait_for(what: str, check, within: float = 5.0):
        deadline = asyncio.get_running_loop().time() + within
        while not check():
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"timed out after {within} s waiting for {what}")
            await asyncio.sleep(0.02)

    async def held_ids(tokend: AsyncClient):
        listed = await tokend._call("GET", "/api/v1/automation/tokens/checkouts")
        return [c["checkout_id"] for c in listed["checkouts"]]

    async def scenario():
        async with AsyncClient(daemon.url) as tokend:
            async with tokend.checkout("portal", account="alice", lease_seconds=1, job="立案 3") as held:
                first = held.lease_until
                # The task renews every third of the lease: twice, and the lease is past its
                # first end while the checkout still holds.
                await wait_for("a renewal", lambda: held.lease_until > first)
                second = held.lease_until
                await wait_for("another renewal", lambda: held.lease_until > second)
                loop = asyncio.get_running_loop()
                started = loop.time()
                await wait_for("the first lease's end", lambda: loop.time() - started > 1.2)
                assert await held_ids(tokend) == [held.checkout_id]
                assert not held.lost
                with pytest.raises(Conflict):
                    await tokend.acquire("portal", account="alice")
                held.fail()
            after = await held_ids(tokend)
            accounts = await tokend._call("GET", "/api/v1/automation/accounts?site_name=portal")
        return held, after, accounts

    held, after, accounts = asyncio.run(scenario())
    assert after == [] and not held.lost
    [alice] = [a for a in accounts["accounts"] if a["account"] == "alice"]
    assert alice["state"] == "cooling_down", alice


def test_idle_connections_are_dropped_before_tokend_closes_them() -> None:
    # tokend closes a connection idle for 5 s; one reused at that moment fails as it sends.
    from tokend_client import _core

    args = _core.Settings("http://127.0.0.1:1", None, 5.0, True, 60.0).client_args()
    assert args["limits"].keepalive_expiry < 5.0
