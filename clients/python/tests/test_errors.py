"""Every typed error, from the answer tokend gives for it: the class, the code, the status and
the data a caller reads (``retry_after``, ``error_type``, ``captchas``).

The answers go through the client's own reading of a response (an ``httpx.MockTransport``
answering as tokend's ``error_response`` does: JSON body, ``Retry-After`` header), so a
mapping that drifts from the daemon's codes fails here; one case runs against the daemon.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Type

import httpx
import pytest

from conftest import Daemon
from tokend_client import (
    AcquisitionFailed,
    BudgetExhausted,
    CaptchaPending,
    Client,
    Forbidden,
    NoAvailableAccount,
    NotFound,
    QueueFull,
    ShuttingDown,
    SiteUnavailable,
    Timeout,
    TokendError,
    Unauthorized,
)
from tokend_client import errors


def answer(status: int, code: str, message: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    return {"status": status, "body": {"success": False, "code": code, "message": message, "errors": extra or {}}}


# (class, the daemon's answer, Retry-After header, what the error must carry)
CASES = [
    (NotFound, answer(404, "UNKNOWN_SITE", "unknown site `nope`"), None, {}),
    (NotFound, answer(404, "ACCOUNT_NOT_FOUND", "no account `bob` for site `s`"), None, {}),
    (Unauthorized, answer(401, "UNAUTHORIZED", "a bearer token is required"), None, {}),
    (Forbidden, answer(403, "FORBIDDEN", "a client token may only use /tokens/*"), None, {}),
    (SiteUnavailable, answer(503, "SITE_UNAVAILABLE", "site `s` is unavailable"), "42", {"retry_after": 42.0}),
    (NoAvailableAccount, answer(503, "NO_AVAILABLE_ACCOUNT", "no usable account"), "17", {"retry_after": 17.0}),
    (BudgetExhausted, answer(429, "LOGIN_BUDGET_EXHAUSTED", "login budget spent"), "1800", {"retry_after": 1800.0}),
    (QueueFull, answer(429, "QUEUE_FULL", "too many acquisitions wait"), None, {"retry_after": None}),
    (Timeout, answer(504, "TIMEOUT", "the login took longer than 30 s"), None, {}),
    (
        AcquisitionFailed,
        answer(502, "TOKEN_ACQUISITION_FAILED", "every login failed", {"error_type": "credential_error"}),
        None,
        {"error_type": "credential_error"},
    ),
    (
        AcquisitionFailed,
        answer(502, "TOKEN_ACQUISITION_FAILED", "every login failed", {"error_type": "captcha_error"}),
        None,
        {"error_type": "captcha_error"},
    ),
    (ShuttingDown, answer(503, "SHUTTING_DOWN", "tokend is stopping"), None, {}),
]


def client_answering(status: int, body: Any, retry_after: Optional[str]) -> Client:
    def reply(request: httpx.Request) -> httpx.Response:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return httpx.Response(status, json=body, headers=headers)

    client = Client("http://tokend.test")
    client._http = httpx.Client(
        base_url="http://tokend.test", transport=httpx.MockTransport(reply), trust_env=False
    )
    return client


@pytest.mark.parametrize(
    "cls, given, retry_after, carries",
    CASES,
    ids=[f"{c[0].__name__}-{c[1]['body']['code']}" for c in CASES],
)
def test_each_answer_raises_its_class(
    cls: Type[TokendError], given: Dict[str, Any], retry_after: Optional[str], carries: Dict[str, Any]
) -> None:
    body = given["body"]
    with client_answering(given["status"], body, retry_after) as tokend:
        with pytest.raises(TokendError) as raised:
            tokend.acquire("s")
    error = raised.value
    assert type(error) is cls, f"{body['code']} became {type(error).__name__}"
    assert (error.code, error.status, error.message) == (body["code"], given["status"], body["message"])
    assert error.data == body["errors"]
    for name, value in carries.items():
        assert getattr(error, name) == value, name
    # The same mapping, called directly.
    direct = errors.from_answer(given["status"], body, retry_after)
    assert type(direct) is cls and direct.retry_after == error.retry_after


@pytest.mark.parametrize(
    "status, cls",
    [(401, Unauthorized), (403, Forbidden), (404, NotFound), (429, QueueFull), (502, AcquisitionFailed), (504, Timeout)],
)
def test_an_answer_without_a_code_is_typed_by_its_status(status: int, cls: Type[TokendError]) -> None:
    # A proxy in front of tokend, say: text, no JSON.
    error = errors.from_answer(status, "<html>bad gateway</html>", None)
    assert type(error) is cls and error.code is None and "bad gateway" in error.message


def test_a_client_timeout_while_a_captcha_waits_is_captcha_pending() -> None:
    pending = {
        "success": True,
        "data": {
            "captchas": [
                {"id": "c-1", "site_name": "s", "account": "alice", "prompt": "输入验证码"},
                {"id": "c-2", "site_name": "other", "account": "alice", "prompt": "not ours"},
            ]
        },
    }

    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tokens/acquire"):
            raise httpx.ReadTimeout("no answer in time", request=request)
        return httpx.Response(200, content=json.dumps(pending).encode())

    tokend = Client("http://tokend.test")
    tokend._http = httpx.Client(base_url="http://tokend.test", transport=httpx.MockTransport(reply))
    with tokend:
        with pytest.raises(CaptchaPending) as raised:
            tokend.acquire("s", account="alice")
        error = raised.value
        assert isinstance(error, Timeout) and error.code == "CAPTCHA_PENDING"
        assert [c["id"] for c in error.captchas] == ["c-1"]

        # Without a pending captcha of that site, the client's timeout stays a Timeout.
        pending["data"]["captchas"] = pending["data"]["captchas"][1:]
        with pytest.raises(Timeout) as raised:
            tokend.acquire("s", account="alice")
        assert type(raised.value) is Timeout


def test_both_accounts_checked_out_refuses_acquire_with_no_available_account(daemon: Daemon) -> None:
    with Client(daemon.url) as tokend:
        with tokend.checkout("portal", lease_seconds=30, job="a"), tokend.checkout(
            "portal", lease_seconds=30, job="b"
        ):
            with pytest.raises(NoAvailableAccount) as raised:
                tokend.acquire("portal")
    error = raised.value
    assert (error.code, error.status) == ("NO_AVAILABLE_ACCOUNT", 503)
    assert error.retry_after is not None and 1 <= error.retry_after <= 30
